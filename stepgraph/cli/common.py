"""What every command shares: exit codes, the usage error, parsing ``KEY=VALUE`` and printing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import datetime
from typing import Any, NoReturn

from pydantic import BaseModel

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PAUSED",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "fail",
    "format_value",
    "parse_pairs",
    "parse_value",
    "say",
    "stamp",
]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILED = 1
"""The run failed (its step and error are printed)."""
EXIT_USAGE = 2
"""Bad usage: an unknown module, attribute, run or checkpoint, a malformed option, a store
that cannot be opened, a refused operation."""
EXIT_PAUSED = 3
"""The run paused, waiting for input nobody gave (``--respond``); it is resumable."""


class CommandError(Exception):
    """Ends the command with ``code`` and one line on stderr (no traceback)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """Bad usage (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def fail(message: str) -> NoReturn:
    """Raise a :class:`UsageError`."""
    raise UsageError(message)


def check_event_log(path: str | None) -> None:
    """Refuse (bad usage) an ``--event-log`` PATH that cannot be appended to, before
    anything runs (its folder is made, as the log would make it)."""
    if path is None:
        return
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        fail(f"--event-log {path!r}: cannot append to it ({exc.strerror or exc})")


def parse_value(text: str) -> Any:
    """``text`` as JSON when it parses as JSON, else the string itself.

    ``42`` is the int 42, ``true`` is True, ``[1, 2]`` a list, ``"42"`` (quotes included)
    the string "42", and ``Ada`` (not JSON) the string "Ada".
    """
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict, each value by :func:`parse_value`.

    Raises:
        UsageError: an item without ``=``, with an empty key, or a key given twice.
    """
    found: dict[str, Any] = {}
    for item in pairs or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"malformed {option} {item!r}: expected KEY=VALUE (VALUE is JSON or a string)")
        if key in found:
            fail(f"{option} {key!r} is given twice")
        found[key] = parse_value(value)
    return found


def format_value(value: Any) -> str:
    """``value`` as strict JSON when it serializes (a pydantic model, an event: its
    fields, wherever it is in ``value``), else its ``repr`` (NaN and infinities are not
    JSON: a repr too)."""
    try:
        return json.dumps(value, allow_nan=False, default=_fields)
    except (TypeError, ValueError):
        return repr(value)


def _fields(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    raise TypeError(f"{type(value).__name__} is not JSON")


def stamp(moment: datetime | float) -> str:
    """A time for people: local time, to the millisecond, with its date (a number no
    date can be, as it is)."""
    if not isinstance(moment, datetime):
        try:
            moment = datetime.fromtimestamp(moment)
        except (OverflowError, ValueError, OSError):  # 1e300, NaN: written by hand, say
            return f"(time {moment!r})"
    else:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def say(message: str) -> None:
    """One line on stderr, flushed; nothing when nobody reads it any more (a log pipe
    whose reader died): what the command does next must not fail on it."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # its reader is gone; a closed stream
        with contextlib.suppress(OSError, ValueError):  # what is left goes nowhere, also
            devnull = os.open(os.devnull, os.O_WRONLY)  # at exit (no failed flush then)
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)
