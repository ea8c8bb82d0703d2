import json

import pytest

from bench.results import RunRecord, append_record, read_records


def rec(i, status="ok"):
    return RunRecord(method="m", dataset="d", seed=i, status=status, run_id=f"r{i}",
                     metrics={"w2": 0.1 * i})


def test_append_and_read_roundtrip(tmp_path):
    path = tmp_path / "records.jsonl"
    for i in range(3):
        append_record(path, rec(i))
    res = read_records(path)
    assert [r.seed for r in res.records] == [0, 1, 2] and not res.skipped
    assert res.records[2].metrics == {"w2": 0.2}


def test_torn_line_is_skipped_and_next_append_starts_a_new_line(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, rec(0))
    with open(path, "a") as f:
        f.write(rec(1).to_json()[:40])  # a writer killed mid-line
    append_record(path, rec(2))
    res = read_records(path)
    assert [r.seed for r in res.records] == [0, 2]
    assert len(res.skipped) == 1 and res.skipped[0][0] == 2
    # the earlier whole lines are untouched
    first = json.loads(path.read_text().splitlines()[0])
    assert first["run_id"] == "r0"


def test_garbage_lines_are_reported_not_fatal(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('not json\n[1, 2]\n{"no_method": 1}\n')
    append_record(path, rec(5))
    res = read_records(path)
    assert [r.seed for r in res.records] == [5] and len(res.skipped) == 3


# -- resume and crash safety -------------------------------------------------------------


def test_full_disk_while_writing_a_record_keeps_the_file_intact(tmp_path, monkeypatch, cpu):
    """The first (ok) record cannot be written: the file is cut back, the run is recorded as
    failed with the reason, the records already there stay readable."""
    import errno

    from bench import records
    from bench.config import resolve
    from bench.io import DiskFull
    from bench.runner import Runner
    from tests.conftest import TINY

    cfg = resolve(overrides={**TINY, "methods": ["otnfm-online"],
                             "eval": {**TINY["eval"], "floor": False}})
    out = tmp_path / "res"
    path = out / "records.jsonl"
    append_record(path, RunRecord(method="old", dataset="moons", seed=9, status="ok"))
    before = path.read_bytes()
    real_fsync, calls = records.os.fsync, {"n": 0}

    def full_once(fd):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", full_once)
    with pytest.raises(DiskFull):  # a full disk stops the suite: nothing else would fit
        Runner(cfg, out, cpu).run()
    text = path.read_bytes()
    assert text.startswith(before)
    got = read_records(path)
    assert not got.skipped
    (old, new) = got.records  # the run cut short is recorded, with the reason, once it fits
    assert old.method == "old" and new.status == "failed" and "disk full" in new.error
