"""Suite-wide checks: every event-log record any test writes matches the shipped schema."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stepgraph.telemetry import EVENT_LOG_SCHEMA, EventLog

_VALIDATOR = jsonschema.Draft202012Validator(json.loads(Path(EVENT_LOG_SCHEMA).read_text()))
_write = EventLog.write


def _validated_write(self: EventLog, record: Mapping[str, Any]) -> None:
    line = json.loads(json.dumps(record, default=repr))  # what the line will hold
    if line.get("kind") != "load":  # the log's own load tests write records of their own
        _VALIDATOR.validate(line)
    _write(self, record)


@pytest.fixture(autouse=True, scope="session")
def _event_log_records_match_the_schema() -> Iterator[None]:
    EventLog.write = _validated_write  # type: ignore[method-assign]
    try:
        yield
    finally:
        EventLog.write = _write  # type: ignore[method-assign]
