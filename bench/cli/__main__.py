"""``python -m bench.cli`` (what torchrun and worker tests start)."""

from bench.cli import app

app()
