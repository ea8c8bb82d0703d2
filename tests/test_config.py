import pytest

from bench.config import (
    Config,
    ConfigError,
    expand_sweep,
    parse_set,
    resolve,
    stable_hash,
    to_dict,
)


def test_defaults_yaml_flags_set_precedence(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ntrain: {steps: 10, lr: 0.01}\nseeds: [3]\n")
    cfg = resolve(f, {"seeds": "0,1"}, ["train.steps=7", "eval.metrics=[w2, mmd]"])
    assert cfg.name == "s" and cfg.seeds == (0, 1)
    assert cfg.train.steps == 7 and cfg.train.lr == 0.01
    assert cfg.eval.metrics == ("w2", "mmd")
    assert cfg.train.batch_size == Config().train.batch_size


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: {stepz: 10}\n")
    with pytest.raises(ConfigError) as err:
        resolve(f)
    msg = str(err.value)
    assert "bad.yaml" in msg and "'stepz'" in msg and "allowed keys: steps, batch_size" in msg


def test_unknown_top_level_key_from_set():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        resolve(sets=["trian.steps=3"])


def test_bad_yaml_and_bad_types(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("train: {steps: [1,\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        resolve(f)
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        resolve(sets=["train.steps=lots"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["train.steps"])
    with pytest.raises(ConfigError, match="not found"):
        resolve(tmp_path / "missing.yaml")


def test_config_is_frozen_and_hash_stable():
    cfg = resolve()
    with pytest.raises(AttributeError):
        cfg.train.steps = 5  # type: ignore[misc]
    assert stable_hash(to_dict(cfg)) == stable_hash(to_dict(resolve()))
    assert stable_hash(to_dict(cfg)) != stable_hash(to_dict(resolve(sets=["train.lr=0.5"])))


def test_shipped_configs_resolve():
    from pathlib import Path

    from bench.config import expand_sweep, load_yaml

    files = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    assert len(files) >= 5
    for f in files:
        if "sweep" in load_yaml(f):
            assert len(expand_sweep(f)) >= 1
        else:
            resolve(f)


def test_expand_sweep(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ntrain: {steps: 3}\nsweep:\n  method: [nfm-random]\n  seed: [0, 1]\n"
                 "  coupling.batch_size: [32, 64]\n  path.kind: [linear, cosine]\n")
    points = expand_sweep(f)
    assert len(points) == 4
    assert {tuple(a.values()) for a, _ in points} == {(32, "linear"), (32, "cosine"),
                                                      (64, "linear"), (64, "cosine")}
    assert all(c.methods == ("nfm-random",) and c.seeds == (0, 1) for _, c in points)
    f.write_text("sweep:\n  path.kind: [wiggly]\n")
    with pytest.raises(ConfigError, match="path.kind: unknown value 'wiggly'"):
        expand_sweep(f)
