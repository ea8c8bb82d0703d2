#!/usr/bin/env bash
# Re-render every committed report whose records are in reports/data (each with the command
# that made it), then refresh the README's and reports/README.md's copied tables.
#   scripts/render_reports.sh            # all of them
#   scripts/render_reports.sh peers2d    # the ones whose name contains "peers2d"
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-.venv/bin/bench}
PY=${PY:-.venv/bin/python}
only=${1:-}
render() {
  local name=$1; shift
  if [ -n "$only" ] && [[ "$name" != *"$only"* ]]; then return; fi
  echo "reports/$name.md"
  $BENCH report "$@" --out "reports/$name.md" > /dev/null
}
render ladder2d reports/data/ladder2d
render peers2d reports/data/peers2d -c configs/peers2d.yaml
render curves-2d reports/data/curves-2d -c configs/curves-2d.yaml
render curves-digits reports/data/curves-digits -c configs/curves-digits.yaml
render ladder-digits reports/data/ladder-digits
render fid-digits reports/data/fid-digits
render k-moons reports/data/k-moons
render ladder-mnist5k reports/data/mnist5k-study -c configs/ladder-mnist5k.yaml \
  -c configs/ladder-mnist5k-k1.yaml --compare otnfm-online:loomcfm-euler1 \
  --compare otnfm-online:otmap-online
render peers-mnist5k reports/data/mnist5k-study -c configs/peers-mnist5k.yaml \
  --compare reflow:meanflow --compare reflow-2step:meanflow-2step
render curves-mnist5k reports/data/curves-mnist5k -c configs/curves-mnist5k.yaml \
  -c configs/curves-mnist5k-k1.yaml
$PY scripts/update_readme_table.py --all
