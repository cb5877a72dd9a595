"""The worker's turns to send: a few requests per turn of the event loop, in the order they asked,
and a request cancelled while it waits never holds the others up."""

from __future__ import annotations

import asyncio
from collections import Counter

from tokenbench.worker.send_turns import SendTurns


class LoopTurns:
    """Counts the event loop's turns: a callback that schedules itself again runs once per turn."""

    def __init__(self) -> None:
        self.count = 0
        self._running = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        if self._running:
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._running = False


async def turns_taken(turns: SendTurns, requests: int, cancel: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
    """(request, loop turn) as each request gets its turn; ``cancel``: requests cancelled while waiting."""
    loop_turns = LoopTurns()
    taken: list[tuple[int, int]] = []

    async def request(number: int) -> None:
        await turns.take()
        taken.append((number, loop_turns.count))

    tasks = [asyncio.create_task(request(n)) for n in range(requests)]
    await asyncio.sleep(0)  # every request has asked for its turn
    for number in cancel:
        tasks[number].cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    loop_turns.stop()
    return taken


def test_requests_asking_at_once_get_their_turns_in_order_a_few_per_loop_turn():
    taken = asyncio.run(turns_taken(SendTurns(needed=True, per_turn=2), 7))
    assert [number for number, _ in taken] == list(range(7))
    loop_turns = [at for _, at in taken]
    assert loop_turns == sorted(loop_turns) and Counter(loop_turns).most_common(1)[0][1] == 2


def test_a_request_cancelled_while_it_waits_is_passed_over():
    taken = asyncio.run(turns_taken(SendTurns(needed=True, per_turn=1), 5, cancel=frozenset({1, 3})))
    assert [number for number, _ in taken] == [0, 2, 4]


def test_the_turn_is_free_again_once_nobody_waits():
    async def main() -> list[tuple[int, int]]:
        turns = SendTurns(needed=True, per_turn=1)
        await turns_taken(turns, 3)
        return await turns_taken(turns, 2)

    assert [number for number, _ in asyncio.run(main())] == [0, 1]


def test_where_aiohttp_writes_the_body_at_once_nobody_waits():
    taken = asyncio.run(turns_taken(SendTurns(needed=False), 6))
    assert len({at for _, at in taken}) == 1  # all in the same turn of the loop



def test_a_request_that_asks_after_a_turn_was_given_goes_out_after_that_request_s_body():
    """A request prepared in one turn has its body written in the next, by a task that may run after
    a new request's first step: that new request waits (it would be prepared before the body went)."""
    async def main() -> list[tuple[str, str]]:
        turns = SendTurns(needed=True, per_turn=2)
        events: list[tuple[str, str]] = []
        tasks: list[asyncio.Task[None]] = []

        async def write(name: str) -> None:
            events.append(("sent", name))

        async def request(name: str, then_ask: str | None = None) -> None:
            await turns.take()
            events.append(("prepared", name))
            if then_ask:  # a stream ends just now: its next request's task starts before this body's writer
                tasks.append(asyncio.create_task(request(then_ask)))
            tasks.append(asyncio.create_task(write(name)))

        await request("first", then_ask="next")
        while not all(task.done() for task in tasks):
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        return events

    events = asyncio.run(main())
    assert events.index(("sent", "first")) < events.index(("prepared", "next")), events
