"""Conversations (--turns, --conversations): sessions whose turns go out in order on one stream, each
with the whole history and the model's actual answers; records and the report by turn."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fakeredis
import orjson
import pytest
import redis
from aiohttp import web
from rq import Queue
from rq.serializers import JSONSerializer

from tests.conftest import serve_app
from tests.helpers import enqueue, load, mock_server_process, tokenbench, tokenbench_in_process, worker_pool
from tests.test_faults import wait_for, worker_pid
from tokenbench.producer.conversations import load_conversation_file, sessions_of
from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompt_files import PromptFileError
from tokenbench.producer.tokenizer import EstimatedCounter
from tokenbench.producer.workloads import WorkloadSpec, build_workload
from tokenbench.shared.endpoint import resolve_endpoint
from tokenbench.shared.record_store import read_in_flight
from tokenbench.worker.conversation import next_messages


def write_jsonl(path: Path, *items: object) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(item) for item in items) + b"\n")
    return path


def test_turns_group_the_next_prompts_of_any_source_into_sessions():
    built = build_workload(WorkloadSpec(num_prompts=3, turns=2))  # 3 sessions of the built-in prompts
    prompts = built.prompts
    assert [(p.session_id, p.turn) for p in prompts] == [("session-0", 1), ("session-0", 2), ("session-1", 1),
                                                         ("session-1", 2), ("session-2", 1), ("session-2", 2)]
    assert [[index for index, _ in group] for group in sessions_of(prompts)] == [[0, 1], [2, 3], [4, 5]]
    assert built.description["conversations"] == {"sessions": 3, "turns": {"mean": 2.0, "max": 2}, "turn_delay_s": 0.0}
    assert sessions_of(build_workload(WorkloadSpec(num_prompts=3)).prompts) == \
        [[(i, p)] for i, p in enumerate(build_workload(WorkloadSpec(num_prompts=3)).prompts)]  # no turns: one each


def test_conversation_files_are_read_as_listed_turns_or_sharegpt_human_turns(tmp_path):
    listed = write_jsonl(tmp_path / "c.jsonl", {"id": "trip", "turns": ["Plan a trip.", {"content": "Cheaper?",
                                                                                          "max_tokens": 9}]},
                         {"turns": ["Hello"]})
    first, second = load_conversation_file(listed, EstimatedCounter())
    assert first.id == "trip" and [(p.id, p.text, p.max_tokens) for p in first.turns] == \
        [("trip/1", "Plan a trip.", None), ("trip/2", "Cheaper?", 9)]
    assert second.id == "conversation-1" and len(second.turns) == 1

    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_bytes(orjson.dumps([{"id": "g", "conversations": [
        {"from": "human", "value": "Name a prime."}, {"from": "gpt", "value": "x" * 40},
        {"from": "human", "value": "Another?"}]}]))
    (conversation,) = load_conversation_file(sharegpt, EstimatedCounter())
    # The human turns are sent; a recorded answer is not, its length (40 characters ~ 10 tokens) is the max_tokens.
    assert [(p.text, p.max_tokens) for p in conversation.turns] == [("Name a prime.", 10), ("Another?", None)]


@pytest.mark.parametrize(("content", "complaint"), [
    ('{"turns": []}\n', 'c.jsonl:1: "turns" must be a non-empty list'),
    ('{"turns": ["ok", 3]}\n', "c.jsonl:1: turns[1] must be a non-empty string"),
    ('{"turns": [{"content": "a", "max_tokens": 0}]}\n', "c.jsonl:1: turns[0].max_tokens must be a whole number"),
    ('{"id": 1}\n', 'c.jsonl:1: needs "turns"'),
    ("[1]", "c.jsonl: conversation 0: expected a JSON object"),
    ('{"conversations": [{"from": "gpt", "value": "hi"}]}\n', "no conversation with a user turn"),
])
def test_a_bad_conversation_file_is_named_with_its_line(tmp_path, content, complaint):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(PromptFileError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        load_conversation_file(path, EstimatedCounter())


@pytest.mark.parametrize(("flags", "complaint"), [
    (("--turn-delay", "1"), "--turn-delay needs --turns or --conversations"),
    (("--turns", "0"), "--turns"),
    (("--turns", "2", "--prompts", "1000000"), "more than 1,000,000 requests"),
    (("--turns", "2", "--trace", "t.csv"), "--turns does not apply"),
    (("--conversations", "c.jsonl", "--prompts-file", "p.txt"), "choose one source of prompts"),
])
def test_conversation_options_that_do_not_fit_are_usage_errors(flags, complaint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("timestamp,input_tokens,output_tokens\n0,10,10\n")
    outcome = tokenbench_in_process("enqueue", "--mode", "mock", "--base-url", "http://127.0.0.1:9/v1", *flags)
    assert outcome.returncode == 2 and complaint in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_a_session_is_one_job_holding_its_turns_and_its_timeout_covers_them():
    connection = fakeredis.FakeRedis()
    workload = build_workload(WorkloadSpec(num_prompts=2, turns=3))
    endpoint = resolve_endpoint("mock", "http://127.0.0.1:9/v1")
    meta = enqueue_run(connection, endpoint, workload.prompts, turn_delay_s=2.0)
    assert meta.num_prompts == 6 and meta.prompt_ids == [p.id for p in workload.prompts]
    jobs = Queue(meta.queue, connection=connection, serializer=JSONSerializer).get_jobs()
    assert len(jobs) == 2
    spec = jobs[1].args[0]
    assert spec["index"] == 3 and spec["session_id"] == "session-1" and spec["turn_delay_s"] == 2.0
    assert [turn["prompt_id"] for turn in spec["next_turns"]] == [p.id for p in workload.prompts[4:6]]
    assert jobs[1].timeout >= 3 * (endpoint.total_timeout_s + 2.0)


def test_the_next_turn_carries_the_history_and_the_answer():
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert next_messages(history, "Hello!", "How are you?") == [*history, {"role": "assistant", "content": "Hello!"},
                                                                  {"role": "user", "content": "How are you?"}]


class RecordingServer:
    """A chat-completions server that keeps every request body with its arrival and end times, and
    answers each with words no other answer has (so a test can find them in the next turn's history).
    A user turn "please fail" gets a 500."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        entry = {"body": body, "arrived": time.monotonic(), "answer": f"answer number {len(self.requests)}"}
        self.requests.append(entry)
        if body["messages"][-1]["content"] == "please fail":
            entry["ended"] = time.monotonic()
            return web.json_response({"error": {"message": "no"}}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in entry["answer"].split(" "):
            chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]), "completion_tokens": 3}
        await response.write(b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {},
                                                                    "finish_reason": "stop"}], "usage": usage})
                             + b"\n\ndata: [DONE]\n\n")
        entry["ended"] = time.monotonic()
        return response


def run_against(url: str, tmp_path: Path, *flags: str) -> tuple[object, dict]:
    out = tmp_path / "r.json"
    outcome = tokenbench("run", "--mode", "openai", "--base-url", url + "/v1", "--model", "m", "--no-preflight",
                         "--no-server-metrics", "--max-error-rate", "1", "--output", str(out), *flags)
    return outcome, load(out) if out.exists() else {}


@pytest.mark.integration
def test_each_turn_goes_out_after_the_last_answer_with_the_whole_history(tmp_path):
    server = RecordingServer()
    with serve_app(server.app()) as url:
        outcome, report = run_against(url, tmp_path, "--turns", "3", "--prompts", "2", "--concurrency", "2",
                                      "--turn-delay", "0.05")
    assert outcome.returncode == 0, outcome.stderr
    assert len(server.requests) == 6
    by_first_turn: dict[str, list[dict]] = {}
    for entry in server.requests:
        by_first_turn.setdefault(entry["body"]["messages"][0]["content"], []).append(entry)
    assert len(by_first_turn) == 2
    for session in by_first_turn.values():
        assert [len(e["body"]["messages"]) for e in session] == [1, 3, 5]  # the history grows by turn
        for before, after in zip(session, session[1:]):
            # The previous turn whole, then the answer the server gave it, then the next user turn.
            assert after["body"]["messages"][:-2] == before["body"]["messages"]
            assert after["body"]["messages"][-2] == {"role": "assistant", "content": before["answer"] + " "}
            assert after["body"]["messages"][-1]["role"] == "user"
            assert after["arrived"] >= before["ended"] + 0.05  # in order, after the answer and the think time
    results = sorted(report["results"], key=lambda r: r["index"])
    assert [(r["session_id"], r["turn"]) for r in results] == [(f"session-{s}", t) for s in (0, 1) for t in (1, 2, 3)]
    # Each record keeps its own request's usage (the server counts the words of every message it got).
    assert sorted(r["input_tokens"] for r in results) == \
        sorted(sum(len(m["content"].split()) for m in e["body"]["messages"]) for e in server.requests)
    turns = report["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3] and all(t["successful"] == 2 for t in turns)
    assert turns[0]["mean_input_tokens"] < turns[1]["mean_input_tokens"] < turns[2]["mean_input_tokens"]
    assert "  turn     ok/all  TTFT p50" in outcome.stdout


@pytest.mark.integration
def test_a_failed_turn_ends_its_conversation_and_the_rest_are_recorded_unsent(tmp_path):
    conversations = write_jsonl(tmp_path / "c.jsonl", {"id": "bad", "turns": ["Hi", "please fail", "Still there?"]},
                                {"id": "good", "turns": ["Hello", "Go on"]})
    server = RecordingServer()
    with serve_app(server.app()) as url:
        outcome, report = run_against(url, tmp_path, "--conversations", str(conversations), "--concurrency", "1")
    assert outcome.returncode == 0, outcome.stderr
    assert [e["body"]["messages"][-1]["content"] for e in server.requests] == ["Hi", "please fail", "Hello", "Go on"]
    results = {r["prompt_id"]: r for r in report["results"]}
    assert results["bad/2"]["error_type"] == "http_error" and results["bad/2"]["turn"] == 2
    unsent = results["bad/3"]
    assert unsent["error_type"] == "previous_turn_failed"
    assert unsent["turn"] == 3 and unsent["session_id"] == "session-0"
    assert "turn 2 of session session-0 failed (http_error)" in unsent["error"]
    assert report["complete"] and report["successful_runs"] == 3 and report["failed_runs"] == 2


@pytest.mark.integration
def test_per_turn_ttft_falls_with_the_mocks_prefix_cache_and_cached_totals_match_it(tmp_path, redis_url):
    out = tmp_path / "r.json"
    outcome = tokenbench("run", "--mode", "mock", "--turns", "3", "--prompts", "3", "--concurrency", "3",
                         "--input-tokens", "200", "--max-tokens", "50", "--mock-ttft-ms", "600", "--mock-itl-ms", "1",
                         "--mock-option", "prefix-cache", "--redis-url", redis_url, "--output", str(out))
    assert outcome.returncode == 0, outcome.stderr
    report = load(out)
    first, second, third = report["turns"]
    # Turn 2's history (turn 1's prompt and answer) is cached; its new user turn is not.
    assert first["mean_cached_tokens"] == 0 and second["mean_cached_tokens"] > 0.4 * second["mean_input_tokens"]
    assert third["cached_token_share"] > second["cached_token_share"]
    # Turn 1 computes its whole prompt (the mock's 600 ms); later turns only what the cache lacks
    # (turn 2: its new user turn, under 60% of its prompt): 240 ms or more less, far beyond a loaded machine's noise.
    assert second["ttft_ms"]["max"] < first["ttft_ms"]["min"] and third["ttft_ms"]["max"] < first["ttft_ms"]["min"]
    counters = report["server_metrics"]["counters"]
    assert counters["prefix_cache_hits"] == report["total_cached_tokens"] > 0
    assert counters["prefix_cache_queries"] == report["total_input_tokens"]


@pytest.mark.integration
def test_a_conversation_whose_worker_dies_is_settled_turn_by_turn_not_rerun(redis_url, tmp_path):
    connection = redis.Redis.from_url(redis_url)
    out = tmp_path / "r.json"
    # Each turn ~1 s; the worker is killed during turn 2 of the only session.
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "50") as mock_url, \
            worker_pool(redis_url, "conversation-kill", 1):
        run_id = enqueue(redis_url, mock_url, "conversation-kill", "--turns", "3", "--prompts", "1",
                         "--max-tokens", "20", "--max-retries", "2")
        wait_for(lambda: [e.index for e in read_in_flight(connection, run_id)] == [1], "turn 2 is in flight")
        (victim,) = read_in_flight(connection, run_id)
        os.kill(worker_pid(victim), signal.SIGKILL)
        report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "30", "--output", str(out),
                            "--max-error-rate", "1")
    assert report.returncode == 0, report.stderr
    results = sorted(load(out)["results"], key=lambda r: r["index"])
    assert [(r["turn"], r["success"], r["error_type"], r["attempt"]) for r in results] == \
        [(1, True, None, 0), (2, False, "worker_died", 0), (3, False, "previous_turn_failed", 0)]
    assert "died during turn 2 of session session-0" in results[1]["error"]
