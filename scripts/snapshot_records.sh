#!/usr/bin/env bash
# Copy a results folder's records and sample files (not its checkpoints) into
# reports/data/<name>/, so a report can be re-rendered from committed data and a suite that
# spans sessions can continue: copy the records back into a results folder and run the same
# command again — runs with ok records are skipped.
#
#   scripts/snapshot_records.sh results/ladder2d ladder2d
#   bench report reports/data/ladder2d --out reports/ladder2d.md
#   mkdir -p results/ladder2d && cp reports/data/ladder2d/records.jsonl results/ladder2d/   # resume later
set -euo pipefail
src=${1:?results folder}; name=${2:?name}
dst="reports/data/$name"
mkdir -p "$dst/samples"
cp "$src/records.jsonl" "$dst/records.jsonl.tmp" && mv "$dst/records.jsonl.tmp" "$dst/records.jsonl"
if [ -d "$src/samples" ]; then cp -u "$src"/samples/*.npy "$dst/samples/" 2>/dev/null || true; fi
echo "$dst: $(wc -l < "$dst/records.jsonl") records, $(ls "$dst/samples" | wc -l) sample files"
