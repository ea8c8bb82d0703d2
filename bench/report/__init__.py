"""Markdown reports rendered from run records alone (never trains)."""
