"""A conversation's turns, sent in order on one stream by the one job that holds them.

Each turn's request carries the whole history: the earlier user turns and the model's *actual*
answers, as this worker received them, so the history never travels through Redis and no two
turns of a session can run at once. Before each turn after the first, one round trip marks it in
flight (the aggregator settles it if this process dies) and asks whether the run was cancelled.

A turn that fails ends its conversation: the model's answer is missing, so the turns after it are
not sent and each gets a ``previous_turn_failed`` record. Every turn has a record, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tokenbench.shared.record_store import InFlight, mark_in_flight
from tokenbench.shared.records import JobSpec, RecordContext, RequestRecord
from tokenbench.worker import clock
from tokenbench.worker.job import WorkerProcess, run_end, run_job
from tokenbench.worker.measure import Answer, HeaderWaits, measure_request


def next_messages(history: list[dict[str, Any]], answer: str, user_turn: str) -> list[dict[str, Any]]:
    """The messages of the next turn: the history, the model's answer to it, the user's next words."""
    return [*history, {"role": "assistant", "content": answer}, {"role": "user", "content": user_turn}]


class Conversation:
    """Runs one conversation job; ``current`` is the spec of the turn in flight (or last sent)."""

    def __init__(self, process: WorkerProcess, spec: JobSpec, job_id: str, header_waits: HeaderWaits | None,
                 save_turn: Callable[[RequestRecord], None], stream: int | None = None) -> None:
        self._process = process
        self._stream = stream
        self._spec = spec
        self._job_id = job_id
        self._header_waits = header_waits
        self._save_turn = save_turn
        self.current = spec
        self.turn = 1

    async def run(self) -> None:
        """Send the turns in order, each record to ``save_turn`` as its turn ends; none after the
        run's duration (RunEnded when not even the first one went out)."""
        spec, answer = self._spec, Answer()
        record = await run_job(self._process, spec, self._header_waits, answer,  # the run's warm-up and schedule
                               RecordContext(stream=self._stream, turn=1))
        while True:
            self._save_turn(record)
            if not record.success:
                for unsent in self.unsent(f"turn {self.turn} of session {spec.session_id} failed "
                                          f"({record.error_type}): the model's answer to it is missing"):
                    self._save_turn(unsent)
                return
            if self.turn == spec.turns:
                return
            if spec.turn_delay_s > 0:
                await asyncio.sleep(spec.turn_delay_s)
            ends_at = await run_end(self._process, spec)
            if ends_at is not None and clock.now() >= ends_at:
                return  # the run's duration is over: the turns left are not sent
            following = spec.next_turns[self.turn - 1]  # type: ignore[index]  # turns > 1: next_turns is set
            next_spec = spec.for_turn(self.turn + 1, next_messages(self.current.messages, answer.text,
                                                                    following["content"]))
            if not await self._start(next_spec):
                return  # the run was cancelled: nothing more is sent
            self.current, self.turn = next_spec, self.turn + 1
            record = await measure_request(self._process.session, next_spec, self._process.api_key_for(spec),
                                           self._header_waits, answer, RecordContext(self._stream, turn=self.turn),
                                           self._process.send_turns)

    def unsent(self, reason: str) -> list[RequestRecord]:
        """The records of the turns after the current one, none of them sent."""
        return RequestRecord.unsent_turns(self._spec, self.turn + 1, self._process.name, self._process.host, reason,
                                          clock.now(), self._stream)

    async def _start(self, spec: JobSpec) -> bool:
        """Mark the turn in flight; False if the run was cancelled (then no mark is left)."""
        marked = await mark_in_flight(self._process.connection, spec.run_id,
                                      InFlight(spec.index, self._process.name, spec.attempt, self._job_id), spec.ttl_s)
        return bool(marked)
