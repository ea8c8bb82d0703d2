"""What a plan needs and lacks, found before any work: a ``Problem`` says what is wrong, why
the plan needs it and how to fix it. The planner collects them (metric prerequisites, sample
bounds); each dataset declares the check of its own files (``register_dataset(...,
check=...)``); ``bench run --dry-run`` lists them all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """Something a plan needs that is missing or unusable, found before any work: what is
    wrong, why the plan needs it, and how to fix it."""

    what: str
    why: str
    fix: str
    #: the dataset whose files are missing (None: a problem of the whole suite). A real run
    #: goes on without it: that dataset's runs are recorded failed with the reason
    dataset: str | None = None

    @property
    def message(self) -> str:
        return f"{self.what} ({self.why}). Fix: {self.fix}"
