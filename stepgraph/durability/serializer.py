"""Serializers, and the envelope every stored frame, chunk and journal entry is wrapped in.

Two serializers:

- ``"json"`` (the default): JSON through the journal codec, which writes events (pydantic
  models) with their class, and validates them with pydantic when it reads them back;
- ``"pickle"``: Python's pickle, for values JSON cannot hold. **Unsafe with a store others
  can write to**: loading a pickle runs code it names.

Every reader says which serializer it trusts (its workflow's): JSON is read by all, a
pickle only by a reader that trusts pickle. So a workflow on JSON never unpickles, even a
record someone wrote into its store with the pickle byte set.

The envelope makes corruption detectable: ``magic (4 bytes) | format version (2) |
serializer (1) | CRC-32 of the payload (4) | payload``. :func:`unwrap` checks each part
and raises :class:`ValueError` saying which is wrong (the caller names the run and the
checkpoint). The CRC-32 catches every flipped bit, even inside a string, every burst of up
to 32 bits and all but one in four billion other changes; it costs a tenth of a SHA-256,
on every checkpoint. (It guards against accidents, not against someone who rewrites the
store on purpose: they can compute a checksum as well as stepgraph.)
"""

from __future__ import annotations

import pickle
import zlib
from typing import Any, Protocol

from pydantic_core import from_json, to_json

from ..errors import SerializationError
from ..journal.codec import decode_validated, encode_for_json, encode_tick_for_json

__all__ = [
    "FORMAT_VERSION",
    "JSON",
    "JsonSerializer",
    "PickleSerializer",
    "Serializer",
    "serializer_named",
    "unwrap",
    "wrap",
    "written_with",
]

FORMAT_VERSION = 1
"""The version of the stored format this stepgraph writes and reads."""

_MAGIC = b"SGv\x01"
_HEADER = len(_MAGIC) + 2 + 1 + 4
_VERSION = FORMAT_VERSION.to_bytes(2, "big")
_CODES = {code: code.to_bytes(1, "big") for code in range(256)}
_PREFIXES = {code: _MAGIC + _VERSION + byte for code, byte in _CODES.items()}  # (per record)


class Serializer(Protocol):
    """Turns values into bytes and back (what stores keep)."""

    name: str
    code: int  # its byte in the envelope

    def dumps(self, value: Any, where: str) -> bytes:
        """``value`` as bytes; ``where`` says what it is, for the error message.

        Raises:
            SerializationError: the value cannot be written.
        """
        ...

    def loads(self, data: bytes) -> Any:
        """The value :meth:`dumps` wrote (validated where the serializer can)."""
        ...

    def dump_frame(self, frame: dict[str, Any], objects: list[object]) -> bytes:
        """A frame (JSON-native values) and its object table (any values) as bytes."""
        ...

    def load_frame(self, data: bytes) -> tuple[Any, list[object]]:
        """The frame and object table :meth:`dump_frame` wrote."""
        ...


class JsonSerializer:
    """JSON through the journal codec (events keep their class; validated when read).

    The JSON text itself is written and read by pydantic's JSON core (several times
    faster than the standard library's, which counts on every checkpoint).
    """

    name = "json"
    code = 0

    def dumps(self, value: Any, where: str) -> bytes:
        return _json(encode_tick_for_json(value, where), where)

    def loads(self, data: bytes) -> Any:
        return decode_validated(from_json(data))

    def dump_frame(self, frame: dict[str, Any], objects: list[object]) -> bytes:
        table = [encode_for_json(value, "in a checkpoint") for value in objects]
        return _json([frame, table], "in a checkpoint")

    def load_frame(self, data: bytes) -> tuple[Any, list[object]]:
        content = from_json(data)
        if not isinstance(content, list) or len(content) != 2 or not isinstance(content[1], list):
            raise ValueError("its content is not a frame and an object table")
        return content[0], [decode_validated(item) for item in content[1]]


def _json(encoded: Any, where: str) -> bytes:
    """``encoded`` (JSON values) as JSON text.

    Raises:
        SerializationError: a str holds what UTF-8 cannot (a lone surrogate, as a file
            name read with ``os.fsdecode`` may).
    """
    try:
        return to_json(encoded)
    except ValueError as exc:
        detail = " ".join(str(exc).split())
        if "surrogate" in detail:
            detail = f"a str holds what UTF-8 cannot (a lone surrogate): {detail}"
        raise SerializationError(f"cannot write a value {where}: {detail}") from exc


class PickleSerializer:
    """Python's pickle: any picklable value. Loading a pickle runs code: trust the store."""

    name = "pickle"
    code = 1

    def dumps(self, value: Any, where: str) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"cannot pickle {where}: {type(exc).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # the user chose pickle: a store only they write to

    def dump_frame(self, frame: dict[str, Any], objects: list[object]) -> bytes:
        return self.dumps((frame, objects), "a checkpoint")

    def load_frame(self, data: bytes) -> tuple[Any, list[object]]:
        content = self.loads(data)
        if not isinstance(content, tuple) or len(content) != 2 or not isinstance(content[1], list):
            raise ValueError("its content is not a frame and an object table")
        frame, objects = content
        return frame, objects


_SERIALIZERS: dict[str, Serializer] = {"json": JsonSerializer(), "pickle": PickleSerializer()}
_BY_CODE: dict[int, Serializer] = {s.code: s for s in _SERIALIZERS.values()}

JSON: Serializer = _SERIALIZERS["json"]
"""The default serializer, which every reader trusts."""


def serializer_named(name: str) -> Serializer:
    """The serializer called ``name`` (``"json"`` or ``"pickle"``).

    Raises:
        ValueError: no serializer has that name.
    """
    found = _SERIALIZERS.get(name)
    if found is None:
        raise ValueError(f"serializer must be 'json' or 'pickle', got {name!r}")
    return found


def wrap(serializer: Serializer, *parts: bytes) -> bytes:
    """The payload ``parts`` (joined) in its envelope (version, serializer, checksum)."""
    prefix = _PREFIXES[serializer.code]
    if len(parts) == 1:  # (a journal entry, a chunk: every hop's)
        (part,) = parts
        return b"".join((prefix, zlib.crc32(part).to_bytes(4, "big"), part))
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join((prefix, crc.to_bytes(4, "big"), *parts))


def written_with(data: bytes) -> Serializer:
    """The serializer an envelope names (nothing is loaded, nothing trusted).

    Raises:
        ValueError: not an envelope, another format version, or an unknown serializer.
    """
    if len(data) < _HEADER or data[: len(_MAGIC)] != _MAGIC:
        raise ValueError("it is not a stepgraph record (its header is missing or damaged)")
    version = int.from_bytes(data[4:6], "big")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"it has format version {version}; this stepgraph reads version {FORMAT_VERSION}"
        )
    serializer = _BY_CODE.get(data[6])
    if serializer is None:
        raise ValueError(f"it names an unknown serializer (code {data[6]})")
    return serializer


def unwrap(data: bytes, trusted: Serializer) -> tuple[Serializer, bytes]:
    """The serializer and payload of an envelope, for a reader that trusts ``trusted`` (its
    workflow's serializer; JSON is trusted by every reader).

    Raises:
        ValueError: not an envelope, another format version (the message says
            "version"), an unknown serializer, one the reader does not trust (a pickle
            read by a JSON reader), or a checksum that does not match.
    """
    serializer = written_with(data)
    if serializer is not trusted and serializer is not JSON:
        raise ValueError(
            f"it was written with {serializer.name}, which this reader does not load "
            f"(loading a pickle runs code): read it with serializer={serializer.name!r}, "
            f"from a store only you write to"
        )
    payload = data[_HEADER:]
    if zlib.crc32(payload).to_bytes(4, "big") != data[7:_HEADER]:
        raise ValueError("its checksum does not match its content (the bytes were changed)")
    return serializer, payload
