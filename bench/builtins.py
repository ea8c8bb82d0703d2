"""Every built-in method, dataset and metric: importing this module registers them.

Explicit imports, never a folder scan. Nothing imports this module but the entry points (the
CLI, the public API, worker processes and the tests), so ``import bench.registry`` alone loads
no method, and a method module can import any other ``bench`` module at its top.
"""

from bench.datasets import images as image_datasets
from bench.datasets import toy2d
from bench.methods import ect, fm, meanflow, nfm, reflow, shortcut
from bench.metrics import images as image_metrics
from bench.metrics import points

MODULES = (toy2d, image_datasets, nfm, fm, meanflow, reflow, shortcut, ect, points,
           image_metrics)
