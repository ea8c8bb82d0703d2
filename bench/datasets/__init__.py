"""Datasets. The built-in ones register when ``bench.builtins`` imports their modules."""
