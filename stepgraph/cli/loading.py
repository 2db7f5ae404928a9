"""Finding ``MODULE:ATTR`` and configuring it for a command, without changing the user's object."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from ..authoring.builder import WorkflowBuilder
from ..authoring.graph_workflow import GraphWorkflow
from ..authoring.workflow import Workflow
from ..core import Mode
from ..durability.checkpoints import Bounds
from ..runtime.observers import RunObserver, heard_by
from ..telemetry.event_log import EventLog
from .common import fail

__all__ = [
    "Target",
    "configure",
    "cwd_on_path",
    "instance",
    "load_attribute",
    "load_registry",
    "load_target",
]

Target: TypeAlias = Workflow | GraphWorkflow | type[Workflow]
"""What ``MODULE:ATTR`` may name: a Workflow subclass or instance, or a built graph."""


def cwd_on_path() -> None:
    """Modules are imported from the current directory, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_file(path: Path, spec_text: str) -> Any:
    """Import the Python file ``path`` as a module named after it (its folder on sys.path)."""
    if not path.is_file():
        fail(f"cannot import {spec_text!r}: there is no file {str(path)!r}")
    name = path.stem
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        fail(f"cannot import {spec_text!r}: {str(path)!r} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes in it name this module, as a later import will
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        fail(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}")
    return module


def _import(module_name: str, spec_text: str) -> Any:
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        return _import_file(Path(module_name), spec_text)
    cwd_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            fail(
                f"cannot import module {module_name!r} (from {spec_text!r}): no such module "
                f"in the current directory {os.getcwd()!r} or on the Python path"
            )
        fail(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}")
    except Exception as exc:
        fail(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}")


def load_target(spec_text: str) -> Target:
    """The workflow ``MODULE:ATTR`` names (``ATTR`` may be dotted: ``module:obj.flow``).

    ``MODULE`` is a dotted module name importable from the current directory, or a path
    to a ``.py`` file.

    Raises:
        UsageError: malformed, unknown module or attribute, or not a workflow.
    """
    return _checked(load_attribute(spec_text), spec_text)


def load_attribute(spec_text: str) -> Any:
    """The object ``MODULE:ATTR`` names, whatever it is.

    Raises:
        UsageError: malformed, unknown module or attribute.
    """
    module_name, sep, attr = spec_text.rpartition(":")
    if not sep or not module_name or not attr:
        fail(f"expected MODULE:ATTR (say flows:MyFlow), got {spec_text!r}")
    module = _import(module_name, spec_text)
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            fail(f"module {module_name!r} has no attribute {attr!r}")
    return value


def load_registry(spec_text: str) -> list[tuple[str | None, Target]]:
    """The workflows ``MODULE:ATTR`` names: one, or a list or dict (name to workflow) of
    them; as (key or None, workflow) pairs.

    Raises:
        UsageError: malformed, unknown module or attribute, empty, or not workflows.
    """
    value = load_attribute(spec_text)
    if isinstance(value, dict):
        items: list[tuple[str | None, Any]] = list(value.items())
    elif isinstance(value, list | tuple):
        items = [(None, item) for item in value]
    else:
        return [(None, _checked(value, spec_text))]
    if not items:
        fail(f"{spec_text!r} names an empty {type(value).__name__}: give it workflows")
    found: list[tuple[str | None, Target]] = []
    for key, item in items:
        if key is not None and not isinstance(key, str):
            fail(f"{spec_text!r}: a registry's keys are workflow names (str), got {key!r}")
        where = f"{spec_text}[{key!r}]" if key is not None else f"an item of {spec_text!r}"
        found.append((key, _checked(item, where)))
    return found


def _checked(value: Any, spec_text: str) -> Target:
    """``value`` if it is a workflow (class, instance or built graph)."""
    if isinstance(value, type) and issubclass(value, Workflow):
        return value
    if isinstance(value, Workflow | GraphWorkflow):
        return value
    if isinstance(value, WorkflowBuilder):
        fail(f"{spec_text!r} is a WorkflowBuilder: name the built graph (its .build())")
    what = (
        f"class {value.__name__}"
        if isinstance(value, type)
        else f"a value of type {type(value).__name__}"
    )
    fail(
        f"{spec_text!r} is not a Workflow subclass or instance, or a built graph "
        f"(WorkflowBuilder(...).build()): it is {what}"
    )


def configure(
    target: Target,
    *,
    store: object = None,
    mode: str | None = None,
    event_log: str | None = None,
    observers: Sequence[RunObserver] = (),
    source: str = "",
    bounds: Bounds | None = None,
) -> Workflow | GraphWorkflow:
    """A workflow object to run: ``target`` with the command's options.

    A class is constructed with them as keywords (``store=``, ``mode=``, ``event_log=``,
    ``observers=``); an instance or a built graph is copied (``copy.copy``) and the copy
    gets new run options: the user's object is never changed. ``source``: the
    ``MODULE:ATTR`` the target was loaded from, kept with its durable runs (``runs
    resume`` and ``runs fork`` find the workflow by it). ``bounds``: for a class, the
    ``max_supersteps`` and ``max_concurrency`` its copy gets (those a stored run went on
    under: a class's defaults say nothing of the run's); an instance keeps its own.

    Raises:
        UsageError: the class does not take those keywords, or refuses them.
    """
    if isinstance(target, type):
        kwargs: dict[str, Any] = {}
        if store is not None:
            kwargs["store"] = store
        if mode is not None:
            kwargs["mode"] = mode
        if event_log is not None:
            kwargs["event_log"] = event_log
        if observers:
            kwargs["observers"] = list(observers)
        try:
            built = target(**kwargs)
        except Exception as exc:
            fail(
                f"cannot construct {target.__name__}({', '.join(f'{k}=...' for k in kwargs)}): "
                f"{type(exc).__name__}: {exc}"
            )
        changed: dict[str, Any] = {"source": source} if source else {}
        if bounds is not None:
            changed["max_supersteps"] = bounds.max_supersteps
            changed["max_concurrency"] = bounds.max_concurrency
        if changed:
            built.options = dataclasses.replace(built.options, **changed)
        return built
    made = copy.copy(target)
    options = target.options
    if store is not None:
        options = options.on_store(store)  # its limiters too: in the store, if it keeps them
    changes: dict[str, Any] = {}
    if mode is not None:
        changes["mode"] = Mode(mode)
    added: tuple[RunObserver, ...] = tuple(observers)
    if event_log is not None:
        log = EventLog(event_log)
        if not heard_by(options.observers, log):  # (its own log already: written once)
            added += (log,)
    if added:
        changes["observers"] = options.observers + added
    if source:
        changes["source"] = source
    made.options = dataclasses.replace(options, **changes)
    made.mode = made.options.mode
    return made


def instance(target: Target) -> Workflow | GraphWorkflow:
    """``target`` as an object (a class constructed without arguments)."""
    if isinstance(target, type):
        try:
            return target()
        except Exception as exc:
            fail(f"cannot construct {target.__name__}(): {type(exc).__name__}: {exc}")
    return target
