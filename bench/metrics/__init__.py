"""Built-in metrics (explicit imports)."""

from bench.metrics import images, points  # noqa: F401
from bench.metrics.base import MetricContext  # noqa: F401
