"""The least-privilege Redis user that docs/failure-semantics.md recommends runs a whole benchmark."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.helpers import clean_env, load, mock_server_process, tokenbench
from tokenbench.runner.embedded_redis import find_redis_server

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parent.parent / "docs" / "failure-semantics.md"


def documented_acl_rules() -> list[str]:
    """The rules of the ``ACL SETUSER tokenbench ...`` line in the docs, as written there."""
    text = DOCS.read_text()
    found = re.search(r"ACL SETUSER tokenbench (.*?)\n\n", text, re.S)
    assert found, "the docs no longer show the ACL user"
    return found.group(1).split()


def test_the_documented_acl_user_runs_enqueue_worker_and_report_and_nothing_else(tmp_path):
    port, password = free_port(), "acl-" + uuid.uuid4().hex
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        admin = redis.Redis(port=port)
        deadline = time.monotonic() + 5
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        rules = [rule.replace(">PASSWORD", f">{password}") for rule in documented_acl_rules()]
        admin.execute_command("ACL", "SETUSER", "tokenbench", *rules)
        admin.execute_command("ACL", "SETUSER", "default", "off")
        url = f"redis://tokenbench:{password}@127.0.0.1:{port}/0"
        limited = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.set("someone-else:key", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.flushall()
        assert not limited.client_unblock(2**40)  # allowed: how a stopping worker ends its own wait for a job

        env = clean_env(REDIS_URL=url)
        with mock_server_process("--ttft-ms", "5", "--itl-ms", "2") as mock_url:
            enqueued = tokenbench("enqueue", "--mode", "openai", "--base-url", mock_url + "/v1", "--model", "m",
                                  "--prompts", "6", "--max-tokens", "8", "--queue", "acl", env=env)
            assert enqueued.returncode == 0, enqueued.stderr
            run_id = enqueued.stdout.strip().splitlines()[-1]
            worked = tokenbench("worker", "-n", "1", "--streams", "3", "--queue", "acl", "--burst", env=env)
            assert worked.returncode == 0, worked.stderr
        out = tmp_path / "r.json"
        reported = tokenbench("report", run_id, "--timeout", "10", "--output", str(out), env=env)
        assert reported.returncode == 0, reported.stderr
        assert (load(out)["successful_runs"], load(out)["complete"]) == (6, True)
        assert "NOPERM" not in enqueued.stderr + worked.stderr + reported.stderr
    finally:
        server.terminate()
        server.wait(10)
