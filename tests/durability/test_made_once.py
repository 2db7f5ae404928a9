"""What a durable run derives from its workflow is made once, and is the same as made anew.

A run's checkpoint header (the workflow's fingerprint above all) is the same for every
run of a workflow but its request prefix: ``HeaderCodec`` works it out once per plan,
serializer and bounds, and its bytes must be those ``encode_header`` makes, whatever the
prefix. A workflow given a name makes its plan under that name once, not at each run.
``read_frame`` given the bytes of the header a checkpoint is expected to have skips
reading a header that has them (and says so with None), and returns the same frame.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from stepgraph.durability.checkpoints import HeaderCodec, encode_header, read_frame
from stepgraph.durability.run import _headers, source_of
from stepgraph.durability.serializer import serializer_named
from stepgraph.stores import MemoryStore
from tests.distributed.flows import Three

_PLAN = Three()._stepgraph_plan()
_OPTIONS = Three().options
_PREFIXES = st.text() | st.sampled_from(["", '"', "\\", "\x00request prefix\x00", "é\u2028"])


@given(prefix=_PREFIXES, serializer=st.sampled_from(["json", "pickle"]))
def test_a_header_made_from_the_plans_template_is_the_one_made_anew(
    prefix: str, serializer: str
) -> None:
    ser = serializer_named(serializer)
    codec = HeaderCodec(_PLAN.name, _PLAN.graph, _PLAN.programs, ser)
    header = codec.of(prefix)
    assert header.request_prefix == prefix
    assert header.workflow == _PLAN.name
    assert codec.encode(prefix) == encode_header(header, ser)


def test_a_plan_makes_its_header_codec_once_per_serializer_and_bounds() -> None:
    json_codec = _headers(_PLAN, serializer_named("json"), "", _OPTIONS)
    assert _headers(_PLAN, serializer_named("json"), "", _OPTIONS) is json_codec
    assert _headers(_PLAN, serializer_named("pickle"), "", _OPTIONS) is not json_codec
    bounded = dataclasses.replace(_OPTIONS, max_concurrency=2)
    other = _headers(_PLAN, serializer_named("json"), "", bounded)
    assert other.template.bounds is not None and other.template.bounds.max_concurrency == 2
    assert json_codec.template.bounds is not None
    assert json_codec.template.bounds.max_concurrency is None
    copy = dataclasses.replace(_PLAN, name="Other")
    assert copy.derived == {}
    assert _headers(copy, serializer_named("json"), "", _OPTIONS).template.workflow == "Other"


def test_a_named_workflow_makes_its_plan_once() -> None:
    plan = Three(name="Named")._placed(Three._compiled())
    assert plan.name == "Named" and plan.graph.name == "Named"
    assert Three(name="Named")._placed(Three._compiled()) is plan
    assert Three(name="Other")._placed(Three._compiled()).name == "Other"
    assert Three()._placed(Three._compiled()) is Three._compiled().plan


async def test_reading_a_checkpoint_with_the_header_it_has_gives_what_reading_it_without_does() -> (
    None
):
    store = MemoryStore()
    wf = Three(store=store)
    run_id = await wf.submit()
    stored = await store.load(run_id, None)
    assert stored is not None
    codec = _headers(_PLAN, serializer_named("json"), source_of(wf), _OPTIONS)
    assert codec.template.source == f"{Three.__module__}:Three"  # kept with its runs
    plain = read_frame(stored.frame, run_id=run_id, checkpoint_id=stored.info.id)
    assert plain[0] == codec.of(run_id)
    fast = read_frame(
        stored.frame, run_id=run_id, checkpoint_id=stored.info.id, expected=codec.encode(run_id)
    )
    assert fast[0] is None  # the stored header is the one expected: not read again
    assert fast[1] == plain[1]
    assert [type(o) for o in fast[2]] == [type(o) for o in plain[2]]
    other = read_frame(
        stored.frame,
        run_id=run_id,
        checkpoint_id=stored.info.id,
        expected=codec.encode("another prefix"),
    )
    assert other[0] == plain[0]  # another header expected: the stored one is read
    assert other[1] == plain[1]
