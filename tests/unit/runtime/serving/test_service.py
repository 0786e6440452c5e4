"""How the service hands the scheduler's events to the event loop and joins those not taken yet."""

from __future__ import annotations

import asyncio

from kubellm.runtime.serving.batching import SequenceEvent
from kubellm.runtime.serving.service import _joined, _Mailbox, _Queue


def test_a_burst_of_events_reaches_each_request_as_one_list() -> None:
    async def burst() -> tuple[list[list[tuple[int, SequenceEvent]]], ...]:
        mailbox = _Mailbox(asyncio.get_running_loop())
        first: _Queue = asyncio.Queue()
        second: _Queue = asyncio.Queue()
        sinks = [mailbox.sink(first, 0), mailbox.sink(first, 1), mailbox.sink(second, 0)]
        for step in range(3):
            for sink in sinks:
                sink(SequenceEvent(str(step), step + 1))
        await asyncio.sleep(0)  # the one delivery scheduled by the first event runs
        return tuple([queue.get_nowait() for _ in range(queue.qsize())] for queue in (first, second))

    first, second = asyncio.run(burst())
    assert len(first) == len(second) == 1
    assert [(index, event.text) for index, event in first[0]] == [
        (0, "0"),
        (1, "0"),
        (0, "1"),
        (1, "1"),
        (0, "2"),
        (1, "2"),
    ]


def test_events_not_taken_yet_are_joined_per_choice() -> None:
    arrived = [
        (0, SequenceEvent("a", 1)),
        (1, SequenceEvent("x", 1)),
        (0, SequenceEvent("b", 2)),
        (0, SequenceEvent("c", 3, "length")),
    ]
    assert _joined(arrived) == [(0, SequenceEvent("abc", 3, "length")), (1, SequenceEvent("x", 1))]
    assert _joined(arrived[:2]) == arrived[:2]
