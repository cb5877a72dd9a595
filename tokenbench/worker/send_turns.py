"""The requests of one worker process go out a few per turn of its event loop when many are ready at once.

Before Python 3.12 aiohttp writes a request's body from a task of its own, and a new task runs
after every task already ready to run. When many streams send at once (a batch of jobs taken
together, the end of the warm-up, an open-loop burst), the first request's body would wait for all
the others to be prepared (~4 ms for 32 at C=256 on a small machine), inside its measured TTFT.
Taking turns, at most ``SENDS_PER_TURN`` requests are prepared in one turn of the loop and go out
first thing in the next; the wait for a turn comes before a request's clock starts. Measured at
C=256 against the mock (benchmarks/scale.py): a body went out 4.3 ms (p50) after its request's
clock started, 0.6 ms with turns of two. Turns of one (0.2 ms) held a process sending a thousand
short requests a second to one per turn of its loop, and cost 15% more CPU per request.
From Python 3.12 aiohttp writes the body at once, and nobody waits for a turn.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque

BODY_WRITTEN_LATER = sys.version_info < (3, 12)  # aiohttp's body writer is not started eagerly
SENDS_PER_TURN = 2  # the first of a burst waits for at most one other to be prepared (~0.1 ms)


class SendTurns:
    """Lets at most ``per_turn`` requests be sent in one turn of the event loop, first come first served.

    A request prepared in one turn has its body written early in the next, by a task that may come
    after others already ready to run. So only the first turn of a burst is open to whoever asks;
    after it, turns go to the requests waiting, in order, one turn behind the writes, and the turns
    stop (open again) only after one in which nobody was given a turn."""

    def __init__(self, needed: bool = BODY_WRITTEN_LATER, per_turn: int = SENDS_PER_TURN) -> None:
        self._needed = needed
        self._per_turn = per_turn
        self._turns_running = False
        self._open = False  # the first turn of a burst: anyone may take one of its turns
        self._given_this_turn = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        """Until this request may be prepared and sent: at once, or after those that asked before."""
        if not self._needed:
            return
        loop = asyncio.get_running_loop()
        if not self._turns_running:
            self._turns_running = self._open = True
            self._given_this_turn = 1
            loop.call_soon(self._next_turn, loop)
            return
        if self._open and self._given_this_turn < self._per_turn and not self._waiting:
            self._given_this_turn += 1
            return
        turn = loop.create_future()
        self._waiting.append(turn)
        await turn

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the loop's next turn (where the last turn's bodies are written): the turns go to the
        requests still waiting, in order; after a turn with none given, the turns stop."""
        gave_last_turn = self._given_this_turn > 0
        self._open = False
        self._given_this_turn = 0
        while self._waiting and self._given_this_turn < self._per_turn:
            turn = self._waiting.popleft()
            if not turn.done():  # not cancelled while it waited
                turn.set_result(None)
                self._given_this_turn += 1
        if self._given_this_turn or gave_last_turn:
            loop.call_soon(self._next_turn, loop)
        else:
            self._turns_running = False
