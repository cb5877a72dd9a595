"""Signed jobs: a worker runs a job only if the producer that wrote it knew the shared secret.

Whoever can write to the Redis can put jobs on the queue. With ``TOKENBENCH_SECRET`` set (the
same value in the environment of `enqueue` and of every `worker`; `tokenbench run` makes one per
run), the producer signs each job spec with HMAC-SHA256 and the workers refuse a job without a
valid signature. The secret itself never goes to Redis, a log or a command line.

The signature covers every field of the spec but ``attempt`` (and itself): the aggregator reruns a
request whose worker died by re-enqueueing its spec with the next attempt number, without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import orjson

SECRET_ENV = "TOKENBENCH_SECRET"
SIGNATURE_FIELD = "signature"
_UNSIGNED_FIELDS = ("attempt", SIGNATURE_FIELD)


def secret_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    value = (os.environ if environ is None else environ).get(SECRET_ENV)
    return value.encode() if value else None


def signature(spec: dict[str, Any], secret: bytes) -> str:
    """HMAC-SHA256 of the spec's canonical JSON (sorted keys), without the unsigned fields."""
    signed = {key: value for key, value in spec.items() if key not in _UNSIGNED_FIELDS}
    return hmac.new(secret, orjson.dumps(signed, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def is_signed_by(spec: dict[str, Any], secret: bytes) -> bool:
    claimed = spec.get(SIGNATURE_FIELD)
    return isinstance(claimed, str) and hmac.compare_digest(claimed, signature(spec, secret))
