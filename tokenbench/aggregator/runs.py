"""The runs a Redis holds, newest first, with how far each has got."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

import redis

from tokenbench.shared import keys
from tokenbench.shared.records import RunMeta
from tokenbench.shared.redis_conn import epoch_seconds


def list_runs(connection: redis.Redis, limit: int = 20) -> list[dict[str, Any]]:
    """id, mode, model, status, records/total and start of the newest ``limit`` runs.

    Runs whose keys have expired leave the index as they are found.
    """
    runs = []
    for raw_id in cast("list[bytes]", connection.zrevrange(keys.RUNS_INDEX, 0, -1)):
        run_id = raw_id.decode()
        with connection.pipeline(transaction=False) as pipe:
            pipe.get(keys.run_meta(run_id))
            pipe.hlen(keys.run_records(run_id))
            pipe.hlen(keys.run_in_flight(run_id))
            pipe.exists(keys.run_cancelled(run_id))
            pipe.get(keys.run_schedule_start(run_id))
            pipe.time()
            raw_meta, records, in_flight, cancelled, start, now = pipe.execute()
        if raw_meta is None:
            connection.zrem(keys.RUNS_INDEX, run_id)
            continue
        meta = RunMeta.from_json(raw_meta)
        ended = meta.duration_s is not None and start is not None and \
            epoch_seconds(now) >= float(start) + meta.duration_s
        runs.append({
            "run_id": run_id,
            "mode": meta.mode,
            "model": meta.model,
            "status": run_status(records, meta.num_prompts, in_flight, bool(cancelled), ended),
            "records": records,
            "total": meta.num_prompts,
            "created_at": datetime.fromtimestamp(meta.created_at, tz=timezone.utc).isoformat(timespec="seconds"),
        })
        if len(runs) >= limit:
            break
    return runs


def run_status(records: int, total: int, in_flight: int, cancelled: bool, ended: bool = False) -> str:
    """complete, cancelled, ended (a --duration run past its end, with nothing in flight), running or waiting."""
    if records >= total:
        return "complete"
    if cancelled:
        return "cancelled"
    if ended and not in_flight:
        return "ended"
    return "running" if in_flight else "waiting"


def format_runs(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'run id':<24}{'mode':<11}{'status':<10}{'records':>11}  {'created (UTC)':<20}model"]
    for run in runs:
        done = f"{run['records']}/{run['total']}"
        lines.append(f"{run['run_id'][:23]:<24}{run['mode']:<11}{run['status']:<10}{done:>11}  "
                     f"{run['created_at'][:19]:<20}{run['model']}")
    return "\n".join(lines)
