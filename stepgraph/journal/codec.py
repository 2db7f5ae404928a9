"""JSON for journals: ticks, commands and the values they carry, and back.

Values keep their Python type across the trip: events (pydantic models) come back as
the same class with the same fields, tuples as tuples, classes as themselves. Anything
that is not JSON is written as a one-key object whose key starts with ``$``:

=================  ===============================================================
``$tuple``         a tuple (its items)
``$map``           a dict (a list of ``[key, value]`` pairs, so keys may be any value)
``$float``         ``nan``, ``inf`` or ``-inf``
``$type``          a class, as ``module:QualifiedName``
``$enum``          an enum member: ``[class, value]``
``$model``         a pydantic model: ``[class, {field: value}]`` (extra fields included)
``$dataclass``     a dataclass instance: ``[class, {field: value}]``
``$failure``       a :class:`~stepgraph.core.Failure` (the live exception is not kept)
``$response``      a :class:`~stepgraph.core.ResponseMessage`
``$repeat``        a :class:`~stepgraph.core.Repeat` (``collect_events(..., count=n)``)
``$set``           a set, ``$frozenset`` a frozenset (their items)
``$bytes``         bytes, in base64
``$datetime``      a datetime, ``$date`` a date, ``$time`` a time (ISO 8601)
``$timedelta``     a timedelta, in seconds
``$uuid``          a UUID; ``$decimal`` a Decimal; ``$path`` a path, ``$purepath`` a
                   ``PurePosixPath`` (as text)
=================  ===============================================================

Classes are named by module and qualified name, so only classes importable from a
module can be written: a class defined inside a function cannot, and a
:class:`~stepgraph.errors.SerializationError` says so, naming the value and where it
was found.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import importlib
import json
import math
import pathlib
import threading
import typing
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any

from pydantic import BaseModel, RootModel, ValidationError
from pydantic_core import PydanticUndefined

from ..core import (
    COMMAND_TYPES,
    TICK_TYPES,
    Command,
    EventsSent,
    Failure,
    Repeat,
    ResponseMessage,
    StepCompleted,
    Tick,
)
from ..core.text import safely_equal, short_repr
from ..errors import SerializationError

__all__ = [
    "class_path",
    "decode",
    "decode_command",
    "decode_tick",
    "decode_validated",
    "encode",
    "encode_command",
    "encode_for_json",
    "encode_tick",
    "encode_tick_for_json",
    "import_class",
]

_TICKS: dict[str, type] = {cls.kind: cls for cls in TICK_TYPES}  # type: ignore[attr-defined]
_COMMANDS: dict[str, type] = {cls.kind: cls for cls in COMMAND_TYPES}  # type: ignore[attr-defined]
_SKIPPED_COMMAND_FIELDS = frozenset({"error"})  # live exceptions: ``failure`` keeps the record


def class_path(cls: type, where: str = "") -> str:
    """``module:QualifiedName`` of a class that can be imported again."""
    qualname = cls.__qualname__
    if "<locals>" in qualname:
        raise SerializationError(
            f"cannot write class {qualname} {where}: it is defined inside a function, so "
            f"nothing could import it back; define it at module level"
        )
    return f"{cls.__module__}:{qualname}"


def import_class(path: str) -> Any:
    """The class named ``module:QualifiedName``."""
    module, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise SerializationError(f"cannot import {path!r} to read it back: {exc}") from exc
    return found


def encode(value: Any, where: str = "") -> Any:
    """``value`` as JSON-compatible data (see the module docstring)."""
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is int or kind is str:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return {"$float": repr(value)}
    if kind is list:
        return [encode(item, where) for item in value]
    if kind is tuple:
        return {"$tuple": [encode(item, where) for item in value]}
    if kind is dict:
        return {"$map": [[encode(k, where), encode(v, where)] for k, v in value.items()]}
    simple = _SIMPLE.get(kind)
    if simple is not None:
        tag, write, _ = simple
        return {tag: write(value)}
    if kind is set or kind is frozenset:
        items = sorted((encode(item, where) for item in value), key=_order)
        return {"$set" if kind is set else "$frozenset": items}
    if isinstance(value, type):
        return {"$type": class_path(value, where)}
    if isinstance(value, Enum):
        return {"$enum": [class_path(kind, where), encode(value.value, where)]}
    if isinstance(value, BaseModel):
        path, names = _model_info(kind, where)
        data: dict[str, Any] = {}
        extra = value.__pydantic_extra__
        for name in (*names, *extra) if extra else names:
            item = getattr(value, name)
            plain = type(item)
            if item is None or plain is str or plain is int or plain is bool:
                data[name] = item  # the common fields: no call, no message to build
            else:
                data[name] = encode(item, f"{where} in {kind.__name__}.{name}")
        return {"$model": [path, data]}
    if kind is Failure:
        return {
            "$failure": {
                "type": value.type,
                "message": value.message,
                "notes": list(value.notes),
                "traceback": value.traceback,
            }
        }
    if kind is Repeat:
        return {"$repeat": [class_path(value.kind, where), value.times]}
    if kind is ResponseMessage:
        return {
            "$response": [
                value.request_id,
                encode(value.data, where),
                encode(value.response, where),
            ]
        }
    info = _DATACLASSES.get(kind)
    if info is not None or dataclasses.is_dataclass(value):
        if info is None:
            fields = tuple(f.name for f in dataclasses.fields(value))
            info = _DATACLASSES[kind] = (class_path(kind, where), fields)
        path, names = info
        data = {}
        for name in names:
            item = getattr(value, name)
            plain = type(item)
            if item is None or plain is str or plain is int or plain is bool:
                data[name] = item
            else:
                data[name] = encode(item, f"{where} in {kind.__name__}.{name}")
        return {"$dataclass": [path, data]}
    raise SerializationError(
        f"cannot write a {kind.__qualname__} ({short_repr(value)}) {where}: a store holds JSON "
        f"values, tuples, dicts, classes, enums, pydantic models (events) and dataclasses"
    )


_MODELS: dict[type, tuple[str, tuple[str, ...]]] = {}
# class -> its path and how many fields it has, or None: not a plain model
_PLAIN_MODELS: dict[type, tuple[str, int] | None] = {}
_PLAIN_TYPES = (int, str, bool)


def encode_for_json(value: Any, where: str = "") -> Any:
    """Like :func:`encode`, for a value pydantic's JSON serializer writes next.

    A model whose fields are all declared ``int``, ``str`` or ``bool`` (or None of them)
    and hold such values, with no extra field set, is written as its fields' dict as it is
    (``{"$model": [path, fields]}``), which that serializer writes several times faster
    than :func:`encode` walks it: the same JSON. (The dict, not the model: the model's
    own serialization may leave fields out, rename them or add computed ones.)
    """
    kind = type(value)
    plain_model = _PLAIN_MODELS.get(kind, ())
    if plain_model == () and isinstance(value, BaseModel):
        plain_model = _PLAIN_MODELS[kind] = _plain_model(kind, where)
    if plain_model and not value.__pydantic_extra__:
        path, count = plain_model
        fields = value.__dict__
        if len(fields) == count:
            for item in fields.values():  # (a model is not validated when assigned to)
                plain = type(item)
                if plain is not str and plain is not int and plain is not bool and item is not None:
                    return encode(value, where)
            return {"$model": [path, fields]}
    return encode(value, where)


def encode_tick_for_json(tick: object, where: str = "") -> Any:
    """:func:`encode` of ``tick``, for pydantic's JSON serializer to write next.

    The same JSON as :func:`encode` writes. The messages of a :class:`StepCompleted` or
    :class:`EventsSent` (the entry of nearly every hop of an async-mode durable run) go
    through :func:`encode_for_json`; any other value through :func:`encode`.
    """
    if type(tick) is not StepCompleted and type(tick) is not EventsSent:
        return encode(tick, where)
    sent = tick.emitted
    if type(sent) is not tuple:
        return encode(tick, where)
    emitted = []
    try:
        for item in sent:
            if type(item) is not tuple or len(item) != 2:
                return encode(tick, where)
            message, targets = item
            emitted.append(
                {
                    "$tuple": [
                        encode_for_json(message, where),
                        None if targets is None else encode(targets, where),
                    ]
                }
            )
    except SerializationError:  # said again by encode, naming where in the tick it is
        return encode(tick, where)
    at = tick.at
    return {
        "$dataclass": [
            _EMITTING[type(tick)],
            {
                "at": at if type(at) is float and math.isfinite(at) else encode(at, where),
                "invocation": encode(tick.invocation, where),
                "emitted": {"$tuple": emitted},
            },
        ]
    }


_EMITTING = {kind: class_path(kind) for kind in (StepCompleted, EventsSent)}


def _plain_model(kind: type[BaseModel], where: str) -> tuple[str, int] | None:
    """The path and field count of a model class whose fields are all declared plain
    (None: not so)."""
    allowed = {*_PLAIN_TYPES, type(None)}
    for field in kind.model_fields.values():
        annotation = field.annotation
        args = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
        if not args or not all(arg in allowed for arg in args):
            return None
    return class_path(kind, where), len(kind.model_fields)


_DATACLASSES: dict[type, tuple[str, tuple[str, ...]]] = {}  # (path, field names) by class


def _model_info(kind: type[BaseModel], where: str) -> tuple[str, tuple[str, ...]]:
    """A model class's path and field names (worked out once per class)."""
    info = _MODELS.get(kind)
    if info is None:
        info = _MODELS[kind] = (class_path(kind, where), tuple(kind.model_fields))
    return info


def decode(data: Any) -> Any:
    """The value :func:`encode` wrote as ``data``."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if len(data) != 1:
        raise SerializationError(f"unexpected object in a journal: {short_repr(data)}")
    ((tag, body),) = data.items()
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise SerializationError(f"unknown tag {tag!r} in a journal value")
    return decoder(body)


class _Validating(threading.local):
    on = False


_validating = _Validating()


def decode_validated(data: Any) -> Any:
    """Like :func:`decode`, but pydantic models are validated as they are rebuilt.

    Raises:
        SerializationError: a model no longer validates (its class changed since it was
            written); the message names the class and pydantic's complaint.
    """
    before = _validating.on
    _validating.on = True
    try:
        return decode(data)
    finally:
        _validating.on = before


def _model(body: Any) -> Any:
    path, fields = body
    cls = import_class(path)
    values = {name: decode(value) for name, value in fields.items()}
    # a root model is its one value, written as its field "root"
    rooted = isinstance(cls, type) and issubclass(cls, RootModel) and set(values) == {"root"}
    if not _validating.on:
        return cls.model_construct(values["root"]) if rooted else cls.model_construct(**values)
    try:  # by field name, as written (a field with an alias too)
        if rooted:
            return cls.model_validate(values["root"])
        return cls.model_validate(values, by_alias=False, by_name=True)
    except ValidationError as exc:
        kept = None if rooted else _without_unchecked_defaults(cls, values, exc)  # x: int = None
        if kept is not None:
            try:
                return cls.model_validate(kept, by_alias=False, by_name=True)
            except ValidationError:
                pass
        raise SerializationError(
            f"a stored {cls.__qualname__} no longer validates as one: {exc}"
        ) from exc


def _without_unchecked_defaults(
    cls: Any, values: dict[str, Any], error: ValidationError
) -> dict[str, Any] | None:
    """``values`` without the fields ``error`` refused that hold their field's default as
    it is (a default pydantic never checked, as ``x: int = None``), for pydantic to fill in
    again as it did when the model was made; None: no such field."""
    fields = getattr(cls, "model_fields", {})
    refused = {e["loc"][0] for e in error.errors() if e.get("loc")}
    dropped = set()
    for name in refused:
        field = fields.get(name) if isinstance(name, str) else None
        if field is None or name not in values:
            continue
        default = field.default  # (PydanticUndefined: none)
        value = values[name]
        same_type = default is not PydanticUndefined and type(value) is type(default)
        if same_type and (value is default or safely_equal(value, default)):
            dropped.add(name)
    if not dropped or len(dropped) < len(refused):
        return None  # another field is refused too: the stored value no longer fits
    return {k: v for k, v in values.items() if k not in dropped}


def _dataclass(body: Any) -> Any:
    path, fields = body
    cls = import_class(path)
    return cls(**{name: decode(value) for name, value in fields.items()})


def _enum(body: Any) -> Any:
    path, value = body
    return import_class(path)(decode(value))


def _failure(body: Any) -> Failure:
    return Failure(
        type=body["type"],
        message=body["message"],
        notes=tuple(body["notes"]),
        traceback=body["traceback"],
    )


def _order(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


# Values written as one string or number: class -> (tag, write, read).
_SIMPLE: dict[type, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    datetime.datetime: ("$datetime", datetime.datetime.isoformat, datetime.datetime.fromisoformat),
    datetime.date: ("$date", datetime.date.isoformat, datetime.date.fromisoformat),
    datetime.time: ("$time", datetime.time.isoformat, datetime.time.fromisoformat),
    datetime.timedelta: (
        "$timedelta",
        datetime.timedelta.total_seconds,
        lambda seconds: datetime.timedelta(seconds=seconds),
    ),
    uuid.UUID: ("$uuid", str, uuid.UUID),
    decimal.Decimal: ("$decimal", str, decimal.Decimal),
    bytes: ("$bytes", lambda b: base64.b64encode(b).decode("ascii"), base64.b64decode),
    pathlib.PosixPath: ("$path", str, pathlib.Path),
    pathlib.PurePosixPath: ("$purepath", str, pathlib.PurePosixPath),
}

_DECODERS: dict[str, Callable[[Any], Any]] = {
    **{tag: read for tag, _, read in _SIMPLE.values()},
    "$set": lambda body: {decode(item) for item in body},
    "$frozenset": lambda body: frozenset(decode(item) for item in body),
    "$tuple": lambda body: tuple(decode(item) for item in body),
    "$map": lambda body: {decode(k): decode(v) for k, v in body},
    "$float": float,
    "$type": import_class,
    "$enum": _enum,
    "$model": _model,
    "$dataclass": _dataclass,
    "$failure": _failure,
    "$response": lambda body: ResponseMessage(body[0], decode(body[1]), decode(body[2])),
    "$repeat": lambda body: Repeat(import_class(body[0]), body[1]),
}


def _fields(item: Any, skipped: frozenset[str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": item.kind}
    for f in dataclasses.fields(item):
        if f.name not in skipped:
            out[f.name] = encode(getattr(item, f.name), f"{where}.{f.name}")
    return out


def encode_tick(tick: Tick) -> dict[str, Any]:
    """A tick as a JSON object: ``{"kind": ..., <field>: <value>, ...}``."""
    return _fields(tick, frozenset(), f"in tick {tick.kind}")


def encode_command(command: Command) -> dict[str, Any]:
    """A command as a JSON object; a live exception is left out (its failure stays)."""
    return _fields(command, _SKIPPED_COMMAND_FIELDS, f"in command {command.kind}")


def decode_tick(data: dict[str, Any]) -> Tick:
    """The tick :func:`encode_tick` wrote."""
    return _build(_TICKS, data, "tick")  # type: ignore[no-any-return]


def decode_command(data: dict[str, Any]) -> Command:
    """The command :func:`encode_command` wrote (its live exception is not restored)."""
    return _build(_COMMANDS, data, "command")  # type: ignore[no-any-return]


def _build(kinds: dict[str, type], data: dict[str, Any], what: str) -> Any:
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SerializationError(f"unknown {what} kind {kind!r} in a journal")
    try:
        return cls(**{name: decode(value) for name, value in fields.items()})
    except TypeError as exc:
        raise SerializationError(f"malformed {what} {kind!r} in a journal: {exc}") from exc
