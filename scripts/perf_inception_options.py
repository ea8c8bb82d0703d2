"""Time torch-fidelity's ``inception-v3-compat`` built the library's ways (as is, conv+BN fused,
channels-last, both, optionally torch.compile) against the fid metric's ``inception-v3-fast``,
on the same images, weights and threads, and write reports/perf-inception-options.md.

    .venv/bin/python scripts/perf_inception_options.py --dataset mnist5k --n 64 --repeats 3 \\
        [--options abcdf] [--out reports/perf-inception-options.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench.env import git_commit, library_versions
from bench.io import atomic_write_text
from bench.perf_fid import options_comparison, options_markdown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--n", type=int, default=64, help="images per set (two sets)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--options", default="abcdf",
                    help="which of a-f to time (e: torch.compile, slow to warm up); a always")
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--out", type=Path, default=None, help="Markdown file to write")
    ap.add_argument("--json", type=Path, default=None, help="raw result as JSON")
    args = ap.parse_args(argv)
    res = options_comparison(args.dataset, args.n, batch=args.batch, repeats=args.repeats,
                             weights=args.inception_weights, options=args.options)
    command = " ".join([".venv/bin/python", "scripts/perf_inception_options.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    text = options_markdown(res, command, git_commit(), library_versions())
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
