"""The journal codec: values come back as themselves; what cannot be written says so.

Every value a tick can carry (events, plain Python messages of executor graphs, classes,
failures, answers to requests, and the usual standard-library values) is written as JSON
and read back equal and of the same type. A value the codec cannot write raises
``SerializationError`` naming its type and where it was found; so does a class defined
inside a function (nothing could import it back) and a malformed journal value.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import pathlib
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from pydantic import (
    Field,
    PlainSerializer,
    RootModel,
    computed_field,
    field_serializer,
    model_serializer,
)
from pydantic_core import to_json

from stepgraph import Event, HumanResponseEvent, StartEvent
from stepgraph.core import (
    EventsSent,
    Failure,
    ResponseMessage,
    StepCompleted,
    TimerFired,
    WaitStarted,
)
from stepgraph.errors import SerializationError
from stepgraph.journal import decode, encode
from stepgraph.journal.codec import (
    decode_tick,
    decode_validated,
    encode_tick,
    encode_tick_for_json,
)


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Order(Event):
    placed: datetime.datetime
    amount: decimal.Decimal
    id: uuid.UUID
    tags: frozenset[str]
    raw: bytes
    where: pathlib.Path


VALUES: list[Any] = [
    None,
    True,
    3,
    2.5,
    float("inf"),
    "text",
    [1, "a", None],
    (1, (2, 3)),
    {"a": 1, 2: "b", (1, 2): [3]},
    {1, 2, 3},
    frozenset({"x"}),
    b"\x00\xffbytes",
    datetime.datetime(2026, 12, 6, 9, 30, tzinfo=datetime.UTC),
    datetime.date(2026, 12, 6),
    datetime.time(9, 30, 15),
    datetime.timedelta(minutes=90),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("19.99"),
    pathlib.Path("runs/events.jsonl"),
    pathlib.PurePosixPath("/srv/shared/input.csv"),  # (not a Path: it comes back as itself)
    Color.RED,
    Point(1, 2),
    StartEvent(topic="tides", times=2),
    HumanResponseEvent(response="Ada"),
    Order(
        placed=datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC),
        amount=decimal.Decimal("1.50"),
        id=uuid.UUID(int=7),
        tags=frozenset({"a", "b"}),
        raw=b"\x01",
        where=pathlib.Path("/srv/x"),
    ),
    ResponseMessage("r-1", {"q": 1}, 42),
    Failure(type="builtins.ValueError", message="bad", notes=("a note",), traceback="tb"),
    Event,
    int,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_value_written_to_a_journal_reads_back_equal_and_of_the_same_type(value: Any) -> None:
    data = json.loads(json.dumps(encode(value)))  # through real JSON text
    back = decode(data)
    assert back == value
    assert type(back) is type(value)


def test_ticks_read_back_equal_their_originals() -> None:
    ticks = [
        StepCompleted(invocation=3, emitted=((Point(1, 2), None), ("text", (1, 2))), at=12.5),
        WaitStarted(invocation=1, types=(HumanResponseEvent,), requirements={"x": 1}, timeout=5),
        TimerFired(timer="retry:3", at=99.0),
    ]
    for tick in ticks:
        assert decode_tick(json.loads(json.dumps(encode_tick(tick)))) == tick


class Excluded(Event):
    a: int = 1
    secret: str = Field(default="s", exclude=True)


class Computed(Event):
    a: int = 1

    @computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return self.a * 2


class FieldSerialized(Event):
    a: int = 1

    @field_serializer("a")
    def _text(self, value: int) -> str:
        return str(value)


class ModelSerialized(Event):
    a: int = 1

    @model_serializer
    def _whole(self) -> dict[str, int]:
        return {"whole": self.a}


class Scaled(Event):
    a: Annotated[int, PlainSerializer(lambda v: v * 10)] = 1


class Renamed(Event):
    a: int = Field(default=1, serialization_alias="A")


class Word(enum.StrEnum):
    RED = "red"


class Plain(Event):
    a: int = 0
    s: str = ""


def assigned(**fields: object) -> Plain:
    """A plain event with values set after validation (an event is not validated then)."""
    event = Plain()
    for name, value in fields.items():
        setattr(event, name, value)
    return event


# events whose fields are all declared plain, written otherwise than their fields' values;
# (event, whether it reads back: a value its field's type forbids is refused when read)
UNPLAIN_EVENTS: list[tuple[Any, bool]] = [
    (Excluded(secret="kept"), True),
    (Computed(a=2), True),
    (FieldSerialized(a=3), True),
    (ModelSerialized(a=4), True),
    (Scaled(a=5), True),
    (Renamed(a=6), True),
    (Plain(s=Word.RED), True),
    (Plain.model_construct(s=Word.RED, a=7), True),
    (assigned(a=(1, 2)), False),
    (assigned(a=float("nan")), False),
    (assigned(s=Plain()), False),
]


@pytest.mark.parametrize(("event", "readable"), UNPLAIN_EVENTS, ids=lambda e: type(e).__name__)
def test_an_event_goes_into_a_journal_entry_as_its_fields_whatever_it_serializes_as(
    event: Any, readable: bool
) -> None:
    tick = StepCompleted(invocation=1, emitted=((event, None),), at=1.0)
    fast = to_json(encode_tick_for_json(tick, "here"))
    assert fast == to_json(encode(tick, "here"))
    if readable:
        back = decode_validated(json.loads(fast))  # as a journal entry is read
        ((again, _),) = back.emitted
        assert type(again) is type(event) and again.__dict__ == event.__dict__


@pytest.mark.parametrize(
    "tick",
    [
        StepCompleted(invocation=3, emitted=((StartEvent(topic="t"), None),), at=12.5),
        StepCompleted(invocation=4, emitted=(), at=float("nan")),
        EventsSent(invocation=5, emitted=((HumanResponseEvent(response="a"), (1, 2)),)),
        EventsSent(invocation=6, emitted=((Point(1, 2), None), ("text", (3,)))),
        StepCompleted(invocation=7, emitted=[(StartEvent(), None)]),  # type: ignore[arg-type]
        StepCompleted(invocation=8, emitted=([StartEvent(), None],)),  # type: ignore[arg-type]
        TimerFired(timer="retry:3", at=99.0),
        Point(1, 2),
    ],
    ids=lambda t: type(t).__name__,
)
def test_the_fast_encoding_of_a_tick_writes_the_same_json_as_encode(tick: Any) -> None:
    assert to_json(encode_tick_for_json(tick, "here")) == to_json(encode(tick, "here"))


class Opaque:
    """Not JSON, not a model, not a dataclass."""


def test_a_value_the_codec_cannot_write_names_its_type_and_where_it_was() -> None:
    with pytest.raises(SerializationError, match=r"Opaque.*in tick step_completed\.emitted"):
        encode_tick(StepCompleted(invocation=0, emitted=((Opaque(), None),)))


def test_a_class_defined_inside_a_function_cannot_be_written_and_the_error_says_why() -> None:
    class Local(Event):
        pass

    with pytest.raises(SerializationError, match=r"Local.*inside a function.*module level"):
        encode(Local())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"$nope": 1}, "unknown tag"),
        ({"$type": "no.such.module:Thing"}, "cannot import"),
        ({"a": 1, "b": 2}, "unexpected object"),
    ],
)
def test_a_malformed_journal_value_raises_serialization_error(data: Any, match: str) -> None:
    with pytest.raises(SerializationError, match=match):
        decode(data)


@pytest.mark.parametrize(
    "event", [e for e, readable in UNPLAIN_EVENTS if readable], ids=lambda e: type(e).__name__
)
def test_an_event_in_a_checkpoints_object_table_comes_back_with_its_fields(event: Any) -> None:
    from stepgraph.durability.serializer import JSON

    frame, objects = JSON.load_frame(JSON.dump_frame({"run_id": "r"}, [event]))
    assert frame == {"run_id": "r"}
    (again,) = objects
    assert type(again) is type(event) and again.__dict__ == event.__dict__


class AliasedOnly(Event):
    x: int = Field(0, alias="X")


class LooseDefault(Event):
    x: int = None  # type: ignore[assignment]  # pydantic does not check a default


class LooseBeside(Event):
    x: int = None  # type: ignore[assignment]
    flag: Any = 0


@pytest.mark.parametrize(
    "event",
    [AliasedOnly(X=5), LooseDefault(), LooseDefault(x=3), LooseBeside(flag=False)],
    ids=lambda e: repr(e),
)
def test_an_event_with_an_alias_or_an_unchecked_default_reads_back_equal(event: Any) -> None:
    back = decode_validated(json.loads(json.dumps(encode(event))))
    assert type(back) is type(event) and back.__dict__ == event.__dict__
    assert [type(v) for v in back.__dict__.values()] == [type(v) for v in event.__dict__.values()]


class Numbers(RootModel[list[int]]):
    pass


def test_a_root_model_reads_back_as_itself() -> None:
    value = Numbers([1, 2])
    back = decode_validated(json.loads(json.dumps(encode(value))))
    assert type(back) is Numbers and back.root == [1, 2]
    assert decode(json.loads(json.dumps(encode(value)))) == value
