"""The code of the docs pages (semantics, runtime, durability, tasks, backends) runs, each
page as one script."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("page", "blocks"),
    [
        ("semantics.md", 10),
        ("runtime.md", 3),
        ("durability.md", 3),
        ("tasks.md", 4),
        ("backends.md", 1),
        ("observability.md", 1),
        ("limits.md", 1),
        ("distributed.md", 1),
    ],
)
def test_the_code_of_a_docs_page_runs_as_one_script(page: str, blocks: int) -> None:
    doc = DOCS / page
    found = re.findall(r"```python\n(.*?)```", doc.read_text(), re.DOTALL)
    assert len(found) >= blocks
    assert sum("assert " in block for block in found) >= blocks - 1  # the blocks check themselves
    # a module of its own, importable by name, as a stored event's class must be
    module = types.ModuleType(page.replace(".", "_"))
    sys.modules[module.__name__] = module
    try:
        code = compile("\n".join(found), str(doc), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    finally:
        del sys.modules[module.__name__]
