#!/usr/bin/env bash
# Re-render every committed report whose records are in reports/data, each with the command
# reports/render.txt holds for it, then refresh the README's and reports/README.md's copied
# tables.
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
  $BENCH report "$@" --out "reports/$name.md" > /dev/null < /dev/null
}
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  eval "render $line"  # shell words: the title's quotes
done < reports/render.txt
$PY scripts/update_readme_table.py --all
