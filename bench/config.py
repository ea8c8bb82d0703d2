"""Frozen dataclass configs: defaults <- YAML <- CLI flags <- ``--set key=value``.

Unknown keys raise with the allowed keys; the resolved config is what gets hashed and stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.paths import KINDS
from bench.registry import SECTIONS
from bench.vocab import REFERENCE_METHOD, SOLVER_CHOICES, SOURCES, choices, ema_decay


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the file and key."""


#: field metadata: the key changes no number of a run, so it stays out of the run's hash
#: (``field(default=..., metadata=UNHASHED)``)
UNHASHED = {"hash": False}
#: field metadata: the key enters the hash only when it differs from its default (a setting
#: added after runs were recorded: adding it never orphans their records)
HASHED_IF_SET = {"hash": "if-set"}


@dataclass(frozen=True)
class DataConfig:
    name: str = "moons"
    #: source (noise) distribution for 2-D data: ``gaussian`` or ``8gmm``
    source: str = "gaussian"
    #: training points: generated from the run's seed on 2-D data (a finite set; online OT keeps
    #: one noise each); on images the first n of the training split (0 = all of it)
    n_train: int = 20000
    #: held-out evaluation points (fixed across seeds); on images at most the eval split
    n_eval: int = 10000
    #: folder holding file-backed datasets (MNIST, CIFAR-10)
    root: str | None = None
    #: allow torchvision to download missing files (off by default: offline-safe)
    download: bool = False
    #: verify CIFAR-10's md5 checksums (torchvision's check); off only for generated test folders
    checksum: bool = True
    #: hyperparameter selection: hold back the last n items of the training split (after
    #: ``n_train``), train on the rest and score against the held-back n instead of the eval
    #: split, which is then never looked at (0 = off: score against the eval split)
    validation: int = field(default=0, metadata=HASHED_IF_SET)


@dataclass(frozen=True)
class NetConfig:
    #: width of the MLP used on 2-D data
    hidden: int = 256
    #: number of hidden layers
    depth: int = 3
    #: sinusoidal features per time input
    time_features: int = 16
    #: UNet preset for images (bench/nets/unet.py: xs, s, m, cifar); ``auto`` = s
    unet: str = "auto"
    #: override the preset's base channel count (0 = preset)
    channels: int = 0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: linear warm-up steps, then cosine decay to ``lr * lr_final``
    warmup: int = 100
    lr_final: float = 0.05
    grad_clip: float = 1.0
    #: EMA decay of the weights used for sampling (0 disables EMA); the trainer warms it up as
    #: min(ema, (1 + n) / (10 + n)) at update n, so a decay above (1 + steps) / (10 + steps)
    #: is never reached (``ema_note``)
    ema: float = 0.999
    log_every: int = 50
    #: mixed precision for the forward/backward pass: ``off`` or ``bf16`` (autocast; meant
    #: for CUDA)
    amp: str = "off"
    #: torch.compile the network for training (the evaluated network is the plain module)
    compile: bool = False

    @property
    def ema_reached(self) -> float:
        """The EMA decay in force at the last step: ``ema`` or the warm-up's cap below it."""
        return ema_decay(self.ema, self.steps)


def ema_note(train: TrainConfig) -> str | None:
    """Why ``train.ema`` does not act as set, or None: with the (1 + n) / (10 + n) warm-up a
    decay above its value at the last step is never reached, and every setting above it
    trains the same run (measured: 0.995 and 0.999 at 1,200 steps, identical to every digit)."""
    if train.ema <= 0 or train.ema <= train.ema_reached:
        return None
    return (f"train.ema {train.ema:g} is never reached in {train.steps} steps: the EMA warm-up "
            f"(1 + n) / (10 + n) holds the decay at {train.ema_reached:.4f} or below, so any ema "
            f"above {train.ema_reached:.4f} trains exactly the same run")


@dataclass(frozen=True)
class CouplingConfig:
    #: exact assignment solver: ``pot``, ``scipy`` or ``auto`` (picked by dimension from the
    #: timings measured at run time for the batch size and dimension, see couplings)
    solver: str = "auto"
    #: OT couplings: points per exact assignment (0 = train.batch_size). Larger than the
    #: training batch: more data is drawn and the loss uses a random train.batch_size subset of
    #: the pairs; smaller: the batch is assigned in independent blocks. Only the coupling
    #: changes, never the gradient batch.
    batch_size: int = 0
    #: consistency diagnostic: probe noise points, and the moments (evenly spread over the
    #: second half of training) at which each probe's current partner is recorded, one draw
    #: per moment for every coupling (0 = off); see trainer.ConsistencyProbe
    probes: int = 64
    diagnostics: int = 8
    #: online and global OT: noise vectors kept per training point (LOOM-CFM's num_caches);
    #: each visit of a training point uses one cache drawn at random
    caches: int = 6
    #: global OT: the most training points it assigns exactly (one n x n assignment per
    #: cache); above it the run fails with the reason instead of falling back
    global_max: int = 10000
    #: minibatch OT: solve the next batch's assignment in a worker thread while the network
    #: trains on this one (same pairs, bit for bit): ``auto`` (on with CUDA, off on CPU,
    #: where the thread competes with the network for the cores), ``on``, ``off``. Not part
    #: of the config hash: it changes no number.
    overlap: str = field(default="auto", metadata=UNHASHED)


#: the splits samples can be scored against (eval.reference)
REFERENCES = ("eval", "train")
#: how the neural flow's loss draws t (methods.nfm.draw_t)
T_SAMPLINGS = ("uniform", "beta", "one")


@dataclass(frozen=True)
class PathConfig:
    #: ``linear`` | ``cosine`` | ``poly2`` | ``stochastic`` (bench/paths.py)
    kind: str = "linear"
    #: noise scale of the stochastic (Brownian bridge) path
    sigma: float = 0.5
    #: how the neural flow's loss draws t: ``uniform`` on [0, 1], ``beta`` (Beta(t_beta, 1):
    #: concentrated near 1) or ``one`` (t = 1 only: a map with F's residual form). Flow
    #: matching always draws t uniformly.
    t_sampling: str = "uniform"
    t_beta: float = 3.0


@dataclass(frozen=True)
class EvalConfig:
    #: generated samples for MMD / precision-recall / collapse metrics
    n_samples: int = 10000
    #: what the samples are compared with: ``eval`` (the held-out split, default) or
    #: ``train`` (the training split: CIFAR-10 FIDs in papers use the training set's
    #: statistics, as DDPM's, torchcfm's and MeanFlow's evaluation code do)
    reference: str = field(default="eval", metadata=HASHED_IF_SET)
    #: samples (each side) for exact W2
    w2_samples: int = 2000
    #: sampling batch size (results do not depend on it: noise is drawn per sample)
    batch_size: int = 5000
    #: batch and repeats for the sampling-time measurement (median after a warm-up)
    timing_batch: int = 10000
    timing_repeats: int = 5
    #: metric names; empty = every registered metric that applies to the dataset
    metrics: tuple[str, ...] = ()
    #: also score held-out data as if it were samples (the "floor" row of the report)
    floor: bool = True
    #: k of the k-NN precision/recall
    pr_k: int = 3
    #: generated samples stored with the run for plots (images: the first 64 make the grid)
    save_samples: int = 2000
    #: Inception weights for ``fid`` (torch-fidelity's 2015-12-05 file); None = torch hub cache
    inception_weights: str | None = None
    #: methods trained on a noise bank (online / global OT, reflow's pairs): also score the
    #: headline metric on samples from bank noise, to show memorisation of the bank
    bank_gap: bool = True
    #: learning curves: where the trainer scores the EMA model during training, as fractions of
    #: train.steps (values <= 1) or step numbers (> 1); empty = no curve. Not part of the
    #: config hash: it changes no final number (tested).
    curve: tuple[float, ...] = field(default=(), metadata=UNHASHED)
    #: samples per curve point (the first ones of the final score's noise); 0 = n_samples
    curve_samples: int = field(default=2000, metadata=UNHASHED)
    #: metrics scored at each curve point; empty = the metric of the data's headline output
    curve_metrics: tuple[str, ...] = field(default=(), metadata=UNHASHED)
    #: images: KID subset size (capped at the sample counts) and number of subsets
    kid_subset: int = 1000
    kid_subsets: int = 50


def curve_steps(cfg: EvalConfig, steps: int) -> set[int]:
    """The training steps of ``eval.curve`` (fractions of ``steps`` or step numbers)."""
    at = {round(c * steps) if c <= 1 else int(c) for c in cfg.curve}
    return {s for s in at if 1 <= s <= steps}


def curve_samples(cfg: EvalConfig) -> int:
    """How many samples a curve point is scored on (the first of the final score's noise)."""
    return min(cfg.curve_samples or cfg.n_samples, cfg.n_samples)


@dataclass(frozen=True)
class ReportConfig:
    """How ``bench report -c <this file>`` renders the suite's records (changes no number)."""

    #: the method every other one is compared with (paired comparisons, learning-curve gaps);
    #: ``bench report --reference`` overrides it
    reference: str = REFERENCE_METHOD


@dataclass(frozen=True)
class Config:
    name: str = field(default="custom", metadata=UNHASHED)
    methods: tuple[str, ...] = field(default=("otnfm-online", "fm-euler100"), metadata=UNHASHED)
    datasets: tuple[str, ...] = field(default=("moons",), metadata=UNHASHED)
    seeds: tuple[int, ...] = field(default=(0,), metadata=UNHASHED)
    #: ``auto`` = cuda when available, else cpu; or an explicit torch device string
    device: str = field(default="auto", metadata=UNHASHED)
    #: save the whole training state every this many steps (0 = only on Ctrl-C); an
    #: interrupted run resumes from it. Not part of the config hash: it changes no number.
    checkpoint_every: int = field(default=500, metadata=UNHASHED)
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    path: PathConfig = field(default_factory=PathConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig, metadata=UNHASHED)
    #: the component sections (``bench.registry.SECTIONS``: declared by the methods that own
    #: them) given in the config, as (name, dataclass) pairs; read one with ``section(name)``.
    #: In YAML, ``--set`` and records they sit at the top level like the built-in sections.
    sections: tuple[tuple[str, Any], ...] = ()

    def section(self, name: str) -> Any:
        """Component section ``name``: as configured, else its defaults."""
        cls = section_class(name)
        return next((v for k, v in self.sections if k == name), None) or cls()


#: the built-in sections every run config has (the component sections follow them)
BASE_SECTIONS = ("data", "net", "train", "coupling", "path", "eval")


def section_class(name: str) -> type:
    """The dataclass of component section ``name`` (unknown: ``ConfigError``)."""
    if name not in SECTIONS:
        raise ConfigError(f"no config section {name!r}; component sections: "
                          f"{', '.join(SECTIONS) or 'none'}")
    if name in {f.name for f in dataclasses.fields(Config)}:
        raise ConfigError(f"config section {name!r} clashes with a built-in key")
    return SECTIONS[name]


def config_sections() -> tuple[str, ...]:
    """Every section a run's resolved config (and a checkpoint) may keep: the built-in ones,
    then those the registered components declare."""
    return (*BASE_SECTIONS, *SECTIONS)


def hash_rules(cls: type, prefix: tuple[str, ...] = ()) -> tuple[list[tuple[str, ...]],
                                                                 dict[tuple[str, ...], Any]]:
    """From the fields' metadata of dataclass ``cls`` (recursively): the key paths kept out
    of a run's hash (``UNHASHED``), and those hashed only when they differ from their default
    (``HASHED_IF_SET``: settings added after runs were recorded, so adding one never orphans
    the records already written), with that default."""
    drop: list[tuple[str, ...]] = []
    late: dict[tuple[str, ...], Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        rule = f.metadata.get("hash", True)
        if rule is False:
            drop.append((*prefix, f.name))
        elif rule == "if-set":
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            late[(*prefix, f.name)] = json.loads(json.dumps(default))
        elif dataclasses.is_dataclass(hints[f.name]):
            d, lt = hash_rules(hints[f.name], (*prefix, f.name))
            drop += d
            late.update(lt)
    if cls is Config:
        for name, sec in SECTIONS.items():
            d, lt = hash_rules(sec, (name,))
            drop += d
            late.update(lt)
    return drop, late


def hashed(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (``to_dict`` of a ``Config``) without what ``hash_rules`` keeps out of a hash."""
    drop, late = hash_rules(Config)
    for path in drop:
        _pop(d, path)
    for path, default in late.items():
        if _get(d, path) == default:
            _pop(d, path)
    return d


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return dataclasses.MISSING
        d = d[k]
    return d


def _pop(d: dict[str, Any], path: tuple[str, ...]) -> None:
    for k in path[:-1]:
        d = d.get(k, {})
    if isinstance(d, dict):
        d.pop(path[-1], None)


def _allowed(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        (inner,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        elif not isinstance(value, list | tuple):
            value = [value]
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, inner, where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise naming the allowed ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if cls is Config and key in SECTIONS:  # a component's own section
            sections[key] = from_dict(section_class(key), value or {},
                                      f"{where}.{key}" if where else key)
            continue
        if key not in hints or (cls is Config and key == "sections"):
            allowed = [k for k in _allowed(cls) if not (cls is Config and k == "sections")]
            if cls is Config:
                allowed += list(SECTIONS)
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}"
                + (" (a plugin's section needs its --plugin)" if cls is Config else "")
            )
        tp = hints[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, sub)
        else:
            kwargs[key] = _coerce(value, tp, sub)
    if sections:
        kwargs["sections"] = tuple(sections.items())
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON. A ``Config``'s component sections
    sit at the top level, every registered one (its defaults where not configured)."""
    d = dataclasses.asdict(cfg)
    if isinstance(cfg, Config):
        d.pop("sections")
        for name in SECTIONS:
            d[name] = dataclasses.asdict(cfg.section(name))
    return json.loads(json.dumps(d))


def _set_nested(d: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {k!r} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.steps=2000", "eval.metrics=[w2,mmd]"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=2000")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot parse value: {err}") from None
        _set_nested(out, key.strip(), value, f"--set {item!r}")
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys")
    return data


def resolve(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
    preset: dict[str, Any] | None = None,
) -> Config:
    """defaults <- ``preset`` (a dataset's default recipe) <- YAML file (or ``raw``) <-
    ``overrides`` (CLI flags) <- ``--set`` items."""
    where = "config"
    raw = _merge(preset or {}, dict(raw or {}))
    if path is not None:
        raw = _merge(load_yaml(path), raw)
        where = str(path)
        if "sweep" in raw:
            raise ConfigError(f"{where}: has a 'sweep' grid; run it with `bench sweep --config`")
    if overrides:
        raw = _merge(raw, overrides)
    if sets:
        raw = _merge(raw, parse_set(sets))
        where = f"{where} (with --set)"
    cfg = from_dict(Config, raw, where)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Values a dataclass cannot check by type: choices and ranges (the message names the key
    and what it accepts)."""
    choice_keys = (
        ("coupling.solver", cfg.coupling.solver, SOLVER_CHOICES),
        ("coupling.overlap", cfg.coupling.overlap, ("auto", "on", "off")),
        ("data.source", cfg.data.source, SOURCES),
        ("path.kind", cfg.path.kind, KINDS),
        ("path.t_sampling", cfg.path.t_sampling, T_SAMPLINGS),
        ("train.amp", cfg.train.amp, ("off", "bf16")),
        ("eval.reference", cfg.eval.reference, REFERENCES),
    )
    for key, value, allowed in choice_keys:
        if value not in allowed:
            raise ConfigError(f"{key}: unknown value {value!r}; choices: {choices(allowed)}")
    ranges = (
        (not cfg.seeds, "seeds: at least one seed is needed"),
        (len(set(cfg.seeds)) != len(cfg.seeds),
         f"seeds: {', '.join(map(str, cfg.seeds))} repeats a seed; each seed is one run, give "
         "it once"),
        (any(s < 0 for s in cfg.seeds),
         f"seeds: {', '.join(map(str, cfg.seeds))}: seeds must be >= 0"),
        (not (math.isfinite(cfg.train.lr) and cfg.train.lr > 0),
         f"train.lr: {cfg.train.lr!r} is not a learning rate (a finite number > 0)"),
        (cfg.train.steps < 0 or cfg.train.batch_size < 1,
         "train.steps must be >= 0 and train.batch_size >= 1"),
        (cfg.coupling.batch_size < 0, "coupling.batch_size must be >= 0 (0 = train.batch_size)"),
        (cfg.coupling.caches < 1, "coupling.caches must be >= 1"),
        (cfg.path.t_beta <= 0, "path.t_beta must be > 0"),
        (cfg.data.validation < 0, "data.validation must be >= 0 (0 = score against the eval "
                                  "split)"),
        (cfg.data.validation > 0 and cfg.eval.reference != "eval",
         f"data.validation={cfg.data.validation} scores against the held-back training items; "
         f"it cannot be combined with eval.reference={cfg.eval.reference!r}"),
        (cfg.eval.n_samples < 1 or cfg.eval.batch_size < 1,
         "eval.n_samples and eval.batch_size must be >= 1"),
        (any(c <= 0 for c in cfg.eval.curve) or cfg.eval.curve_samples < 0,
         "eval.curve: fractions in (0, 1] or step numbers > 1; eval.curve_samples >= 0"),
        (cfg.eval.timing_repeats < 1, "eval.timing_repeats must be >= 1"),
    )
    for bad, message in ranges:
        if bad:
            raise ConfigError(message)
    for name in SECTIONS:  # a component section checks its own values (``check()``)
        check = getattr(cfg.section(name), "check", None)
        if check is not None:
            check()


SWEEP_LIST_KEYS = {"method": "methods", "seed": "seeds", "dataset": "datasets"}


def expand_sweep(path: str | Path, sets: list[str] | tuple[str, ...] = (),
                 overrides: dict[str, Any] | None = None,
                 ) -> list[tuple[dict[str, Any], Config]]:
    """A suite file with a ``sweep:`` mapping (dotted key -> list of values) -> one resolved
    config per grid point, with the point's assignments. ``method``, ``seed`` and ``dataset``
    lists become the suite's methods / seeds / datasets (the runner loops over those).
    Each point <- ``overrides`` (command-line flags) <- ``--set`` items, as in ``resolve``."""
    raw = load_yaml(path)
    grid = raw.pop("sweep", None)
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: a sweep file needs a non-empty 'sweep:' mapping of "
                          "key -> list of values")
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: sweep.{key} must be a non-empty list")
        if key in SWEEP_LIST_KEYS:
            raw[SWEEP_LIST_KEYS[key]] = values
        else:
            axes[key] = values
    points: list[tuple[dict[str, Any], Config]] = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        assign = dict(zip(axes, combo, strict=True))
        point = json.loads(json.dumps(raw))
        for key, value in assign.items():
            _set_nested(point, key, value, f"{path}: sweep.{key}")
        cfg = from_dict(Config, _merge(_merge(point, overrides or {}), parse_set(sets)),
                        f"{path} (sweep {assign})")
        validate(cfg)
        points.append((assign, cfg))
    return points


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short sha256 of a JSON-able object with sorted keys."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]
