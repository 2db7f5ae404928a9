"""The code in docs/runtime.md runs, as one script, and checks itself."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"


def test_the_code_of_the_runtime_guide_runs_as_one_script() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 3
    assert all("assert " in block for block in blocks)  # each block checks itself
    namespace: dict[str, object] = {"__name__": "runtime_guide"}
    exec(compile("\n".join(blocks), str(DOC), "exec", dont_inherit=True), namespace)
