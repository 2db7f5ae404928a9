"""The package's layers: authoring -> runtime -> core, with no cycle and no shortcut.

Parsed with ``ast`` (imports under ``if TYPE_CHECKING:`` are for type checkers only and
are left out): the kernel imports no other layer; the runtime imports nothing of the
authoring styles; the facades over a run (contexts, handler, scope, ports) and the
authoring styles reach a run only through its ports, never ``runtime/run.py``; and no
two modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stepgraph

PACKAGE = Path(stepgraph.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def runtime_imports(name: str) -> set[str]:
    """The stepgraph modules ``name`` imports when it runs (not for type checking)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("stepgraph"))
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")
                if child.level:
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join([*base, child.module] if child.module else base)
                else:
                    prefix = child.module or ""
                if prefix.startswith("stepgraph"):
                    for alias in child.names:
                        candidate = f"{prefix}.{alias.name}"
                        found.add(candidate if candidate in MODULES else prefix)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {m for m in found if m in MODULES}


def test_the_kernel_imports_no_other_layer() -> None:
    for name in MODULES:
        if name.startswith("stepgraph.core"):
            others = {m for m in runtime_imports(name) if not m.startswith("stepgraph.core")} - {
                "stepgraph.errors"
            }
            assert others == set(), f"{name} imports {sorted(others)}"


def test_the_runtime_imports_nothing_of_the_authoring_styles() -> None:
    for name in MODULES:
        if name.startswith("stepgraph.runtime"):
            upward = {m for m in runtime_imports(name) if m.startswith("stepgraph.authoring")}
            assert upward == set(), f"{name} imports {sorted(upward)}"


@pytest.mark.parametrize(
    "name",
    [
        "stepgraph.runtime.context",
        "stepgraph.runtime.workflow_context",
        "stepgraph.runtime.handler",
        "stepgraph.runtime.scope",
        "stepgraph.runtime.ports",
        "stepgraph.state.store",
        *(m for m in MODULES if m.startswith("stepgraph.authoring")),
    ],
)
def test_facades_and_authoring_reach_a_run_only_through_its_ports(name: str) -> None:
    assert "stepgraph.runtime.run" not in runtime_imports(name)


def test_no_two_modules_import_each_other_even_around_a_loop() -> None:
    edges = {
        name: {m for m in runtime_imports(name) if MODULES[m].name != "__init__.py"}
        for name in MODULES
        if MODULES[name].name != "__init__.py"
    }
    visiting: list[str] = []
    done: set[str] = set()

    def walk(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            loop = [*visiting[visiting.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(loop))
        visiting.append(name)
        for target in sorted(edges.get(name, ())):
            walk(target)
        visiting.pop()
        done.add(name)

    for name in sorted(edges):
        walk(name)
