#!/usr/bin/env bash
# The mnist5k studies (coupling x parametrisation ladder with K = 1 vs the default K, peers,
# learning curves) on one machine, in two lanes that run at once, one torch thread each:
#   lane 1: configs/ladder-mnist5k.yaml, then the K = 1 sweep configs/ladder-mnist5k-k1.yaml
#           (seed 0 of both first, then the other seeds), then the curves and their K = 1
#           rows (configs/curves-mnist5k-k1.yaml)
#   lane 2: configs/peers-mnist5k.yaml (every peer but reflow on every seed first), then
#           configs/curves-mnist5k.yaml
# and lane 1 joins the curves when its suites are done (the two processes split the curves'
# recipes between them through the same claims).
# The ladder and the peers share one results folder ($STUDY) and the same data, network,
# training and evaluation settings, so a recipe both suites name (otnfm-online,
# otnfm-minibatch, otmap-online, loomcfm, otcfm, fm) trains once: a run claimed by one lane is
# deferred by the other and picked up as a finished record. Everything resumes: run the
# script again after a stop and it continues. Then the three reports:
#   reports/ladder-mnist5k.md, reports/peers-mnist5k.md, reports/curves-mnist5k.md
#
#   scripts/mnist5k_study.sh                 # about 18 h on 2 CPU cores
#   nohup scripts/mnist5k_study.sh > study.log 2>&1 &   # in the background; stop it with
#                                            # kill PID (SIGTERM: a background shell ignores INT)
#   DEVICE=cuda scripts/mnist5k_study.sh     # on a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-.venv/bin/bench}
STUDY=${STUDY:-results/mnist5k-study}
CURVES=${CURVES:-results/curves-mnist5k}
DEVICE=${DEVICE:-auto}
LOGS=${LOGS:-$STUDY/logs}
mkdir -p "$LOGS"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# one suite of a lane: a suite with a failed run still lets the lane go on to its next suite
# (the failure is in the records and in the exit status); Ctrl-C or a kill ends the lane
step() {
  "$@" || {
    local s=$?
    if [ "$s" -ge 128 ]; then exit "$s"; fi
    rc=$s
  }
}
lane1() {
  trap 'exit 143' TERM  # run after the suite in progress has saved and exited: no next suite
  rc=0
  # seed 0 of the ladder and of its K = 1 sweep first, so that a study stopped early has the
  # whole comparison on one seed; then the other seeds (the seed-0 runs are skipped)
  step $BENCH run --config configs/ladder-mnist5k.yaml --seeds 0 --out "$STUDY" --device "$DEVICE"
  step $BENCH sweep --config configs/ladder-mnist5k-k1.yaml --set "seeds=[0]" --out "$STUDY" \
    --device "$DEVICE"
  step $BENCH run --config configs/ladder-mnist5k.yaml --out "$STUDY" --device "$DEVICE"
  step $BENCH sweep --config configs/ladder-mnist5k-k1.yaml --out "$STUDY" --device "$DEVICE"
  step $BENCH run --config configs/curves-mnist5k.yaml --out "$CURVES" --device "$DEVICE"
  # the online coupling's curves at K = 1 too (the better K at the ladder's budget)
  step $BENCH sweep --config configs/curves-mnist5k-k1.yaml --out "$CURVES" --device "$DEVICE"
  return "$rc"
}
# the peers but reflow, whose 16,000 dopri5 pairs take about 2.5 h per seed on one core
PEERS_FIRST=otnfm-online,otnfm-minibatch,otmap-online,loomcfm-euler1,otcfm-euler1,otcfm-euler2
PEERS_FIRST=$PEERS_FIRST,otcfm-midpoint1,otcfm-heun1,otcfm-dopri5,meanflow,meanflow-2step
PEERS_FIRST=$PEERS_FIRST,shortcut,shortcut-2step,ect,fm-euler100
lane2() {
  trap 'exit 143' TERM
  rc=0
  # every peer but reflow on every seed first, so that a study stopped early is missing only
  # reflow's runs; then the whole suite (reflow: the others are recorded and skipped)
  step $BENCH run --config configs/peers-mnist5k.yaml -m "$PEERS_FIRST" --out "$STUDY" \
    --device "$DEVICE"
  step $BENCH run --config configs/peers-mnist5k.yaml --out "$STUDY" --device "$DEVICE"
  step $BENCH run --config configs/curves-mnist5k.yaml --out "$CURVES" --device "$DEVICE"
  return "$rc"
}
# each lane in its own process group (job control). Ctrl-C or a kill of this script sends
# SIGTERM to both groups: each `bench` saves its state and exits (it handles SIGTERM like
# Ctrl-C, also where SIGINT is ignored, as in a background job), and neither lane starts its
# next suite
set -m
lane1 > "$LOGS/lane1.log" 2>&1 &
p1=$!
lane2 > "$LOGS/lane2.log" 2>&1 &
p2=$!
set +m
trap 'kill -TERM -- -"$p1" -"$p2" 2>/dev/null; wait; echo "interrupted; run again to resume"; exit 130' INT TERM
rc=0
wait "$p1" || rc=$?
wait "$p2" || rc=$?
echo "lanes done (exit $rc); logs in $LOGS"

# a suite with failed runs still leaves its finished records: report what is there
$BENCH report "$STUDY" -c configs/ladder-mnist5k.yaml -c configs/ladder-mnist5k-k1.yaml \
  --compare otnfm-online:loomcfm-euler1 --compare otnfm-online:otmap-online \
  --compare "otnfm-online · coupling.caches=1:otnfm-online" \
  --compare "loomcfm-euler1 · coupling.caches=1:loomcfm-euler1" \
  --compare "loomcfm-euler100 · coupling.caches=1:loomcfm-euler100" \
  --compare "otnfm-online · coupling.caches=1:loomcfm-euler1 · coupling.caches=1" \
  --out reports/ladder-mnist5k.md || rc=$?
$BENCH report "$STUDY" -c configs/peers-mnist5k.yaml --compare reflow:meanflow \
  --compare reflow-2step:meanflow-2step --out reports/peers-mnist5k.md || rc=$?
$BENCH report "$CURVES" -c configs/curves-mnist5k.yaml -c configs/curves-mnist5k-k1.yaml \
  --out reports/curves-mnist5k.md || rc=$?
exit "$rc"
