"""Signed jobs (shared/signing.py) and where a worker sends its API key."""

from __future__ import annotations

from tokenbench.shared.records import JobSpec
from tokenbench.shared.signing import SIGNATURE_FIELD, is_signed_by, signature
from tokenbench.worker.job import PRESET_HOSTS, allowed_hosts


def signed_spec(secret: bytes) -> dict:
    spec = JobSpec(run_id="r", index=0, prompt_id="p", category="c", messages=[{"role": "user", "content": "x"}],
                   endpoint={"mode": "openai", "base_url": "http://gpu-box:8000/v1", "model": "m"}).to_dict()
    spec[SIGNATURE_FIELD] = signature(spec, secret)
    return spec


def test_a_signature_holds_through_a_rerun_and_breaks_on_any_other_change():
    spec = signed_spec(b"s3cret")
    assert is_signed_by(spec, b"s3cret") and not is_signed_by(spec, b"other")
    rerun = JobSpec.from_dict(spec)
    rerun.attempt += 1  # what the aggregator does to a dead worker's request: no secret needed
    assert is_signed_by(rerun.to_dict(), b"s3cret")
    for field, value in (("endpoint", {**spec["endpoint"], "base_url": "http://evil:80/v1"}), ("index", 1),
                         ("messages", []), ("signature", "0" * 64)):
        assert not is_signed_by({**spec, field: value}, b"s3cret"), field
    assert not is_signed_by({k: v for k, v in spec.items() if k != SIGNATURE_FIELD}, b"s3cret")


def test_the_key_hosts_are_the_presets_and_those_named():
    assert {"openrouter.ai", "localhost"} <= PRESET_HOSTS
    hosts = allowed_hosts(("GPU-Box",), environ={"TOKENBENCH_ALLOW_HOSTS": "a.example, b.example,"})
    assert hosts == PRESET_HOSTS | {"gpu-box", "a.example", "b.example"}
    assert allowed_hosts(environ={}) == PRESET_HOSTS
