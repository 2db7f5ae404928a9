"""Watching runs and task flows: the JSONL event log (and, next, OpenTelemetry spans).

See docs/observability.md.
"""

from __future__ import annotations

from .event_log import EVENT_LOG_SCHEMA, SCHEMA_VERSION, EventLog, read_events

__all__ = ["EVENT_LOG_SCHEMA", "SCHEMA_VERSION", "EventLog", "read_events"]
