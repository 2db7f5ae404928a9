"""Watching runs and task flows: OpenTelemetry spans, and the JSONL event log.

See docs/observability.md.
"""

from __future__ import annotations

from .event_log import EVENT_LOG_SCHEMA, SCHEMA_VERSION, EventLog, read_events
from .plot import plot_timeline, read_timeline, timeline_figure
from .tracing import configure, reset

__all__ = [
    "EVENT_LOG_SCHEMA",
    "SCHEMA_VERSION",
    "EventLog",
    "configure",
    "plot_timeline",
    "read_events",
    "read_timeline",
    "reset",
    "timeline_figure",
]
