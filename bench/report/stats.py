"""Aggregation of per-seed values: mean, std and formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof=1); 0 for one value

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        m = fmt_num(self.mean, digits)
        if self.n == 1:
            return f"{m} (1 seed)"
        return f"{m} ± {fmt_num(self.std, 2)}"


def summarize(values: list[float]) -> Summary:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return Summary(0, float("nan"), float("nan"))
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    if std <= 1e-9 * abs(mean):  # identical values up to float rounding: show a plain 0
        std = 0.0
    return Summary(n, mean, std)


def fmt_num(x: float, digits: int = 3) -> str:
    """Significant-digit formatting that stays readable for large and tiny numbers."""
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 10 ** digits or ax < 1e-3:
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"
