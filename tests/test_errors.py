"""The validation kit behind every config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from nas.errors import ConfigError, parse_dataclass


@dataclass(frozen=True)
class Inner:
    k: int = 1


@dataclass(frozen=True)
class Section:
    lr: float = field(default=1e-3, metadata={"check": lambda v: v > 0, "allowed": "> 0"})
    epochs: int = 3
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    name: str | None = None
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = Inner()


def test_defaults_and_coercion():
    s = parse_dataclass(Section, {"lr": 1, "sizes": [3, 4], "inner": {"k": 5}}, "f.yaml", "train")
    assert s == Section(lr=1.0, sizes=(3, 4), inner=Inner(5))
    assert isinstance(s.lr, float)
    assert parse_dataclass(Section, None) == Section()


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"lrr": 1}, ["f.yaml", "`train.lrr`", "unknown key", "unknown key. Did you mean `lr`? Allowed: lr, epochs"]),
        ({"lr": -1}, ["`train.lr`", "out of range", "(got -1", "Allowed: > 0"]),
        ({"lr": "fast"}, ["`train.lr`", "wrong type", "a number"]),
        ({"epochs": 2.5}, ["`train.epochs`", "an integer"]),
        ({"epochs": True}, ["`train.epochs`", "an integer"]),
        ({"mode": "c"}, ["`train.mode`", "'a' | 'b'"]),
        ({"flag": "yes"}, ["`train.flag`", "true or false"]),
        ({"sizes": [1, "x"]}, ["`train.sizes[1]`"]),
        ({"inner": {"q": 1}}, ["`train.inner.q`", "unknown key"]),
        ([1, 2], ["`train`", "mapping"]),
    ],
)
def test_errors_name_file_key_value_and_allowed(data, fragments):
    with pytest.raises(ConfigError) as info:
        parse_dataclass(Section, data, "f.yaml", "train")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message
