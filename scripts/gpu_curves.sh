#!/usr/bin/env bash
# Learning curves on one GPU (issue 13), within a device lease of about 10 minutes:
#   1. mnist5k curves to 20,000 steps for the key methods, one process per recipe, all at once
#      on the one GPU (otnfm-online, otnfm-minibatch, fm with its Euler-4/10/100 readings,
#      loomcfm-euler1, otmap-online), into $OUT_DIR/curves-mnist5k, then their report;
#   2. the CIFAR-10 preset's training step in bf16, with and without torch.compile (median of
#      timed steps after warm-up), and the achieved FLOP/s against the GPU's bf16 peak.
# Outputs: $OUT_DIR (default results/gpu_curves); copy curves-mnist5k.md, compile.json and
# the report's figures to reports/gpu/ and commit them with this command line.
#
#   scripts/gpu_curves.sh                      # STEPS=20000 by default
#   STEPS=30000 PEAK_TFLOPS=989 scripts/gpu_curves.sh
#
# Needs the project importable (pip install -e . or PYTHONPATH=.) and a CUDA device.
set -euo pipefail
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-results/gpu_curves}
STEPS=${STEPS:-20000}
# dense bf16 peak of the card, for the utilisation figure (H200 SXM: 989 TFLOP/s)
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
BENCH="$PY -m bench.cli"
mkdir -p "$OUT_DIR"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"

t0=$(date +%s)
pids=()
for m in otnfm-online otnfm-minibatch fm-euler4,fm-euler10,fm-euler100 loomcfm-euler1 otmap-online; do
  $BENCH run --config configs/curves-mnist5k.yaml -m "$m" --device cuda \
    --set train.steps="$STEPS" --set train.amp=bf16 --set eval.curve_samples=1000 \
    --set "eval.curve=[0.02,0.05,0.1,0.2,0.35,0.5,0.75,1.0]" \
    --out "$OUT_DIR/curves-mnist5k" > "$OUT_DIR/curves-$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
$BENCH report "$OUT_DIR/curves-mnist5k" --out "$OUT_DIR/curves-mnist5k.md"
echo "mnist5k curves to $STEPS steps, 5 recipes at once: $(( $(date +%s) - t0 )) s"

PEAK_TFLOPS=$PEAK_TFLOPS OUT_DIR=$OUT_DIR $PY - <<'PY'
import json, os, statistics, time

import torch

import bench.builtins  # noqa: F401
from bench.config import resolve
from bench.datasets.base import load_dataset
from bench.methods.base import Batch
from bench.models import build_method
from bench.seeding import Streams
from bench.trainer import apply_update
from torch.utils.flop_counter import FlopCounterMode
from tests.imagedata import write_cifar
from pathlib import Path

root = write_cifar(Path(os.environ["OUT_DIR"]) / "cifar-generated", n_per_batch=600, n_test=200)
cfg = resolve(overrides={"datasets": ["cifar10"], "data": {"root": str(root), "checksum": False},
                         "net": {"unet": "cifar"}, "train": {"batch_size": 128, "amp": "bf16"}})
dev = torch.device("cuda")
data = load_dataset(cfg, "cifar10", 0, dev)
out = {"device": torch.cuda.get_device_name(), "batch": 128, "peak_tflops": float(os.environ["PEAK_TFLOPS"])}
for compiled in (False, True):
    m = build_method("fm-euler1", data, cfg, dev, 0).to(memory_format=torch.channels_last)
    net = m.net
    if compiled:
        m.net = torch.compile(net)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-4)
    gens = Streams(0, dev)
    idx = torch.arange(128, device=dev)
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = m.loss(Batch(data.train[idx], idx), gens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        apply_update(m, opt, cfg.train, None)
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        t = time.perf_counter(); step(); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    m.net = net
    with FlopCounterMode(display=False) as fc:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = m.loss(Batch(data.train[idx], idx), gens)
        loss.backward()
    sec = statistics.median(times)
    key = "compile" if compiled else "eager"
    out[key] = {"step_ms": 1000 * sec, "flops_per_step": fc.get_total_flops(),
                "tflops": fc.get_total_flops() / sec / 1e12,
                "share_of_peak": fc.get_total_flops() / sec / 1e12 / out["peak_tflops"]}
out["compile_speedup"] = out["eager"]["step_ms"] / out["compile"]["step_ms"]
print(json.dumps(out, indent=1))
Path(os.environ["OUT_DIR"], "compile.json").write_text(json.dumps(out, indent=1))
PY
