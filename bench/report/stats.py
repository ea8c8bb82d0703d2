"""Aggregation over seeds: mean, sample std, 95% t-interval, paired differences."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof=1); 0 for one value
    #: half-width of the 95% confidence interval of the mean (Student t, n - 1 dof); nan if n < 2
    ci95: float = float("nan")

    @property
    def lo(self) -> float:
        return self.mean - self.ci95

    @property
    def hi(self) -> float:
        return self.mean + self.ci95

    def fmt(self, digits: int = 3, ci: bool = False) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        m = fmt_num(self.mean, digits)
        if self.n == 1:
            return f"{m} (1 seed)"
        out = f"{m} ± {fmt_num(self.std, 2)}"
        if ci:
            out += f" [{fmt_num(self.lo, digits)}, {fmt_num(self.hi, digits)}]"
        return out


def t_halfwidth(std: float, n: int, level: float = 0.95) -> float:
    if n < 2:
        return float("nan")
    from scipy import stats  # scipy.stats takes a second to import: not at CLI start-up

    return float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)


def summarize(values: list[float | None]) -> Summary:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return Summary(0, float("nan"), float("nan"))
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    if std <= 1e-9 * abs(mean):  # identical values up to float rounding: show a plain 0
        std = 0.0
    return Summary(n, mean, std, t_halfwidth(std, n))


def paired(a: dict[int, float], b: dict[int, float]) -> Summary:
    """Mean of a[seed] - b[seed] over the seeds both have, with its 95% t-interval."""
    common = sorted(set(a) & set(b))
    return summarize([a[s] - b[s] for s in common])


def fmt_num(x: float, digits: int = 3) -> str:
    """Significant-digit formatting that stays readable for large and tiny numbers."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax >= 10 ** digits or ax < 1e-3:
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"
