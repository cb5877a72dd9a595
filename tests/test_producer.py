"""The producer on fakeredis: metadata, one job per prompt, prompt cycling, bad run ids."""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompts import BUILTIN_PROMPTS, CATEGORIES, select_prompts
from tokenbench.shared import keys
from tokenbench.shared.endpoint import resolve_endpoint
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.records import JobSpec, RunMeta


@pytest.fixture
def connection():
    return fakeredis.FakeRedis()


def test_builtin_prompts_cover_the_seed_categories_with_unique_ids():
    assert 28 <= len(BUILTIN_PROMPTS) <= 32
    assert len(CATEGORIES) == 8
    assert len({p.id for p in BUILTIN_PROMPTS}) == len(BUILTIN_PROMPTS)


def test_select_prompts_takes_all_by_default_and_cycles_past_the_end():
    assert select_prompts(None) == list(BUILTIN_PROMPTS)
    many = select_prompts(len(BUILTIN_PROMPTS) + 3)
    assert many[-3:] == list(BUILTIN_PROMPTS[:3])


def test_enqueue_writes_meta_and_one_job_per_prompt(connection):
    endpoint = resolve_endpoint("minimax", max_tokens=64)
    meta = enqueue_run(connection, endpoint, select_prompts(40), run_id="run-1", queue_name="q")
    stored = RunMeta.from_json(connection.get(keys.run_meta("run-1")))
    assert stored == meta
    assert stored.num_prompts == 40 and stored.model == "MiniMaxAI/MiniMax-M2.5" and stored.max_tokens == 64
    queue = Queue("q", connection=connection, serializer=JSONSerializer)
    assert queue.count == 40
    job = queue.fetch_job(keys.job_id("run-1", 39))
    spec = JobSpec.from_dict(job.args[0])
    assert (spec.index, spec.prompt_id) == (39, select_prompts(40)[39].id)
    assert spec.endpoint["base_url"] == "http://localhost:8000/v1"
    assert job.result_ttl == 0


def test_no_secret_in_what_the_producer_writes(connection, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-secret-123")
    enqueue_run(connection, resolve_endpoint("openrouter"), select_prompts(3), run_id="r")
    for key in connection.keys("*"):
        assert b"sk-or-secret-123" not in key + (connection.dump(key) or b"")


@pytest.mark.parametrize("bad", ["has space", "a:b", "x" * 65, ""])
def test_invalid_run_ids_are_refused(connection, bad):
    with pytest.raises(TokenbenchError, match="invalid run id"):
        enqueue_run(connection, resolve_endpoint("minimax"), select_prompts(1), run_id=bad or " ")


def test_a_run_id_cannot_be_reused(connection):
    enqueue_run(connection, resolve_endpoint("minimax"), select_prompts(1), run_id="same")
    with pytest.raises(TokenbenchError, match="already exists"):
        enqueue_run(connection, resolve_endpoint("minimax"), select_prompts(1), run_id="same")
