"""``bench``: run, sweep, status, report, perf and list (typer + rich).

Each command lives in its own module; this one only assembles the app.
"""

from __future__ import annotations

import typer

from bench.cli import listing, perf, report, run, sample

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="OT-NFM Bench: one-step generators vs multi-step flow matching.")
app.command("run")(run.run_cmd)
app.command("sweep")(run.sweep_cmd)
app.command("status")(run.status_cmd)
app.command("report")(report.report_cmd)
app.command("sample")(sample.sample_cmd)
app.command("perf")(perf.perf_cmd)
app.command("list")(listing.list_cmd)
