"""A plan's wall-clock, estimated from measurements on this device: a central value and a
low-high range.

What is measured, per dataset (its data loaded once) and training recipe:

- training: ``WARMUP_STEPS`` untimed steps (one where the first already takes
  ``PROBE_SECONDS``), then up to ``MAX_TIMED_STEPS`` timed ones, until they add up to
  ``PROBE_SECONDS``, all at the configured batch through the training's own step
  (``Trainer.step``: AMP, compile, schedule and EMA as configured). The steps still to train
  are charged at the median step time; the range runs from the lower quartile to the upper
  quartile or the mean, where that is higher (a rare slow step at its measured rate). The first
  step's extra time (compilation, lazy set-up) is charged once per recipe.
- sampling: one network call (every time input) at the sampling batch (``eval.batch_size``;
  grown from 64 and stopped early where a call already takes ``FORWARD_SECONDS``), timed
  ``FORWARD_REPEATS`` times, per sample, times the NFE and the samples drawn: the evaluation
  samples, the sampling-time measurement (a warm-up and ``eval.timing_repeats`` calls on
  ``eval.timing_batch``), the bank-gap samples of a bank method and the learning-curve samples
  (``eval.curve``; bank noise too for a bank method).
- metrics: each metric but Inception FID is timed through its registered function on held-out
  data standing in for samples, every size scaled down together (samples, reference, the data
  splits a metric reads, ``eval.w2_samples``, ``eval.kid_subset``): from ``METRIC_POINTS``
  points the sizes double until a call takes ``METRIC_SECONDS`` more than the smallest size's
  (its overhead), or the full size is reached, or the probe would pass ``METRIC_BUDGET``. The
  rest beyond the overhead grows to the full size as the metric's work does
  (``GROWTH_EXPONENTS``: n^2 for pairwise work, n^2 to n^3 for W2's exact assignment, ...;
  the low and high exponents make the range), a metric without a known exponent by the one
  measured between the last two sizes. A metric that keeps work with the loaded data (e.g.
  the copy metric's held-out distances, files under ``$BENCH_CACHE``) is called again at each
  size: the second call is a scoring, the first one's extra is charged once per dataset and
  seed. Charged scorings: each run's, a bank method's bank gap (its headline
  metric), the data floor's (``eval.floor``) and every learning-curve point still to train,
  the floor's own curve point included. Inception FID (``fid``) is charged per image at the
  extractor's measured speed, the reference set once per dataset. The domain classifier of
  ``fd`` / ``classes`` is charged once per dataset while its file under
  ``$BENCH_CACHE/extractors`` does not exist: a few of its training steps, on one thread as it
  trains, times its step count. The probes run in a temporary ``$BENCH_CACHE`` with an
  untrained classifier of the same shape: nothing is trained, nothing is written to the cache.

Only the runs without an ok record count (a resumed suite skips the others), and given
``steps_done`` (the runner passes its checkpoint store's) only the steps still to train: none
where the recipe's checkpoint exists (another sampler of it is done), the rest where a saved
partial state will resume; learning-curve points behind the resumed step are not charged.

Left out: the training loop's work around the step (drawing batches, logging, the coupling's
consistency probes, checkpoint writes); an online-OT step is timed as one minibatch assignment
(building the whole bank is spared); global OT's one-off solve; a distilled method's pair
generation, and its teacher's training when the teacher is not planned; the floor of a
dataset and seed whose runs are all recorded; Inception reference features already cached
(charged anyway). An adaptive solver's NFE is counted on the untrained network. The range is
the spread measured in a few seconds: other work that loads the machine later in the run is
not in it (on a CPU busier than its cores, the estimate says so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.config import Config, EvalConfig, curve_samples, curve_steps
from bench.couplings import GlobalOT, Independent, MinibatchOT, OnlineOT
from bench.datasets.base import DataBundle, dataset_config, load_dataset
from bench.evaluate import curve_metric_names, metric_names, reference
from bench.methods.base import Batch, Method
from bench.metrics.base import MetricContext
from bench.metrics.extractors import (
    DOMAIN_BATCH,
    DomainCNN,
    domain_optimizer,
    domain_path,
    domain_step,
    domain_steps,
    from_uint8,
    one_thread,
    to_uint8,
)
from bench.metrics.inception import FAST_NAME, InceptionWeightsMissing
from bench.models import build_method
from bench.perf_fid import images_per_second
from bench.planner import Plan, RunSpec, by_recipe
from bench.registry import METHODS, METRICS
from bench.sampling import generate, sync
from bench.seeding import Streams
from bench.trainer import Trainer, batch_indices, training_net
from bench.vocab import metric_vocabulary

#: untimed training steps before the timed ones (the first compiles, with train.compile)
WARMUP_STEPS = 2
#: at most this many timed training steps per recipe ...
MAX_TIMED_STEPS = 8
#: ... and no more once the timed ones add up to this many seconds (at least one is timed)
PROBE_SECONDS = 1.5
#: the sampling probe's batch grows (x4 from 64) to the sampling batch, or until one network
#: call takes this long (a batch that large is not overhead-bound)
FORWARD_SECONDS = 0.5
FORWARD_REPEATS = 3
#: a metric probe starts at this many points (the larger of samples and reference; any size
#: at least METRIC_MIN_ROWS) and doubles until a call takes METRIC_SECONDS more than the
#: smallest size's call (its overhead) and grew plausibly (at most the highest exponent +
#: EXPONENT_MARGIN), or the full size is reached, or the next call would take the probe past
#: METRIC_BUDGET seconds (the warm-up call not counted)
METRIC_POINTS = 64
METRIC_MIN_ROWS = 32
METRIC_SECONDS = 0.3
METRIC_BUDGET = 4.0
#: a metric that keeps work with the data is called once per size, then METRIC_REPEATS times
#: more (the fastest of those is one scoring)
METRIC_REPEATS = 1
#: how the built-in metrics' time grows when every size grows together (samples, reference,
#: the data they read, eval.w2_samples, eval.kid_subset): exponents (low, central, high).
#: Pairwise work is n^2; W2's exact assignment (network simplex) measured n^2.2 to n^3 here;
#: the domain FD is one feature pass plus pairwise KID and precision/recall (``_exponents``;
#: other metrics: the exponent measured between the last two probe sizes)
GROWTH_EXPONENTS = {"w2": (2.0, 2.5, 3.0), "mmd": (2.0, 2.0, 2.0), "prc": (2.0, 2.0, 2.0),
                    "copy": (2.0, 2.0, 2.0), "collapse": (1.0, 1.0, 1.0),
                    "classes": (1.0, 1.0, 1.0), "fd": (1.0, 1.5, 2.0)}
EXPONENT_BOUNDS = (1.0, 3.0)
EXPONENT_MARGIN = 0.25
#: metrics that read the dataset's domain classifier (trained once, then cached on disk)
DOMAIN_METRICS = ("fd", "classes")
#: the metric charged per Inception image instead of probed
FID = "fid"
#: the key under which the image metrics keep the domain classifier with the loaded data
DOMAIN_MEMO = "domain_extractor"


@dataclass(frozen=True)
class Span:
    """Seconds: a central value and a range around it."""

    low: float = 0.0
    mid: float = 0.0
    high: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Span:
        """Measured times: the median, from the lower quartile to the upper quartile or the
        mean where that is higher (the mean keeps the rare slow one at its measured rate)."""
        v = list(values)
        if len(v) == 1:
            return cls.exact(v[0])
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
        return cls(q1, statistics.median(v), max(q3, statistics.fmean(v)))

    def __add__(self, other: Span) -> Span:
        return Span(self.low + other.low, self.mid + other.mid, self.high + other.high)

    def __mul__(self, k: float) -> Span:
        return Span(self.low * k, self.mid * k, self.high * k)

    __rmul__ = __mul__

    @classmethod
    def exact(cls, seconds: float) -> Span:
        return cls(seconds, seconds, seconds)

    def __str__(self) -> str:
        return f"{_short(self.mid)} ({_short(self.low)}–{_short(self.high)})"


@dataclass
class Estimate:
    train: Span = Span()
    sample: Span = Span()
    metric: Span = Span()
    #: training, one line per recipe
    lines: list[str] = field(default_factory=list)
    #: sampling and metrics, a few lines per dataset
    eval_lines: list[str] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return self.train.mid

    @property
    def sample_seconds(self) -> float:
        return self.sample.mid

    @property
    def metric_seconds(self) -> float:
        return self.metric.mid

    @property
    def span(self) -> Span:
        return self.train + self.sample + self.metric

    @property
    def total(self) -> float:
        return self.span.mid

    @property
    def low(self) -> float:
        return self.span.low

    @property
    def high(self) -> float:
        return self.span.high


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def human_range(low: float, high: float) -> str:
    """``7–12 min``, ``50 s – 2 min``: the unit once where both ends share it."""
    a, b = human(low), human(high)
    if a == b:
        return a
    (va, ua), (vb, ub) = a.split(" "), b.split(" ")
    return f"{va}–{vb} {ub}" if ua == ub else f"{a} – {b}"


def _short(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 90 else human(seconds)


# -- training -------------------------------------------------------------------------------


@dataclass
class StepTimes:
    """A recipe's probe: the first (warm-up) step and the timed steps, in seconds."""

    first: float
    timed: list[float]

    @property
    def per_step(self) -> Span:
        return Span.of(self.timed)

    @property
    def start(self) -> float:
        """What the first step takes beyond a later one (compilation, lazy set-up)."""
        return max(0.0, self.first - self.per_step.mid)


def _step_times(name: str, data: DataBundle, cfg: Config, device: torch.device) -> StepTimes:
    """Training steps of ``name`` at the configured batch (module docstring). A method built
    on a teacher is timed as its teacher's recipe (the same network and loss)."""
    b = min(cfg.train.batch_size, data.train.shape[0])
    teacher = METHODS.entry(name).meta.get("teacher")
    method = build_method(teacher or name, data, cfg, device, 0)
    if isinstance(method.coupling, GlobalOT):  # its steps are lookups; its one-off solve is
        method.coupling = Independent(data.source)  # not timed here (see the docstring)
    elif isinstance(method.coupling, OnlineOT):  # a step costs one batch assignment, like
        method.coupling = MinibatchOT(data.source, cfg.coupling.solver)  # minibatch OT's:
        # timing it so spares building the whole bank (gigabytes on CIFAR-10)
    gens = Streams(0, device)
    # this process alone (rank 0 under torchrun); attaches an EMA teacher if wanted
    trainer = Trainer(method, cfg.train, device.type, distributed=False)
    bs = method.coupling.data_batch_size(b) if method.coupling is not None else b
    batches = batch_indices(data.train.shape[0], bs, gens["data"], device)

    def step() -> float:
        idx = next(batches)
        sync(device)
        start = time.perf_counter()
        trainer.step(Batch(data.train[idx], idx), gens)
        sync(device)
        return time.perf_counter() - start

    try:
        with training_net(method, cfg.train, distributed=False):
            first = step()
            for _ in range(WARMUP_STEPS - 1 if first < PROBE_SECONDS else 0):
                step()
            timed: list[float] = []
            while len(timed) < MAX_TIMED_STEPS and sum(timed) < PROBE_SECONDS:
                timed.append(step())
    finally:
        if method.coupling is not None:
            method.coupling.close()
    return StepTimes(first, timed)


# -- sampling -------------------------------------------------------------------------------


@torch.no_grad()
def _forward_span(method: Method, data: DataBundle, batch: int, device: torch.device) -> Span:
    """Seconds per sample of one network call with every time input, at ``batch`` samples (or
    fewer, where a smaller batch already takes FORWARD_SECONDS per call)."""
    method.eval()
    gen = Streams(0, device)["eval"]

    def call(x0: torch.Tensor) -> float:
        times = [torch.full((x0.shape[0],), 0.5, device=device)] * method.net.time_inputs
        sync(device)
        start = time.perf_counter()
        method.net(x0, *times)
        sync(device)
        return time.perf_counter() - start

    b = min(batch, 64)
    while True:
        x0 = data.source(b, gen).to(device)
        if call(x0) >= FORWARD_SECONDS or b >= batch:  # the first call at a size: a warm-up
            break
        b = min(batch, 4 * b)
    return Span.of(call(x0) / b for _ in range(FORWARD_REPEATS))


# -- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricCost:
    """A metric's seconds per scoring, and once per data load (work it keeps with the data)."""

    score: Span
    once: Span


def _rows(t: torch.Tensor | None, f: float) -> torch.Tensor | None:
    return None if t is None else t[: _size(t.shape[0], f)]


def _size(n: int, f: float) -> int:
    """``n`` scaled by ``f``, at least METRIC_MIN_ROWS (or all ``n``)."""
    return n if f >= 1 else min(n, max(METRIC_MIN_ROWS, round(n * f)))


@contextlib.contextmanager
def _bench_cache(path: Path) -> Iterator[None]:
    """``$BENCH_CACHE`` pointed at ``path`` for the block (the metric probes' files)."""
    old = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BENCH_CACHE", None)
        else:
            os.environ["BENCH_CACHE"] = old


class MetricProbe:
    """Times metrics on scaled-down data (module docstring), in a temporary ``$BENCH_CACHE``;
    each (metric, sample count, settings) once."""

    def __init__(self, data: DataBundle, device: torch.device, folder: Path) -> None:
        self.data, self.device, self.folder = data, device, folder
        self.costs: dict[tuple[str, int, EvalConfig], MetricCost | None] = {}
        self.failed: dict[str, str] = {}
        self.domain: Path | None = None
        if data.kind == "images" and data.num_classes:  # same network, untrained
            self.domain = folder / "domain-probe.pt"
            with torch.random.fork_rng(devices=[]):
                net = DomainCNN(data.shape[0], data.num_classes)
            torch.save({"channels": net.channels, "classes": net.classes,
                        "state": net.state_dict()}, self.domain)

    def cost(self, name: str, n: int, cfg: EvalConfig) -> MetricCost | None:
        """``name`` scored on ``n`` samples with ``cfg``; None where the probe failed (the
        reason in ``failed``)."""
        key = (name, n, dataclasses.replace(cfg, metrics=()))  # the settings it reads
        if key not in self.costs:
            try:
                self.costs[key] = self._probe(name, n, cfg)
            except Exception as err:  # noqa: BLE001  (the run will record its own failure)
                self.failed[name] = f"{type(err).__name__}: {err}"
                self.costs[key] = None
        return self.costs[key]

    def _scaled(self, f: float) -> DataBundle:
        d = self.data
        probe = dataclasses.replace(
            d, train=_rows(d.train, f), eval=_rows(d.eval, f), floor=_rows(d.floor, f),
            train_labels=_rows(d.train_labels, f), eval_labels=_rows(d.eval_labels, f), memo={})
        if self.domain is not None:
            probe.memo[DOMAIN_MEMO] = (str(self.domain), {"id": "estimate-probe",
                                                          "eval_accuracy": None})
        return probe

    def _call(self, name: str, n: int, cfg: EvalConfig, f: float,
              again: bool = True) -> tuple[float, float, bool]:
        """Calls at scale ``f`` on fresh data: the first call's seconds, and with ``again``
        the fastest of METRIC_REPEATS more (calls that find the data's kept work done;
        without, the first call's again), and whether the first call left work behind."""
        data = self._scaled(f)
        scfg = dataclasses.replace(cfg, w2_samples=_size(cfg.w2_samples, f),
                                   kid_subset=_size(cfg.kid_subset, f))
        pool = self.data.floor if self.data.floor is not None else self.data.eval
        k = _size(n, f)
        x = pool[torch.arange(k, device=pool.device) % pool.shape[0]].cpu()
        ref = reference(data, scfg).cpu()
        fn = METRICS.get(name)
        memo = set(data.memo)

        def once() -> float:
            ctx = MetricContext(scfg, torch.Generator().manual_seed(0), data.name, data,
                                self.device, {})
            sync(self.device)
            start = time.perf_counter()
            fn(x, ref, ctx)
            sync(self.device)
            return time.perf_counter() - start

        files = set(self.folder.rglob("*"))
        first = once()
        kept = set(data.memo) != memo or set(self.folder.rglob("*")) != files
        return first, min(once() for _ in range(METRIC_REPEATS)) if again else first, kept

    def _probe(self, name: str, n: int, cfg: EvalConfig) -> MetricCost:
        m = reference(self.data, cfg).shape[0]
        f = min(1.0, METRIC_POINTS / max(n, m))
        known = GROWTH_EXPONENTS.get(name)
        with _bench_cache(self.folder):
            # a warm-up (imports, lazy set-up), which tells whether the metric keeps work
            # with the data; one that does not is called once per size
            keeps = self._call(name, n, cfg, f, again=False)[2]
            start = time.perf_counter()
            seen: list[tuple[float, float, float]] = []  # (scale, one scoring, kept work)
            while True:
                first, again, kept = self._call(name, n, cfg, f, keeps)
                seen.append((f, again, max(0.0, first - again) if kept else 0.0))
                grew = _growth(seen)
                if f >= 1 or time.perf_counter() - start + 4 * again > METRIC_BUDGET or (
                        again - seen[0][1] >= METRIC_SECONDS and grew is not None
                        and grew <= (known or EXPONENT_BOUNDS)[-1] + EXPONENT_MARGIN):
                    break
                f = min(1.0, 2 * f)
        f, score, once = seen[-1]
        if f >= 1:
            return MetricCost(Span.exact(score), Span.exact(once))
        exps = _exponents(known, _growth(seen))
        base = min(score, seen[0][1])  # the smallest size's time: overhead that does not grow

        def grown(t: float, over: float) -> Span:
            return Span(*(over + (t - over) / f ** e for e in exps))

        return MetricCost(grown(score, base), grown(once, 0.0))


def _growth(seen: list[tuple[float, float, float]]) -> float | None:
    """The exponent of the time beyond the smallest size's (the overhead) between the last two
    probe sizes; None before there are two sizes with time beyond it."""
    if len(seen) < 3:
        return None
    base, (f0, t0, _), (f1, t1, _) = seen[0][1], seen[-2], seen[-1]
    if t0 <= base or t1 <= base:
        return None
    return math.log((t1 - base) / (t0 - base)) / math.log(f1 / f0)


def _exponents(known: tuple[float, float, float] | None,
               grew: float | None) -> tuple[float, float, float]:
    """(low, central, high) growth exponents. A known one's centre is lowered to the measured
    growth, down to linear (a busy machine runs small calls in whole time slices: their time
    grows slower than their work, up to a size); the range spans both. Without a known one: the
    measured growth +- EXPONENT_MARGIN, or the whole EXPONENT_BOUNDS around 2."""
    lo, hi = EXPONENT_BOUNDS
    if known is None:
        if grew is None:
            return lo, 2.0, hi
        p = min(hi, max(lo, grew))
        return max(lo, p - EXPONENT_MARGIN), p, min(hi, p + EXPONENT_MARGIN)
    mid = known[1] if grew is None else min(known[1], max(lo, grew))
    return min(known[0], mid), mid, known[2]


@dataclass(frozen=True)
class Scoring:
    """A kind of scoring: ``n`` samples scored with the metrics of ``cfg``."""

    what: str
    n: int
    cfg: EvalConfig


def _domain_seconds(data: DataBundle) -> Span:
    """The domain classifier's training (``train_domain_classifier``): a few of its steps at
    its batch on one thread, as it trains, times its step count."""
    assert data.train_labels is not None
    with torch.random.fork_rng(devices=[]), one_thread():
        x = from_uint8(to_uint8(data.train[:DOMAIN_BATCH].cpu()), data.shape[0])
        y = data.train_labels[:DOMAIN_BATCH].cpu()
        net = DomainCNN(data.shape[0], data.num_classes)
        opt = domain_optimizer(net)
        times: list[float] = []
        for i in range(1 + MAX_TIMED_STEPS):  # the first is a warm-up
            start = time.perf_counter()
            domain_step(net, opt, x, y)
            if i:
                times.append(time.perf_counter() - start)
            if sum(times) >= PROBE_SECONDS / 2:
                break
    return Span.of(times) * domain_steps(data.train.shape[0])


# -- the plan -------------------------------------------------------------------------------


def estimate(plan: Plan, device: torch.device,
             done: set[tuple[str, str, int]] | frozenset = frozenset(),
             steps_done: Callable[[RunSpec, int], int] | None = None) -> Estimate:
    """The wall-clock of the plan's runs whose keys are not in ``done`` (runs that already
    have an ok record, which a resumed suite skips); a recipe with nothing left is not timed.
    ``steps_done(spec, steps)`` (e.g. ``CheckpointStore.steps_done``) says how many of a
    recipe's steps are trained already (a finished checkpoint or a partial state)."""
    est = Estimate()
    if skipped := sum(s.key in done for s in plan.runs()):
        est.lines.append(f"{skipped} run(s) already recorded are not counted")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if device.type == "cpu" and load > (cores or 1):
        est.eval_lines.append(f"the machine is busy (load average {load:.1f} on {cores} "
                              "cores): these timings, and the run's, depend on the other work")
    for dataset in plan.datasets:
        todo = [s for s in plan.runs(dataset) if s.key not in done]
        if todo:
            with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
                _dataset(plan, dataset, todo, device, done, steps_done, est, Path(tmp))
    return est


def _dataset(plan: Plan, dataset: str, todo: list[RunSpec], device: torch.device,
             done: set[tuple[str, str, int]] | frozenset,
             steps_done: Callable[[RunSpec, int], int] | None, est: Estimate,
             folder: Path) -> None:
    """One dataset's share of the estimate (its runs ``todo``), added to ``est``."""
    cfg, ecfg = plan.cfg, plan.cfg.eval
    data = load_dataset(cfg, dataset, cfg.seeds[0], device)
    dcfg = dataset_config(cfg, dataset)
    names = metric_names(data.kind, ecfg.metrics)
    full = Scoring("run", ecfg.n_samples, dataclasses.replace(ecfg, metrics=tuple(names)))
    outputs = {o: n for n in names for o in METRICS.entry(n).meta.get("outputs", {})}
    head = metric_vocabulary().headline_of(outputs)
    bank_score = (Scoring("bank gap", ecfg.n_samples, dataclasses.replace(
        ecfg, metrics=(outputs[head],))) if head is not None and ecfg.bank_gap else None)
    nc = curve_samples(ecfg)  # a curve point is scored as evaluate.curve_scores does
    curve = Scoring("curve point", nc, dataclasses.replace(
        ecfg, metrics=tuple(curve_metric_names(data.kind, ecfg)),
        w2_samples=min(ecfg.w2_samples, nc), kid_subset=min(ecfg.kid_subset, nc)))
    at = curve_steps(ecfg, cfg.train.steps)
    scorings: Counter[Scoring] = Counter()
    seeds = sorted({s.seed for s in todo})
    floors = [f for f in (plan.floor(dataset, s) for s in seeds) if f.key not in done]
    if ecfg.floor and floors and data.floor is not None:
        n = min(ecfg.n_samples, data.floor.shape[0])
        scorings[dataclasses.replace(full, what="floor", n=n)] += len(floors)
        scorings[curve] += len(floors) if at else 0
    sampling, evaluations = Span(), 0.0
    for specs in by_recipe(todo):  # one recipe, every seed it still has to train
        spec = specs[0]
        steps, n_seeds = cfg.train.steps, len({s.seed for s in specs})
        trained = {s.seed: steps_done(s, steps) if steps_done else 0 for s in specs}
        left = sum(steps - t for t in trained.values())
        what = f"{steps} steps × {n_seeds} seed(s)" + (
            f", {left} of {steps * n_seeds} left to train" if left < steps * n_seeds else "")
        if left:
            probe = _step_times(spec.method, data, dcfg, device)
            per = probe.per_step
            est.train += per * left + Span.exact(probe.start)
            est.lines.append(f"{dataset} · {spec.recipe}: {what} at {per.mid:.3g} s/step "
                             f"({per.low:.3g}–{per.high:.3g}, {len(probe.timed)} steps timed)")
        else:
            est.lines.append(f"{dataset} · {spec.recipe}: {what}")
        per_sample = _forward_span(build_method(spec.method, data, dcfg, device, 0), data,
                                   min(ecfg.batch_size, ecfg.n_samples), device)
        methods = {s.method: build_method(s.method, data, dcfg, device, 0).eval()
                   for s in specs}
        bank = any(m.coupling is not None and m.coupling.has_bank for m in methods.values())
        x0 = data.source(1, Streams(0, device)["eval"]).to(device)
        calls = 0.0  # network evaluations of one sample
        for s in specs:
            nfe = methods[s.method].nfe_hint()
            if nfe is None:  # adaptive: count one (untrained) sample's evaluations
                nfe = generate(methods[s.method], x0, 1)[1]
            # the evaluation samples and the sampling-time measurement (a warm-up + repeats)
            draws = ecfg.n_samples + (1 + ecfg.timing_repeats) * ecfg.timing_batch
            scorings[full] += 1
            if bank and bank_score is not None:  # the bank gap: samples from bank noise
                draws += ecfg.n_samples
                scorings[bank_score] += 1
            # learning-curve points still ahead of this seed's training (bank noise too)
            points = sum(step > trained[s.seed] for step in at) if trained[s.seed] < steps else 0
            points *= 2 if bank and ecfg.bank_gap else 1
            draws += points * nc
            scorings[curve] += points
            calls += draws * nfe
        sampling += per_sample * calls
        evaluations += calls
    est.sample += sampling
    est.eval_lines.append(f"{dataset} · sampling: {evaluations:.3g} network evaluations of one "
                          f"sample, {sampling}")
    est.metric += _metrics(data, ecfg, scorings, len(seeds), est, device, folder)


def _metrics(data: DataBundle, ecfg: EvalConfig, scorings: Counter[Scoring], seeds: int,
             est: Estimate, device: torch.device, folder: Path) -> Span:
    """The seconds of the scorings' metrics, the domain classifier's training and Inception
    FID on ``data`` (loaded once per seed in ``seeds``); what they are goes to ``est``."""
    probe = MetricProbe(data, device, folder)
    total, once, parts, fid_images = Span(), {}, [], 0
    each: dict[str, float] = {}  # a run's scoring, per metric
    for sc, count in scorings.items():
        if not count:
            continue
        per = Span()
        for name in sc.cfg.metrics:
            if name == FID:  # charged per image below
                fid_images += count * sc.n
            elif (cost := probe.cost(name, sc.n, sc.cfg)) is not None:
                per += cost.score
                if sc.what == "run":
                    each[name] = cost.score.mid
                if cost.once.mid > once.get(name, Span()).mid:
                    once[name] = cost.once
        total += per * count
        parts.append(f"{count} × {sc.what} ({sc.n} samples) at {_short(per.mid)}")
    kept = sum(once.values(), Span()) * seeds
    total += kept
    if parts:
        est.eval_lines.append(f"{data.name} · metrics: " + ", ".join(parts) + (
            f", once per seed {_short(kept.mid / seeds)}" if kept.mid > 0 else ""))
    if each:
        est.eval_lines.append(f"{data.name} · a run's metrics: " + ", ".join(
            f"{name} {_short(sec)}" for name, sec in each.items()))
    for name, reason in probe.failed.items():
        est.eval_lines.append(f"{data.name} · metric {name}: not estimated ({reason})")
    wanted = {n for sc, count in scorings.items() if count for n in sc.cfg.metrics}
    if (data.kind == "images" and wanted & set(DOMAIN_METRICS)
            and data.train_labels is not None and data.num_classes
            and not domain_path(data.name.split("@")[0], data.train,
                                data.train_labels).exists()):
        dom = _domain_seconds(data)
        total += dom
        est.eval_lines.append(f"{data.name} · domain classifier (not cached yet): "
                              f"{domain_steps(data.train.shape[0])} steps, {dom}")
    if fid_images:
        try:
            rate = images_per_second(to_uint8(data.eval[:8].cpu()), ecfg.inception_weights)
        except InceptionWeightsMissing:
            est.eval_lines.append("Inception FID: weights not found, its cost is not estimated")
        else:
            n_ref = data.train.shape[0] if ecfg.reference == "train" else data.eval.shape[0]
            images = fid_images + min(n_ref, 50_000)
            est.eval_lines.append(f"{data.name} · Inception FID ({FAST_NAME}): {images} images "
                                  f"at {rate:.3g} images/s")
            total += Span.exact(images / rate)
    return total
