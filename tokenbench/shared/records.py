"""The records that cross Redis: a job's spec (producer -> worker), a request's timing record
(worker -> aggregator) and a run's metadata (producer -> aggregator). All serialise with orjson;
a request record's chunk times travel as packed binary after its JSON (see ``RequestRecord.to_json``).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from functools import cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

from tokenbench.shared import keys
from tokenbench.shared.conformance import is_finite_number
from tokenbench.shared.gc_pause import gc_paused

if TYPE_CHECKING:
    import numpy as np
    from _typeshed import DataclassInstance

# Where a record's output_tokens came from.
TOKENS_FROM_USAGE = "usage"  # the server's usage.completion_tokens
TOKENS_FROM_CHUNKS = "chunks"  # the number of token-carrying chunks (no usage was sent)
TOKENS_FROM_TOKENIZER = "tokenizer"  # no usage: the streamed text counted with the run's --tokenizer


T = TypeVar("T", bound="DataclassInstance")


class ErrorType(StrEnum):
    """Every ``error_type`` a record can carry (docs/failure-semantics.md defines each; a test checks
    that it lists them all). A record holds the plain string (``str(member)``): JSON keys and
    Redis need no enum, and records read back compare equal either way."""

    CONNECT_ERROR = "connect_error"
    CONNECT_TIMEOUT = "connect_timeout"
    TTFT_TIMEOUT = "ttft_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    TOTAL_TIMEOUT = "total_timeout"
    CONNECTION_CLOSED = "connection_closed"
    TRANSPORT_ERROR = "transport_error"  # any other client-side transport failure (aiohttp.ClientError)
    MALFORMED_CHUNK = "malformed_chunk"
    TRUNCATED_STREAM = "truncated_stream"
    NOT_EVENT_STREAM = "not_event_stream"
    RESPONSE_TOO_LARGE = "response_too_large"
    LINE_TOO_LONG = "line_too_long"
    HTTP_ERROR = "http_error"
    RATE_LIMITED = "rate_limited"  # 429, after any retries
    STREAM_ERROR = "stream_error"
    PREVIOUS_TURN_FAILED = "previous_turn_failed"  # a conversation's turn not sent: an earlier turn failed
    WORKER_DIED = "worker_died"
    WORKER_STOPPED = "worker_stopped"
    JOB_TIMEOUT = "job_timeout"
    UNREADABLE_RECORD = "unreadable_record"  # a stored record the aggregator could not use


def from_known_fields(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, ignoring keys it does not know (records from newer workers)."""
    known = _FIELD_NAMES.get(cls)
    if known is None:
        known = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    return cls(**{k: v for k, v in data.items() if k in known})


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}  # each dataclass's field names, computed once


@dataclass
class JobSpec:
    """What one RQ job asks a worker to do: send one prompt to one endpoint."""

    run_id: str
    index: int
    prompt_id: str
    category: str
    messages: list[dict[str, Any]]
    endpoint: dict[str, Any]  # config.Endpoint.to_dict()
    attempt: int = 0  # 0 the first time; n for the n-th rerun after a worker died
    max_tokens: int | None = None  # this prompt's own max_tokens (from a prompts file), else the endpoint's
    warmup: int = 0  # warm-up requests each worker sends before its first measured one of the run
    ttl_s: int = keys.RUN_TTL_S  # how long the run's keys live
    send_after_s: float | None = None  # open-loop runs: when to send, after the schedule's start
    signature: str | None = None  # HMAC of the spec with TOKENBENCH_SECRET (shared/signing.py), when set
    # A conversation (producer/conversations.py): this job sends all its turns in order, the first
    # from ``messages``, the next ones from ``next_turns`` ({"prompt_id", "category", "content", "max_tokens"}),
    # each turn's record under the next index.
    session_id: str | None = None
    next_turns: list[dict[str, Any]] | None = None
    turn_delay_s: float = 0.0  # think time between an answer and the next turn
    duration_s: float | None = None  # --duration: nothing is sent this long after the run's start

    @property
    def turns(self) -> int:
        """How many requests this job sends: its conversation's turns, or 1."""
        return 1 + len(self.next_turns or ())

    def for_turn(self, turn: int, messages: list[dict[str, Any]]) -> JobSpec:
        """The spec of the conversation's ``turn``-th request (from 1), sending ``messages``: its own
        index and prompt id, sent at once (only the first turn keeps the schedule and the warm-up)."""
        if turn == 1:
            return replace(self, messages=messages)
        following = (self.next_turns or [])[turn - 2]
        return replace(self, index=self.index + turn - 1, prompt_id=following["prompt_id"],
                       category=following.get("category", self.category), messages=messages,
                       max_tokens=following.get("max_tokens"), warmup=0, send_after_s=None)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every message and the endpoint, which
        # was a third of the time it took to enqueue 10,000 jobs.
        return {name: getattr(self, name) for name in _JOB_SPEC_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return from_known_fields(cls, data)


_JOB_SPEC_FIELDS = tuple(f.name for f in fields(JobSpec))


@dataclass(frozen=True)
class RecordContext:
    """What a request's record carries from outside the request itself."""

    stream: int | None = None  # which of its worker process's streams sent it
    scheduled_at: float | None = None  # open loop or ramp-up: when it was due (epoch seconds, Redis clock)
    warmup: bool = False
    turn: int | None = None  # a conversation's turn (its session is the spec's)


NO_CONTEXT = RecordContext()  # a request sent on its own (the pre-flight, a test)


@dataclass
class RequestRecord:
    """Everything measured about one streamed request. Times are milliseconds after the request
    was sent (monotonic clock), except ``started_at``, the send time in epoch seconds on the Redis
    server's clock.
    """

    run_id: str
    index: int
    prompt_id: str
    category: str
    worker: str
    host: str
    started_at: float  # epoch seconds on the Redis server's clock (see worker/clock.py)
    success: bool = False
    error_type: str | None = None
    error: str | None = None
    http_status: int | None = None
    headers_ms: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None  # request sent -> last token-carrying chunk
    elapsed_ms: float | None = None  # request sent -> end of the response body, or the failure
    # Every token-carrying chunk: a list where measured, a numpy array where read back from Redis.
    chunk_offsets_ms: Sequence[float] = field(default_factory=list)
    output_tokens: int = 0
    output_tokens_source: str = TOKENS_FROM_CHUNKS
    input_tokens: int | None = None  # the server's count of every input token, cached ones included
    cached_tokens: int | None = None  # of the input tokens, those read from the server's prompt cache
    finish_reason: str | None = None
    served_model: str | None = None
    attempt: int = 0  # JobSpec.attempt of the job that wrote this record
    ttfat_ms: float | None = None  # request sent -> first answer (non-reasoning) token
    chunk_tokens: list[int] | None = None  # tokens in each token-carrying chunk, when the server says
    chunk_tokens_source: str | None = None  # "usage" (running completion_tokens) or "logprobs"
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    reasoning_tokens_source: str | None = None  # "usage", "chunk_usage" or "estimate"; None: no reasoning
    provider: str | None = None  # who served it (OpenRouter)
    generation_id: str | None = None
    cost: float | None = None  # usage.cost, when the provider sends it
    retries: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts: status, wait, message
    retry_wait_ms: float = 0.0  # time spent on earlier attempts and their waits; not in the timings
    warmup: bool = False  # a warm-up request: kept, but left out of every statistic
    clock_offset_ms: float | None = None  # the worker's wall clock + this = Redis's; started_at is on Redis's
    clock_rtt_ms: float | None = None  # round trip of the offset's sample: its uncertainty is about half
    scheduled_at: float | None = None  # open-loop runs: the schedule's start + JobSpec.send_after_s
    dispatch_lag_ms: float | None = None  # open-loop runs: first send minus scheduled_at
    chunk_lag_ms: list[float] | None = None  # per chunk: received minus the mock's stamped send time
    stream: int | None = None  # which of its worker process's streams sent it (0 .. streams-1)
    # No usage came and the run has a --tokenizer: the streamed text, which the aggregator counts
    # (aggregator/token_counts.py) and drops; never in a result file.
    output_text: str | None = None
    session_id: str | None = None  # a conversation's turns share it (producer/conversations.py)
    turn: int | None = None  # which turn of its conversation, from 1

    def to_json(self) -> bytes:
        """The record as stored in Redis: its JSON without ``chunk_offsets_ms``, then, when there are
        chunks, a newline and the offsets as little-endian float64.

        A large run has tens of millions of chunk times; as JSON numbers they were most of the time
        the aggregator took. Packed, they are read into one array at memory speed
        (``parse_stored_records``). The JSON never holds a raw newline, so the first one ends it.
        """
        data = orjson.dumps({name: getattr(self, name) for name in _RECORD_JSON_FIELDS})
        if len(self.chunk_offsets_ms) == 0:
            return data
        packed = array("d", self.chunk_offsets_ms)
        if sys.byteorder == "big":
            packed.byteswap()
        return data + b"\n" + packed.tobytes()

    @classmethod
    def from_json(cls, raw: bytes) -> RequestRecord:
        """One stored record (``to_json``'s form, or plain JSON with the offsets as a list)."""
        return parse_stored_records([raw])[0]

    @classmethod
    def failure(cls, spec: JobSpec, worker: str, host: str, error_type: str, error: str,
                at: float, turn: int | None = None, stream: int | None = None) -> RequestRecord:
        """The record of a request that ended without a measurement (its worker died or was stopped,
        or, as a conversation's ``turn``, an earlier turn failed).

        ``at``: when it was declared, epoch seconds on the Redis clock; it has no timings, so it
        counts in no duration or throughput window.
        """
        return cls(run_id=spec.run_id, index=spec.index, prompt_id=spec.prompt_id, category=spec.category,
                   worker=worker, host=host, started_at=at, error_type=str(error_type), error=error,
                   attempt=spec.attempt, session_id=spec.session_id if turn else None, turn=turn, stream=stream)

    @classmethod
    def unsent_turns(cls, spec: JobSpec, first_turn: int, worker: str, host: str, reason: str,
                     at: float, stream: int | None = None) -> list[RequestRecord]:
        """The ``previous_turn_failed`` records of a conversation's turns ``first_turn`` to its last,
        none of them sent because of ``reason``."""
        return [cls.failure(spec.for_turn(turn, []), worker, host, ErrorType.PREVIOUS_TURN_FAILED,
                            f"not sent: {reason}", at, turn=turn, stream=stream)
                for turn in range(first_turn, spec.turns + 1)]


_RECORD_JSON_FIELDS = tuple(f.name for f in fields(RequestRecord) if f.name != "chunk_offsets_ms")
_RECORD_JSON_FIELD_SET = frozenset(_RECORD_JSON_FIELDS)
_record_fields_in_order = itemgetter(*(f.name for f in fields(RequestRecord)))
_PACKED_OFFSET_BYTES = 8


def _record_from_stored_json(data: dict[str, Any], chunk_offsets: Sequence[float] | np.ndarray | None) -> RequestRecord:
    """The record ``to_json`` wrote (its JSON, parsed, and its unpacked chunk offsets, if any).

    When the JSON has exactly this version's fields, as it does unless another version of
    tokenbench wrote it, the fields are passed by position: 45 keyword arguments took the
    dataclass's ``__init__`` five times as long, more than parsing the JSON."""
    if data.keys() != _RECORD_JSON_FIELD_SET:
        record = from_known_fields(RequestRecord, data)
    else:
        data["chunk_offsets_ms"] = []
        record = RequestRecord(*_record_fields_in_order(data))
    if chunk_offsets is not None:
        record.chunk_offsets_ms = cast("Sequence[float]", chunk_offsets)  # an array: indexed and sized the same
    return record


def _split_stored_record(raw: bytes) -> tuple[memoryview, memoryview]:
    """A stored record's JSON and its packed chunk offsets (empty when it has none), without copying."""
    view = memoryview(raw)
    end = raw.find(b"\n")
    return (view, view[:0]) if end < 0 else (view[:end], view[end + 1:])


@gc_paused()
def parse_stored_records(raws: list[bytes]) -> list[RequestRecord]:
    """Stored records (``RequestRecord.to_json``'s form, or plain JSON with the offsets as a list);
    every record's packed chunk offsets become a view of one float64 array."""
    import numpy as np  # here, not at the top: workers never read records back

    parts = [_split_stored_record(raw) for raw in raws]
    lengths = [len(packed) // _PACKED_OFFSET_BYTES for _, packed in parts]
    offsets = np.frombuffer(b"".join(packed for _, packed in parts), dtype="<f8")
    return [_record_from_stored_json(orjson.loads(data), chunk_offsets if length else None)
            for (data, _), length, chunk_offsets in zip(parts, lengths, np.split(offsets, np.cumsum(lengths)[:-1]))]


def _numbers(value: Any) -> bool:
    if hasattr(value, "dtype"):  # offsets read back as a float64 array
        import numpy as np

        return bool(np.isfinite(value).all())
    return isinstance(value, list) and all(is_finite_number(v) for v in value)


_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": is_finite_number,
    "bool": lambda v: isinstance(v, bool),
    "list[float]": _numbers,
    "Sequence[float]": _numbers,
    "list[int]": lambda v: isinstance(v, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in v),
    "list[dict[str, Any]]": lambda v: isinstance(v, list) and all(isinstance(d, dict) for d in v),
}


@cache
def _record_checks() -> tuple[tuple[str, Callable[[Any], bool], bool], ...]:
    """(field, check, may be None) for every field of RequestRecord, from its own annotations."""
    checks = []
    for f in fields(RequestRecord):
        kind, _, none = str(f.type).partition(" | ")
        checks.append((f.name, _KIND_CHECKS[kind], none == "None"))
    return tuple(checks)


def record_problem(record: RequestRecord) -> str | None:
    """Why a record read back from Redis cannot be used (a field of the wrong type, a number that is
    not finite), or None. A server's odd values are coerced where the worker parses them; this
    catches what reached Redis anyway (another version, a bug, or a writer who is not a worker)."""
    for name, check, nullable in _record_checks():
        value = getattr(record, name)
        if value is None and nullable:
            continue
        if not check(value):
            return f"field {name!r} is not valid: {str(value)[:80]!r}"
    return None


@dataclass
class RunMeta:
    """A run as the producer enqueued it."""

    run_id: str
    mode: str
    model: str
    base_url: str
    max_tokens: int
    num_prompts: int
    queue: str
    created_at: float  # epoch seconds
    prompt_ids: list[str]
    tokenbench_version: str
    requested_concurrency: int | None = None  # set by `tokenbench run`, which starts the workers
    max_retries: int = 0  # reruns of a job whose worker died
    warmup: int = 0  # warm-up requests per worker
    ttl_s: int = keys.RUN_TTL_S  # how long the run's keys live (--ttl)
    request_rate: float | None = None  # open-loop runs (--request-rate): requests per second
    arrival: str | None = None  # "poisson" or "constant"
    burstiness: float | None = None
    seed: int | None = None
    config: dict[str, Any] | None = None  # the resolved options of the command that made the run, no secrets
    workload: dict[str, Any] | None = None  # where the prompts came from and how their lengths were counted
    duration_s: float | None = None  # --duration: the run ends this long after its start; its prompts are a cap
    ramp_up_s: float | None = None  # --ramp-up: the first requests went out spread over this
    measure_after_s: float | None = None  # --measure-after: the report leaves out requests sent earlier

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RunMeta:
        return from_known_fields(cls, orjson.loads(raw))
