"""Metric evaluation of generated samples. The metric vocabulary the reports use lives in
``bench.vocab`` (torch-free); ``MetricVocabulary`` and ``metric_vocabulary`` are re-exported."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.config import EvalConfig, curve_samples
from bench.couplings import Coupling
from bench.datasets.base import DataBundle
from bench.methods.base import Method
from bench.metrics.base import MetricContext
from bench.registry import METRICS
from bench.results import RunRecord
from bench.sampling import Timing, generate, time_sampling
from bench.seeding import Streams
from bench.vocab import PLUGIN_KEY_RANK, MetricVocabulary, metric_vocabulary  # noqa: F401


def metric_names(kind: str, wanted: tuple[str, ...]) -> list[str]:
    """Registered metrics that apply to data ``kind`` (when ``wanted`` is empty: all of them but
    the opt-in ones registered with ``default=False``, e.g. Inception FID)."""
    names = (METRICS.match(list(wanted)) if wanted else
             [n for n in METRICS.names() if METRICS.entry(n).meta.get("default", True)])
    ok = [n for n in names if kind in METRICS.entry(n).meta.get("kinds", ())]
    if wanted:
        bad = [n for n in names if n not in ok]
        if bad:
            raise ValueError(f"metric(s) {', '.join(bad)} do not apply to {kind} data")
    return ok


def compute_metrics(x: torch.Tensor, ref: torch.Tensor, kind: str, cfg: EvalConfig,
                    gen: torch.Generator, dataset: str, data: DataBundle | None = None,
                    device: torch.device | None = None,
                    info: dict | None = None) -> dict[str, float]:
    """Every applicable metric of samples ``x`` against ``ref``; what the metrics say about how
    they were computed (extractor ids, sample counts) goes into ``info``."""
    ctx = MetricContext(cfg, gen, dataset, data, device or torch.device("cpu"),
                        {} if info is None else info)
    out: dict[str, float] = {}
    for name in metric_names(kind, cfg.metrics):
        out.update(METRICS.get(name)(x, ref, ctx))
    return out


@dataclass
class Samples:
    """A method's evaluation samples [n, *shape], their counted NFE and the sampling time."""

    x: torch.Tensor
    nfe: int
    timing: Timing

    def into(self, rec: RunRecord) -> None:
        """Write the counted NFE and the sampling time into ``rec``."""
        rec.nfe, rec.timing_batch = self.nfe, self.timing.batch
        rec.sample_ms_per_1k, rec.sample_ms_spread = self.timing.ms_per_1k, self.timing.spread


def draw_samples(method: Method, data: DataBundle, cfg: EvalConfig, seed: int,
                 device: torch.device,
                 on_batch: Callable[[int], None] | None = None) -> Samples:
    """``cfg.n_samples`` samples from the run seed's ``eval`` noise (the same noise for every
    method of a seed, drawn per sample so the batch size changes nothing), then the timing
    batch from the same stream."""
    gens = Streams(seed, device)
    x0 = data.source(cfg.n_samples, gens["eval"])
    x, nfe = generate(method, x0, cfg.batch_size, on_batch=on_batch)
    if not torch.isfinite(x).all():
        raise FloatingPointError("generated samples contain NaN or inf")
    timing = time_sampling(method, data.source(cfg.timing_batch, gens["eval"]),
                           cfg.timing_repeats)
    return Samples(x, nfe, timing)


def reference(data: DataBundle, cfg: EvalConfig) -> torch.Tensor:
    """The split samples are scored against (``eval.reference``)."""
    return data.train if cfg.reference == "train" else data.eval


def score(x: torch.Tensor, data: DataBundle, cfg: EvalConfig, seed: int,
          device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
    """Every applicable metric of samples ``x`` [n, *shape] against the held-out data, and what
    the record should say about how they were computed. The metrics' random subsamples come
    from the run seed's ``metrics`` stream, so every method of a seed is scored on the same
    reference points."""
    gen = Streams(seed, "cpu")["metrics"]
    ref = reference(data, cfg)
    info: dict[str, Any] = {"n_samples": int(x.shape[0]), "n_reference": int(ref.shape[0]),
                            "reference": data.scored_split(cfg.reference)}
    if data.kind == "points":
        info.update({"w2_samples": cfg.w2_samples, "features": "raw coordinates"})
    metrics = compute_metrics(x.cpu(), ref.cpu(), data.kind, cfg, gen, data.name,
                              data=data, device=device, info=info)
    return metrics, info


def bank_gap(method: Method, data: DataBundle, cfg: EvalConfig, seed: int,
             device: torch.device, fresh_x: torch.Tensor,
             metrics: dict[str, float]) -> dict[str, Any]:
    """The headline metric of samples drawn from the method's own noise bank (the noise it
    was trained on), next to its value on fresh noise; {} for methods without a bank. The bank
    entries come from the seed's ``bank`` stream, ``eval.n_samples`` of them when the bank
    holds that many; on fewer, the fresh side is scored again on as many of its samples (the
    metrics are biased by the sample count). A failure here is recorded in the result
    (``error``) and fails nothing else."""
    coupling = method.coupling
    metric = metric_vocabulary().headline_of(metrics)
    if coupling is None or not coupling.has_bank or not cfg.bank_gap or metric is None:
        return {}
    try:
        x0 = coupling.bank_noise(cfg.n_samples, Streams(seed, device)["bank"])
        x, _ = generate(method, x0, cfg.batch_size)
        name = next(e.name for e in METRICS.entries() if metric in e.meta.get("outputs", {}))
        ref = reference(data, cfg).cpu()

        def one(samples: torch.Tensor) -> float:
            ctx = MetricContext(cfg, Streams(seed, "cpu")["metrics"], data.name, data, device,
                                {})
            return METRICS.get(name)(samples.cpu(), ref, ctx)[metric]

        n = int(x0.shape[0])
        fresh = metrics[metric] if n == fresh_x.shape[0] else one(fresh_x[:n])
        return {"metric": metric, "fresh": fresh, "bank": one(x), "n": n}
    except Exception as err:  # noqa: BLE001  (the run's own scores stand)
        return {"metric": metric, "error": f"{type(err).__name__}: {err}"}


def curve_metric_names(kind: str, cfg: EvalConfig) -> list[str]:
    """``eval.curve_metrics``, or the metric that produces the data kind's headline output
    followed by the run's memorisation metrics (those measured against the training set, e.g.
    ``copy``: a nearest-neighbour search, cheap beside sampling), so that a learning curve
    shows when a model starts to reproduce its training items."""
    if cfg.curve_metrics:
        return metric_names(kind, cfg.curve_metrics)
    vocab = metric_vocabulary()
    names = metric_names(kind, cfg.metrics)
    outputs = {o: n for n in names for o in METRICS.entry(n).meta.get("outputs", {})}
    head = vocab.headline_of(outputs)
    first = [outputs[head]] if head is not None else names[:1]
    return first + [n for n in names
                    if METRICS.entry(n).meta.get("against_train") and n not in first]


def curve_scores(methods: dict[str, Method], data: DataBundle, cfg: EvalConfig, seed: int,
                 device: torch.device) -> tuple[dict[str, dict[str, float]], int]:
    """Each method's curve metrics on its first ``eval.curve_samples`` samples of the final
    score's noise (the seed's ``eval`` stream); returns them and the sample count."""
    n, ccfg = _curve_eval(data, cfg)
    x0 = data.source(cfg.n_samples, Streams(seed, device)["eval"])[:n]
    return _score_each(methods, x0, data, cfg, ccfg, seed, device), n


def curve_bank_scores(methods: dict[str, Method], coupling: Coupling | None, data: DataBundle,
                      cfg: EvalConfig, seed: int, device: torch.device
                      ) -> dict[str, dict[str, float]]:
    """The bank gap at a curve point: each method's curve metrics on as many samples of the
    noise it was trained on (``eval.curve_samples`` entries of the bank, from the seed's
    ``bank`` stream), scored exactly as the fresh side is; {} for a coupling without a bank or
    with ``eval.bank_gap`` off."""
    if coupling is None or not coupling.has_bank or not cfg.bank_gap:
        return {}
    n, ccfg = _curve_eval(data, cfg)
    x0 = coupling.bank_noise(n, Streams(seed, device)["bank"])
    return _score_each(methods, x0, data, cfg, ccfg, seed, device)


def _score_each(methods: dict[str, Method], x0: torch.Tensor, data: DataBundle,
                cfg: EvalConfig, ccfg: EvalConfig, seed: int, device: torch.device
                ) -> dict[str, dict[str, float]]:
    """Each method's samples of noise ``x0`` scored with a curve point's settings ``ccfg``."""
    out = {}
    for name, method in methods.items():
        x, _ = generate(method, x0, cfg.batch_size)
        out[name] = compute_metrics(x.cpu(), reference(data, cfg).cpu(), data.kind, ccfg,
                                    Streams(seed, "cpu")["metrics"], data.name, data=data,
                                    device=device)
    return out


def _curve_eval(data: DataBundle, cfg: EvalConfig) -> tuple[int, EvalConfig]:
    """A curve point's sample count and the evaluation settings it is scored with."""
    n = curve_samples(cfg)
    return n, dataclasses.replace(cfg, metrics=tuple(curve_metric_names(data.kind, cfg)),
                                  w2_samples=min(cfg.w2_samples, n),
                                  kid_subset=min(cfg.kid_subset, n))


def curve_floor(data: DataBundle, cfg: EvalConfig, seed: int,
                device: torch.device) -> dict[str, Any]:
    """Held-out data scored exactly as a curve point is (its first ``eval.curve_samples``
    points, the curve's metrics and settings): what a perfect generator reads at that sample
    count (for a biased distance such as W2 or FD, above the full sample's floor). A failure
    is recorded in place of the metrics; the floor record's own scores stand."""
    assert data.floor is not None
    n, ccfg = _curve_eval(data, cfg)
    try:
        if data.floor.shape[0] < n:
            raise ValueError(f"{data.floor.shape[0]} held-out points, fewer than the "
                             f"{n} a curve point is scored on (raise data.n_eval)")
        metrics = compute_metrics(data.floor[:n].cpu(), reference(data, cfg).cpu(), data.kind,
                                  ccfg, Streams(seed, "cpu")["metrics"], data.name, data=data,
                                  device=device)
        return {"samples": n, "metrics": metrics}
    except Exception as err:  # noqa: BLE001  (the floor's own scores stand)
        return {"samples": n, "error": f"{type(err).__name__}: {err}"}
