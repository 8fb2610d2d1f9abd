"""The generic config mechanism: YAML, dotted overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from icecontext.config import Section, apply_overrides, dump_config, load_config, parse_override
from icecontext.errors import ConfigError


class Inner(Section):
    rates: list[int] = Field(default_factory=lambda: [6, 12, 18], min_length=1)
    pooling: Literal["global", "none"] = "none"


class Outer(Section):
    seed: int = 0
    name: str = "run"
    inner: Inner = Field(default_factory=Inner)
    compile: Literal["auto"] | bool = "auto"


def test_overrides_are_parsed_as_yaml() -> None:
    assert parse_override("inner.rates=[1,2]") == (["inner", "rates"], [1, 2])
    assert parse_override("seed=3") == (["seed"], 3)
    assert parse_override("name=a=b") == (["name"], "a=b")
    data = apply_overrides({"inner": {"pooling": "global"}}, ["inner.rates=[2]", "seed=5"])
    assert data == {"inner": {"pooling": "global", "rates": [2]}, "seed": 5}


def test_load_config_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\ninner:\n  rates: [12, 24, 36]\n")
    cfg = load_config(Outer, path, ["inner.pooling=global"])
    assert cfg.seed == 7 and cfg.inner.rates == [12, 24, 36] and cfg.inner.pooling == "global"
    again = load_config(Outer, _dump(tmp_path, dump_config(cfg)))
    assert again == cfg


def _dump(folder: Path, text: str) -> Path:
    p = folder / "resolved.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("inner.ratez=[1]", "inner.ratez", "unknown option"),
        ("seed=abc", "seed", "integer"),
        ("inner.pooling=avg", "inner.pooling", "'global' or 'none'"),
        ("inner.rates=[]", "inner.rates", "at least 1"),
        ("inner.rates=[1,x]", "inner.rates.1", "integer"),
    ],
)
def test_errors_name_the_dotted_key(override: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Outer, None, [override])
    assert info.value.option == key
    assert fragment in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, listy)


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"seed": 1}, ["seed.x=2"])
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides({}, ["seed"])


def test_an_option_taking_auto_or_a_boolean_is_named_once() -> None:
    """A union fails once per branch; the message names the option, not the branch."""
    with pytest.raises(ConfigError) as caught:
        load_config(Outer, None, ["compile=maybe"])
    text = str(caught.value)
    assert "'compile'" in text and "literal" not in text
    assert "Input should be 'auto' or a valid boolean" in text and "(got 'maybe')" in text
    assert load_config(Outer, None, ["compile=false"]).compile is False
