import pytest

from bench.registry import DATASETS, METHODS, METRICS, Registry, RegistryError


def test_duplicate_key_is_an_error():
    reg: Registry[object] = Registry("thing")
    reg.register("a-b")(object)
    with pytest.raises(RegistryError, match="duplicate thing 'a-b'"):
        reg.register("a-b")(object)


def test_key_must_be_lowercase():
    with pytest.raises(RegistryError, match="lowercase"):
        Registry("thing").register("Bad")


def test_unknown_method_names_close_matches_and_choices():
    with pytest.raises(RegistryError) as err:
        METHODS.get("otnfm-onlin")
    msg = str(err.value)
    assert "did you mean: otnfm-online" in msg.lower()
    assert "fm-euler100" in msg and "bench list" in msg


def test_glob_and_comma_lists():
    assert METHODS.match("otnfm-*") == ["otnfm-minibatch", "otnfm-online", "otnfm-global"]
    assert METHODS.match("fm-euler1,fm-euler1,naive-map") == ["fm-euler1", "naive-map"]
    assert set(METHODS.match("fm-euler*")) == {f"fm-euler{n}" for n in (1, 2, 4, 10, 100)}
    with pytest.raises(RegistryError, match="no method matches 'zzz-\\*'"):
        METHODS.match("zzz-*")


def test_builtins_registered():
    assert {"naive-map", "nfm-random", "otnfm-minibatch", "otnfm-online"} <= set(METHODS.names())
    assert {"moons", "checkerboard", "spiral", "crescent", "8gaussians"} <= set(DATASETS.names())
    assert {"w2", "mmd", "prc", "collapse"} <= set(METRICS.names())
    assert all(METHODS.entry(f"fm-euler{n}").meta["recipe"] == "fm" for n in (1, 2, 4, 10, 100))
