"""The RQ job function, with fakeredis: in-flight marks, cancelled runs, interrupted requests."""

from __future__ import annotations

from types import SimpleNamespace

import fakeredis
import pytest
from rq.timeouts import JobTimeoutException

from tokenbench.shared import keys
from tokenbench.shared.config import Endpoint
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker import job


@pytest.fixture
def connection(monkeypatch):
    connection = fakeredis.FakeRedis()
    current = SimpleNamespace(connection=connection, id="tokenbench-r-0", timeout=630)
    monkeypatch.setattr(job, "get_current_job", lambda: current)
    monkeypatch.setattr(job, "Heartbeat", lambda connection, worker: None)
    return connection


def spec_data() -> dict:
    endpoint = Endpoint(mode="openai", base_url="http://127.0.0.1:9/v1", model="m")
    return JobSpec(run_id="r", index=0, prompt_id="p", category="c", messages=[], endpoint=endpoint.to_dict()).to_dict()


def stored(connection) -> RequestRecord | None:
    raw = connection.hget(keys.run_records("r"), "0")
    return None if raw is None else RequestRecord.from_json(raw)


@pytest.mark.parametrize("interruption, error_type", [
    (SystemExit(), "worker_stopped"),
    (JobTimeoutException("timed out"), "job_timeout"),
])
def test_an_interrupted_request_leaves_a_record_saying_why(interruption, error_type, connection, monkeypatch):
    def interrupted(*_args):
        raise interruption

    monkeypatch.setattr(job, "measure_request", interrupted)
    with pytest.raises(type(interruption)):
        job.execute(spec_data())
    record = stored(connection)
    assert (record.success, record.error_type) == (False, error_type)
    assert connection.hlen(keys.run_in_flight("r")) == 0


def test_a_job_of_a_cancelled_run_is_skipped(connection, monkeypatch):
    monkeypatch.setattr(job, "measure_request", lambda *_args: pytest.fail("a cancelled run's request was sent"))
    connection.set(keys.run_cancelled("r"), 1)
    job.execute(spec_data())
    assert stored(connection) is None and connection.hlen(keys.run_in_flight("r")) == 0
