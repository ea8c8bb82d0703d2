"""The layering rules, checked on the source: no bench import inside a function, no private
name used across modules, and importing the registry loads no method."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bench"


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _imports_bench(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "bench"
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "bench" for a in node.names)
    return False


def test_no_bench_module_is_imported_inside_a_function():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                offenders += [f"{path.relative_to(PACKAGE.parent)}:{n.lineno}"
                              for n in ast.walk(fn) if _imports_bench(n)]
    assert offenders == []


def test_no_private_name_of_another_module_is_used():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        bench_aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench"):
                offenders += [f"{path.name}: from {node.module} import {a.name}"
                              for a in node.names if a.name.startswith("_")]
                bench_aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                bench_aliases |= {(a.asname or a.name).split(".")[0] for a in node.names
                                  if a.name.startswith("bench")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in bench_aliases):
                offenders.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert offenders == []


def test_importing_the_registry_loads_no_method():
    code = ("import sys, bench.registry; "
            "print(sorted(m for m in sys.modules if m.startswith('bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent).stdout
    assert out.strip() == "['bench', 'bench.registry']"


def test_the_runner_stays_a_small_orchestrator():
    """Runner only sequences the rooms (plan, claims, models, evaluate, records): under 120
    lines, so new work lands in the room it belongs to."""
    tree = ast.parse((PACKAGE / "runner.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Runner"]
    assert cls.end_lineno - cls.lineno + 1 < 120
