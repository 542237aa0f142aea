"""The README's configuration reference is the real set of defaults, not a stale copy."""

from __future__ import annotations

from pathlib import Path

from wilo_backend.config import Config, config_to_toml

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_opens_with_run_and_test() -> None:
    text = README.read_text()
    head = text[: text.index("## ")]
    assert "make run" in head
    assert "make test" in head


def test_readme_config_block_matches_the_defaults() -> None:
    text = README.read_text()
    section = text[text.index("## Configuration") :]
    block = section[section.index("```toml\n") + len("```toml\n") :]
    block = block[: block.index("```")]
    assert block == config_to_toml(Config())
