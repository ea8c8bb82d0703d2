"""Atomic writes."""

import pytest

from bench.io import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["report.md"]


def test_temporary_names_are_unique_and_keep_the_extension(tmp_path):
    seen = []
    for _ in range(2):
        atomic_write(tmp_path / "x.npy", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"1")))
    assert seen[0] != seen[1] and all(n.endswith(".npy") for n in seen)
