"""Frames: what a checkpoint keeps of the kernel's state comes back as it was."""

from __future__ import annotations

from stepgraph.core import InputRequested
from stepgraph.core.state import Mode
from stepgraph.durability.checkpoints import encode_frame, read_frame, restore_state
from stepgraph.durability.serializer import JSON
from tests.kernel_harness import KernelHarness
from tests.unit.test_kernel import Answer, Ask, Go, make_graph


def _round_trip(h: KernelHarness) -> KernelHarness:
    """A harness on the state ``h``'s would be restored as from a checkpoint."""
    header = b"\0\0\0\2{}"  # (not read: it is the one expected)
    data = encode_frame(h.state, header, JSON)
    _, frame, objects = read_frame(data, run_id="run-1", checkpoint_id="run-1:0", expected=header)
    restored = restore_state(
        frame, objects, {}, h.graph, drop=False, run_id="run-1", checkpoint_id="run-1:0"
    )
    again = KernelHarness(h.graph, mode=h.state.mode)
    again.state = restored.state
    return again


def test_an_answer_kept_for_the_step_that_asked_it_is_kept_for_it_after_a_restore() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))), mode=Mode.ASYNC)
    h.start(Go())
    a, b = h.only("a"), h.only("b")
    h.feed(InputRequested(invocation=a, event=Ask("a?")))
    h.feed(InputRequested(invocation=b, event=Ask("b?")))
    h.wait(b, Answer)
    h.external(Answer("for a"))  # a's, kept until a waits for it
    again = _round_trip(h)
    assert again.state.snapshot() == h.state.snapshot()
    assert again.state.input_askers == {"input-1": a, "input-2": b}
    assert list(again.state.unclaimed) == [Answer("for a")]


def test_an_input_requests_integer_id_comes_back_an_integer() -> None:
    h = KernelHarness(make_graph(("a", (Go,))), mode=Mode.ASYNC)
    h.start(Go())
    request = Ask("n?")
    object.__setattr__(request, "request_id", 7)
    h.feed(InputRequested(invocation=h.only("a"), event=request))
    again = _round_trip(h)
    assert list(again.state.inputs) == [7] and list(again.state.input_askers) == [7]
