"""Built-in datasets (imported explicitly so registration never depends on folder scans)."""

from bench.datasets import images, toy2d  # noqa: F401
