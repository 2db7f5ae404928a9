"""Failures as data: what a journal, a snapshot or another process keeps of an exception.

A :class:`Failure` holds an error's type name, message, notes and traceback text, which
serialize and compare by value. Where the error happened in this process, the live
exception rides along (``exception``) so that the caller still gets the very object the
step raised; it is never compared, serialized or needed by the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecordedError
from .text import error_text, storable_text

__all__ = ["Failure"]


@dataclass(slots=True, kw_only=True)
class Failure:
    """An error as data.

    Attributes:
        type: the exception's class, as ``module.QualifiedName``.
        message: ``str()`` of the exception (what UTF-8 cannot hold, escaped).
        notes: its ``__notes__`` (``add_note``), in order.
        traceback: the formatted traceback, when the shell captured one.
        exception: the live exception, where the failure happened in this process.
    """

    type: str
    message: str
    notes: tuple[str, ...] = ()
    traceback: str = ""
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_error(cls, error: BaseException, traceback: str = "") -> Failure:
        """The failure of ``error`` (its traceback text is the caller's to give); of a
        :class:`RecordedError`, the failure it records."""
        kind = type(error)
        path = f"{kind.__module__}.{kind.__qualname__}"
        message = error_text(error)
        if isinstance(error, RecordedError) and error.type:  # the error it records
            path, message = error.type, error.message
            traceback = error.traceback or traceback  # (where it was raised)
        return cls(  # (its text is written as data: storable_text)
            type=path,
            message=storable_text(message),
            notes=tuple(storable_text(str(note)) for note in getattr(error, "__notes__", ())),
            traceback=storable_text(traceback),
            exception=error,
        )

    @property
    def type_name(self) -> str:
        """The exception class's short name (``ValueError``)."""
        return self.type.rpartition(".")[2]

    @property
    def error(self) -> BaseException:
        """The live exception, or a :class:`RecordedError` rebuilt from the record."""
        if self.exception is not None:
            return self.exception
        error = RecordedError(
            f"{self.type_name}: {self.message}" if self.message else self.type_name,
            type=self.type,
            message=self.message,
            traceback=self.traceback,
        )
        for note in self.notes:
            error.add_note(note)
        return error
