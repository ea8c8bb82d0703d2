"""Built-in methods, registered by explicit import (never by scanning folders)."""

from bench.methods import fm, meanflow, nfm, reflow, shortcut  # noqa: F401
from bench.methods.base import Batch, BuildContext, Method, SampleOut  # noqa: F401
