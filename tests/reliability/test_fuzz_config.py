"""Fuzz: the config loader with arbitrary TOML and environments only ever answers ConfigError."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from wilo_backend.config import Config, ConfigError, load_config

SECTIONS: dict[str, list[str]] = {}


def _walk(cls: type[Any], prefix: str) -> None:
    for f in dataclasses.fields(cls):
        if callable(f.default_factory) and dataclasses.is_dataclass(f.default_factory):
            _walk(f.default_factory, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            SECTIONS.setdefault(prefix.rstrip("."), []).append(f.name)


_walk(Config, "")

scalars = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(["UTC", "Europe", "Europe/Berlin", "/etc/passwd", "../x", "auto", "none"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON escapes are TOML basic-string escapes (bad ones: refused)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    names = [*SECTIONS, "", "nonsense", "sensor.sim.extra"]
    for section in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        if section:
            lines.append(f"[{section}]")
        keys = [*SECTIONS.get(section, []), "unknown_key", "sim", "sensor"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    return "\n".join(lines) + "\n"


def _load(text: str | bytes, environ: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_config(path, environ=environ or {})
        except ConfigError as exc:
            assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        else:
            assert isinstance(config, Config)


@settings(max_examples=examples(150), deadline=None)
@given(documents())
@example("[storage]\nflush_seconds = 1" + "0" * 400 + "\n")  # found: OverflowError
@example('[storage]\ntimezone = "Europe"\n')  # found: IsADirectoryError
def test_structured_toml_gives_a_config_or_named_problems(text: str) -> None:
    _load(text)


@settings(max_examples=examples(100), deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_text_and_bytes_give_a_config_or_named_problems(text: str | bytes) -> None:
    _load(text)


env_names = st.sampled_from(
    [
        f"WILO_{section.replace('.', '_').upper()}_{key.upper()}".replace("WILO__", "WILO_")
        for section, keys in SECTIONS.items()
        for key in keys
    ]
    + ["WILO_NOPE", "WILO_SENSOR"]
)


@settings(max_examples=examples(100), deadline=None)
@given(st.dictionaries(env_names, st.text(max_size=30), max_size=4))
def test_arbitrary_environment_gives_a_config_or_named_problems(environ: dict[str, str]) -> None:
    _load("", environ)


def test_found_cases_name_their_key() -> None:
    for text, key in [
        ("[storage]\nflush_seconds = 1" + "0" * 400 + "\n", "storage.flush_seconds"),
        ('[storage]\ntimezone = "Europe"\n', "storage.timezone"),
    ]:
        try:
            _load_strict(text)
        except ConfigError as exc:
            assert exc.problems[0].startswith(key + ":")
        else:
            raise AssertionError(f"{text!r} was accepted")


def _load_strict(text: str) -> Config:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(text)
        return load_config(path, environ={})
