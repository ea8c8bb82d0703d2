"""Nothing the harness reads can run code: a walk over the source (``bench/`` and ``scripts/``)
for every call that can unpickle, failing on any that may.

- ``torch.load`` must say ``weights_only=True``;
- ``np.load`` must not say ``allow_pickle=True`` (its default is False);
- ``pickle.load`` / ``pickle.loads`` / ``pickle.Unpickler``, ``dill``, ``joblib.load``,
  ``pandas.read_pickle`` and ``marshal.loads`` appear nowhere but in the restricted CIFAR-10
  reader, whose unpickler must override ``find_class``;
- ``yaml.load`` / ``yaml.unsafe_load`` / ``yaml.full_load`` appear nowhere (``safe_load`` only);
- torch-fidelity is never asked to keep its own cache (``cache=True``: it reads those files
  with ``torch.load(weights_only=False)``).

Third-party readers the harness calls are covered where it calls them: torch-fidelity's cache
(off), torchvision's CIFAR-10 reader (replaced by the restricted one). The tests that plant
payloads (tests/test_fidelity_cache.py, tests/test_cifar_reader.py, tests/test_checkpoints.py)
check that a marker file is never created.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the one module allowed to subclass pickle.Unpickler (restricted to the archive's types)
RESTRICTED_READER = "bench/datasets/cifar.py"
UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("_pickle", "load"),
    ("_pickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
    ("pandas", "read_pickle"), ("pd", "read_pickle"), ("marshal", "loads"),
    ("marshal", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("shelve", "open"),
}


def sources() -> list[Path]:
    return sorted([*(ROOT / "bench").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])


def dotted(node: ast.AST) -> tuple[str, ...]:
    """``a.b.c`` of an attribute chain or name, () for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return ()


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def findings(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    bad: list[str] = []
    # names imported from a module: `from pickle import load` makes `load(...)` pickle.load
    imported: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                imported[a.asname or a.name] = (node.module.split(".")[0], a.name)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Call, ast.ClassDef)):
            continue
        where = f"{rel}:{node.lineno}"
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = dotted(base)
                if name and (name[-2:] == ("pickle", "Unpickler")
                             or imported.get(name[-1]) == ("pickle", "Unpickler")):
                    methods = {b.name for b in node.body if isinstance(b, ast.FunctionDef)}
                    if rel != RESTRICTED_READER or "find_class" not in methods:
                        bad.append(f"{where}: pickle.Unpickler subclass {node.name}")
            continue
        name = dotted(node.func)
        if len(name) == 1 and name[0] in imported:
            name = imported[name[0]]
        tail = name[-2:] if len(name) >= 2 else name
        if tail == ("torch", "load"):
            if not is_const(keyword(node, "weights_only"), True):
                bad.append(f"{where}: torch.load without weights_only=True")
        elif tail in (("np", "load"), ("numpy", "load")):
            ap = keyword(node, "allow_pickle")
            if ap is not None and not is_const(ap, False):
                bad.append(f"{where}: np.load with allow_pickle other than False")
        elif tail in UNSAFE_CALLS and not (rel == RESTRICTED_READER and tail == (
                "pickle", "Unpickler")):
            bad.append(f"{where}: {'.'.join(tail)}")
        elif tail[-1:] == ("calculate_metrics",) and not is_const(keyword(node, "cache"),
                                                                   False):
            bad.append(f"{where}: torch-fidelity's calculate_metrics without cache=False")
    return bad


def test_no_call_in_the_harness_can_unpickle_code():
    files = sources()
    assert len(files) > 40 and any(p.name == "checkpoints.py" for p in files)
    bad = [f for p in files for f in findings(p)]
    assert bad == [], "calls that can unpickle:\n" + "\n".join(bad)


def test_the_walker_catches_each_unsafe_form(tmp_path, monkeypatch):
    """The walker itself: each unsafe form is found, each safe one passes."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "bench").mkdir()
    unsafe = {
        "a.py": "import torch\ntorch.load('x')\n",
        "b.py": "import torch\ntorch.load('x', weights_only=False)\n",
        "c.py": "import numpy as np\nnp.load('x', allow_pickle=True)\n",
        "d.py": "import pickle\npickle.load(open('x', 'rb'))\n",
        "e.py": "from pickle import loads\nloads(b'')\n",
        "f.py": "import pickle\nclass U(pickle.Unpickler):\n    pass\n",
        "g.py": "import yaml\nyaml.load('a: 1', Loader=yaml.Loader)\n",
        "h.py": "import torch_fidelity\ntorch_fidelity.calculate_metrics(input1=1, cache=True)\n",
        "i.py": "import torch_fidelity\ntorch_fidelity.calculate_metrics(input1=1)\n",
    }
    safe = {
        "s1.py": "import torch\ntorch.load('x', map_location='cpu', weights_only=True)\n",
        "s2.py": "import numpy as np\nnp.load('x')\nnp.load('y', allow_pickle=False)\n",
        "s3.py": "import yaml\nyaml.safe_load('a: 1')\n",
        "s4.py": "import torch_fidelity\ntorch_fidelity.calculate_metrics(input1=1, cache=False)\n",
    }
    for name, code in {**unsafe, **safe}.items():
        (tmp_path / "bench" / name).write_text(code)
    for name in unsafe:
        assert findings(tmp_path / "bench" / name), name
    for name in safe:
        assert findings(tmp_path / "bench" / name) == [], name
