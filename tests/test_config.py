from dataclasses import dataclass, field
from typing import Literal

import pytest

from recstack.config import from_dict, load_yaml, to_dict
from recstack.errors import ConfigError
from recstack.registry import build, names, register


@dataclass
class Inner:
    dim: int = 8
    dropout: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    ks: list[int] = field(default_factory=lambda: [5, 10])
    window: float | None = None


def test_from_dict_nested_and_defaults():
    cfg = from_dict(Outer, {"inner": {"dim": 16}, "ks": [1], "window": 3})
    assert cfg.inner.dim == 16 and cfg.inner.dropout == 0.1
    assert cfg.ks == [1] and cfg.window == 3.0
    assert to_dict(cfg)["inner"] == {"dim": 16, "dropout": 0.1}


def test_unknown_key_named_with_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key inner\.dims .*valid keys: dim, dropout"):
        from_dict(Outer, {"inner": {"dims": 3}})


def test_type_and_literal_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"inner\.dim: expected an integer"):
        from_dict(Outer, {"inner": {"dim": "big"}})
    with pytest.raises(ConfigError, match=r"mode: 'c' is not one of"):
        from_dict(Outer, {"mode": "c"})
    with pytest.raises(ConfigError, match=r"ks\[1\]: expected an integer"):
        from_dict(Outer, {"ks": [1, "x"]})


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)


def test_registry_build_and_unknown_name():
    @register("test_kind", "thing", config=Inner)
    class Thing:
        def __init__(self, config):
            self.config = config

    obj = build("test_kind", {"name": "thing", "dim": 3})
    assert obj.config.dim == 3
    assert names("test_kind") == ["thing"]
    with pytest.raises(ConfigError, match="unknown test_kind 'nope'; known: thing"):
        build("test_kind", {"name": "nope"})
    with pytest.raises(ConfigError, match=r"unknown key test_kind\.thing\.size in Inner"):
        build("test_kind", {"name": "thing", "size": 3})


@dataclass
class Owner:
    inner: Inner = field(default_factory=lambda: Inner(dim=64, dropout=0.5))


def test_partial_nested_mapping_keeps_owner_defaults():
    cfg = from_dict(Owner, {"inner": {"dim": 3}})
    assert cfg.inner.dim == 3 and cfg.inner.dropout == 0.5
    with pytest.raises(ConfigError, match=r"unknown key inner\.size"):
        from_dict(Owner, {"inner": {"size": 3}})
