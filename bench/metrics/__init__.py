"""Built-in metrics (explicit imports)."""

from bench.metrics import points  # noqa: F401
from bench.metrics.base import MetricContext  # noqa: F401
