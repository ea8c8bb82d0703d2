#!/usr/bin/env bash
# GPU check, under 8 minutes on one GPU: the CIFAR-10 preset (DDPM-size UNet, 35.7M
# parameters) for a few hundred bf16 steps through `bench run`, then `bench perf` on mnist5k
# and moons. Results land in $OUT_DIR (default results/gpu_check).
#
#   scripts/gpu_check.sh                      # CIFAR-10 from $CIFAR_ROOT if set, else a generated
#                                             # folder in the real format (timing only)
#   CIFAR_ROOT=~/data STEPS=500 scripts/gpu_check.sh
#
# Needs the project importable (pip install -e . or PYTHONPATH=.) and a CUDA device.
set -euo pipefail
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-results/gpu_check}
STEPS=${STEPS:-300}
BENCH="$PY -m bench.cli"
mkdir -p "$OUT_DIR"

$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for GPU machines"
print("torch", torch.__version__, "on", torch.cuda.get_device_name(), flush=True)
PY

ROOT=${CIFAR_ROOT:-}
EXTRA=()
if [ -z "$ROOT" ] || [ ! -d "$ROOT/cifar-10-batches-py" ]; then
  ROOT="$OUT_DIR/cifar-generated"
  echo "no CIFAR-10 at \$CIFAR_ROOT: generating a folder in the real format under $ROOT (timing only)"
  $PY -c "import sys; sys.path.insert(0, '.'); from pathlib import Path; from tests.imagedata import write_cifar; write_cifar(Path('$ROOT'), n_per_batch=2000, n_test=2000)"
  EXTRA=(--set data.checksum=false)
fi

t0=$(date +%s)
$BENCH run --config configs/cifar10.yaml --data-root "$ROOT" -m otnfm-minibatch,otnfm-online,fm-euler100 \
  --set train.steps="$STEPS" --set train.warmup=50 --set train.amp=bf16 --set train.log_every=50 \
  --set eval.n_samples=2000 --set eval.metrics=[fd,classes,collapse] --set data.n_eval=2000 \
  "${EXTRA[@]}" --out "$OUT_DIR/cifar10" --force
$BENCH report "$OUT_DIR/cifar10" --out "$OUT_DIR/cifar10.md"
echo "cifar10 preset: $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
$BENCH perf -d mnist5k --repeats 10 --out "$OUT_DIR" --md "$OUT_DIR/perf-mnist5k.md" --ot-sizes 64,256,1024
$BENCH perf -d cifar10 --data-root "$ROOT" "${EXTRA[@]}" --set net.unet=cifar --set train.batch_size=128 \
  -m otnfm-minibatch,otnfm-online,fm-euler100 --repeats 10 --train-steps 20 --ot-sizes 128 --banks 1000,50000 \
  --out "$OUT_DIR" --md "$OUT_DIR/perf-cifar10-cifarnet.md"
$BENCH perf -d moons --repeats 10 --out "$OUT_DIR" --md "$OUT_DIR/perf-moons.md" --ot-sizes 64,256,1024
echo "perf: $(( $(date +%s) - t0 )) s"
