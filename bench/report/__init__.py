"""Markdown reports rendered from run records alone (never trains)."""

from bench.report.markdown import render_report  # noqa: F401
