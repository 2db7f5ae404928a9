"""docs/architecture.md names every tick and command kind the kernel has."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepgraph.core import commands, ticks

DOC = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()


def _kinds(module: object) -> list[str]:
    names = getattr(module, "__all__", [])
    return [n for n in names if isinstance(getattr(getattr(module, n), "kind", None), str)]


@pytest.mark.parametrize("name", _kinds(ticks) + _kinds(commands))
def test_the_architecture_doc_names_every_tick_and_command(name: str) -> None:
    assert f"`{name}`" in DOC, f"docs/architecture.md does not describe {name}"
