"""``stepgraph events tail`` reads a log's last records from its end: the same records as
reading the whole log, whatever the lines, their lengths and the size of the reads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepgraph.cli.events import last_records
from stepgraph.telemetry import read_events

_RECORD = st.builds(
    lambda kind, n, pad: {"kind": kind, "n": n, "pad": pad},
    st.sampled_from(["step_started", "run_completed"]),
    st.integers(0, 10**6),
    st.text(max_size=30),
).map(lambda r: json.dumps(r).encode())
_NOISE = st.sampled_from([b"", b"[1, 2]", b'{"no": "kind"}', b'{"kind": "step_sta', b"not json"])
_LINES = st.lists(st.one_of(_RECORD, _RECORD, _NOISE), max_size=40)


@settings(max_examples=200, deadline=None)
@given(lines=_LINES, ends_with_newline=st.booleans(), count=st.integers(0, 45),
       block=st.integers(1, 64))  # fmt: skip
def test_the_last_records_are_those_of_the_whole_log(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    ends_with_newline: bool,
    count: int,
    block: int,
) -> None:
    path = tmp_path_factory.mktemp("tail") / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if ends_with_newline and lines else b""))
    whole = [r for r in read_events(path) if isinstance(r.get("kind"), str)]
    assert last_records(path, count, block) == (whole[-count:] if count else [])
