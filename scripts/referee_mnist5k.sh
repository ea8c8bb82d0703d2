#!/usr/bin/env bash
# The mnist5k runs a referee asks for, most useful first, so that a stop at any
# point leaves whole comparisons. The runs scored on the eval split share one results folder
# ($OUT) and one domain classifier (on the 4,000 training images, shipped with the package so
# that a run on another machine lands in the same feature space); the sensitivity runs train on
# 3,000 and are scored on the other 1,000 (a validation split), so they have their own
# (shipped) classifier and their own folder ($SENS):
#   1. the consistency peer: ect and its fm teacher (fm-euler100), 3 seeds
#   2. the neural flow's t sampling: uniform / Beta(3, 1) / t = 1 only, 3 seeds
#   3. lr x EMA sensitivity on a validation split, seed 0 of every setting, then
#   4. the peers suite in this feature space, the ladder and its K = 1 rows, the mnist5k
#      suite (K = 1, its own runs), reflow last (its 16,000 dopri5 pairs are the slowest part),
#   5. the other two seeds of the sensitivity grid,
#   6. the learning curves of the rows the README discusses, 3 seeds
#      (results/curves-mnist5k-pinned).
# Every command resumes (finished runs are skipped, a stopped run continues from its saved
# state): run the script again after a stop. On a fresh machine, put the committed records
# back first, so that their runs are skipped:
#   mkdir -p results/mnist5k-pinned results/sensitivity-mnist5k
#   cp reports/data/mnist5k-pinned/records.jsonl results/mnist5k-pinned/
#   cp reports/data/sensitivity-mnist5k/records.jsonl results/sensitivity-mnist5k/
# Stop it with kill PID or Ctrl-C (the run in progress gets SIGTERM, saves its state and
# exits; no next command starts).
#   nohup scripts/referee_mnist5k.sh > referee.log 2>&1 &
# Rough times on 2 CPU cores (one 1,200-step run about 7 min, MeanFlow and ECT about twice
# that): 1. 1 h, 2. 1 h, 3. 3 h, 4. 10 h (reflow 4.5 h of it), 5. 6 h, 6. 8 h. Steps 1 to 3
# and seeds 0 and 1 of the ladder's K = 6 grid (part of 4) are in the committed records
# (about 21 h left).
# Bad input (exit status 2: a missing file, a bad config) stops the script; failed runs do not.
# Then snapshot and render:
#   scripts/snapshot_records.sh results/mnist5k-pinned mnist5k-pinned
#   scripts/snapshot_records.sh results/sensitivity-mnist5k sensitivity-mnist5k
#   scripts/snapshot_records.sh results/curves-mnist5k-pinned curves-mnist5k-pinned
#   scripts/render_reports.sh      # the reports reports/render.txt names
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-.venv/bin/bench}
OUT=${OUT:-results/mnist5k-pinned}
SENS=${SENS:-results/sensitivity-mnist5k}
CURVES=${CURVES:-results/curves-mnist5k-pinned}
DEVICE=${DEVICE:-auto}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# each command runs as a child the script waits for: a kill (or Ctrl-C) of the script is
# passed on to it as SIGTERM (bench saves its state and exits), and no next command starts.
# A command whose runs partly failed (exit status 1) lets the script go on (the failures are
# recorded); bad input (2) or a stop ends it.
rc=0
child=
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" || true; fi
      echo "stopped; run again to resume"; exit 130' INT TERM
step() {
  "$@" &
  child=$!
  local s=0
  wait "$child" || s=$?
  child=
  if [ "$s" -ge 128 ] || [ "$s" -eq 2 ]; then exit "$s"; fi
  if [ "$s" -ne 0 ]; then rc=$s; fi
}
PEERS_FIRST=otnfm-online,otnfm-minibatch,otmap-online,loomcfm-euler1,otcfm-euler1,otcfm-euler2
PEERS_FIRST=$PEERS_FIRST,otcfm-midpoint1,otcfm-heun1,otcfm-dopri5,meanflow,meanflow-2step
PEERS_FIRST=$PEERS_FIRST,shortcut,shortcut-2step,ect,fm-euler100
CURVE_ROWS=otnfm-online,otmap-online,loomcfm-euler1,fm-euler100

step $BENCH run --config configs/peers-mnist5k.yaml -m ect,fm-euler100 --out "$OUT" \
  --device "$DEVICE" --no-estimate
step $BENCH sweep --config configs/t-sampling-mnist5k.yaml --out "$OUT" --device "$DEVICE"
step $BENCH sweep --config configs/sensitivity-mnist5k.yaml --set "seeds=[0]" --out "$SENS" \
  --device "$DEVICE"
step $BENCH run --config configs/peers-mnist5k.yaml -m "$PEERS_FIRST" --out "$OUT" \
  --device "$DEVICE" --no-estimate
step $BENCH run --config configs/ladder-mnist5k.yaml --out "$OUT" --device "$DEVICE" \
  --no-estimate
step $BENCH sweep --config configs/ladder-mnist5k-k1.yaml --out "$OUT" --device "$DEVICE"
step $BENCH run --config configs/mnist5k.yaml --out "$OUT" --device "$DEVICE" --no-estimate
step $BENCH run --config configs/peers-mnist5k.yaml --out "$OUT" --device "$DEVICE" \
  --no-estimate
step $BENCH sweep --config configs/sensitivity-mnist5k.yaml --out "$SENS" --device "$DEVICE"
step $BENCH run --config configs/curves-mnist5k.yaml -m "$CURVE_ROWS" --seeds 0,1,2 \
  --out "$CURVES" --device "$DEVICE" --no-estimate
step $BENCH sweep --config configs/curves-mnist5k-k1.yaml --set "seeds=[0,1,2]" --out "$CURVES" \
  --device "$DEVICE"
exit "$rc"
