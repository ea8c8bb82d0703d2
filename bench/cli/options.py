"""Options several commands share, declared once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from bench.cli.console import fail
from bench.suite import Executor

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML suite file")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="Override a config key: --set train.steps=2000 (repeatable)")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Results folder (default results/<suite name>)")]
PluginOpt = Annotated[list[Path] | None, typer.Option(
    help="Python file that registers methods, datasets or metrics (repeatable)")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
DataRootOpt = Annotated[str | None, typer.Option(
    "--data-root", help="Folder with dataset files (sets data.root)")]
ForceOpt = Annotated[bool, typer.Option(
    help="Redo runs that have an ok record, and retrain checkpoints")]

ExecutorOpt = Annotated[str, typer.Option(
    help="local: this machine. slurm: one job per dataset x seed")]
WorkersOpt = Annotated[int, typer.Option(help="Local worker processes")]
ClusterOpt = Annotated[str | None, typer.Option(
    help="submitit cluster: slurm, or local (for tests)")]
PartitionOpt = Annotated[str | None, typer.Option(help="Slurm partition")]
GpusOpt = Annotated[int | None, typer.Option(help="GPUs per Slurm job")]
TimeOpt = Annotated[int, typer.Option(help="Time limit per Slurm job, minutes")]
MemOpt = Annotated[int | None, typer.Option(help="Memory per Slurm job (GB)")]
WaitOpt = Annotated[bool, typer.Option(help="Wait for Slurm jobs and collect them")]
RequeuesOpt = Annotated[int, typer.Option(
    help="Times a Slurm job may be requeued at its time limit before it is recorded failed")]


@dataclass(frozen=True)
class ExecutorOptions(Executor):
    """The executor flags (``bench.suite.Executor``); a bad value exits 2 with its message."""

    def __post_init__(self) -> None:
        try:
            self.check()
        except ValueError as err:
            fail(str(err))
