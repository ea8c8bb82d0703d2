"""OT-NFM Bench."""
