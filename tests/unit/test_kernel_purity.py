"""The kernel package stays pure: no IO, no clock, no randomness, no asyncio, no shell.

Two checks. Statically, every module of ``stepgraph.core`` is parsed with ``ast`` and
none may import a module that reads a clock, draws random numbers, does IO or
concurrency, or any part of the shell (``stepgraph.runtime``) or of the authoring layer
(``stepgraph.authoring``), nor call ``open``/``print``/``__import__``/``exec``/``eval``.
Dynamically, a fresh interpreter imports ``stepgraph.core.kernel`` alone and must not
load asyncio or any of those modules. Importing ``stepgraph.core`` normally would run the
``stepgraph`` package ``__init__``, which loads the runtime; the subprocess therefore
registers a bare ``stepgraph`` package (same path, ``__init__`` not run) first, so that
only what the kernel itself imports is loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import stepgraph.core

CORE = Path(stepgraph.core.__file__).parent
MODULES = sorted(CORE.glob("*.py"))

FORBIDDEN_TOP_LEVEL = frozenset(
    {
        "asyncio",
        "time",
        "random",
        "threading",
        "uuid",
        "os",
        "socket",
        "datetime",
        "secrets",
        "subprocess",
        "multiprocessing",
        "concurrent",
        "selectors",
        "signal",
        "anyio",
        "trio",
    }
)
FORBIDDEN_PACKAGES = ("stepgraph.runtime", "stepgraph.authoring")
FORBIDDEN_CALLS = frozenset({"open", "print", "input", "__import__", "exec", "eval"})


def _resolve(module: Path, node: ast.ImportFrom) -> list[str]:
    """The absolute module names an ``import from`` statement in ``module`` loads."""
    if node.level:
        package = ["stepgraph", "core"]  # every module checked lives in stepgraph/core
        base = package[: len(package) - (node.level - 1)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    if node.module:
        return [prefix]
    return [f"{prefix}.{alias.name}" for alias in node.names]


def imported_modules(module: Path) -> list[str]:
    """Every absolute module name ``module`` imports, wherever in the file."""
    tree = ast.parse(module.read_text(), filename=str(module))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend(_resolve(module, node))
    return found


def _is_forbidden(name: str) -> bool:
    if name.split(".")[0] in FORBIDDEN_TOP_LEVEL:
        return True
    return any(name == p or name.startswith(p + ".") for p in FORBIDDEN_PACKAGES)


def test_the_core_package_has_modules_to_check() -> None:
    assert {"kernel.py", "state.py", "ticks.py", "commands.py"} <= {m.name for m in MODULES}


def test_relative_imports_resolve_to_absolute_module_names() -> None:
    # the check below is only as good as this resolution
    tree = ast.parse("from ..runtime import run\nfrom .. import authoring\nfrom .state import X")
    nodes = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    resolved = [_resolve(CORE / "kernel.py", n) for n in nodes]
    assert resolved == [["stepgraph.runtime"], ["stepgraph.authoring"], ["stepgraph.core.state"]]
    assert all(_is_forbidden(r[0]) for r in resolved[:2])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_kernel_module_imports_clock_randomness_io_asyncio_or_the_shell(module: Path) -> None:
    offending = [name for name in imported_modules(module) if _is_forbidden(name)]
    assert offending == [], f"stepgraph/core/{module.name} imports {offending}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_kernel_module_calls_io_or_dynamic_import_builtins(module: Path) -> None:
    tree = ast.parse(module.read_text(), filename=str(module))
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    ]
    assert calls == [], f"stepgraph/core/{module.name} calls {calls}"


_PROBE = """
import importlib.util, json, sys, types
spec = importlib.util.find_spec("stepgraph")
package = types.ModuleType("stepgraph")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["stepgraph"] = package  # the package without its __init__ (which loads the runtime)
before = set(sys.modules)
import stepgraph.core.kernel
print(json.dumps({"new": sorted(set(sys.modules) - before), "all": sorted(sys.modules)}))
"""


def test_importing_the_kernel_alone_loads_no_asyncio_clock_randomness_or_shell() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "stepgraph.core.kernel" in loaded["new"]
    assert "asyncio" not in loaded["all"]
    offending = [name for name in loaded["new"] if _is_forbidden(name)]
    assert offending == [], f"importing stepgraph.core.kernel loaded {offending}"
