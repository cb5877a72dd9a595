"""The options that several `tokenbench` commands share, and the parsers that check them.

Every parser turns bad input into a ``click.BadParameter`` naming the option: one line, exit 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
import orjson

from tokenbench.aggregator.verdict import DEFAULT_MAX_ERROR_RATE
from tokenbench.mock.shapes import parse_sse_variants
from tokenbench.producer.arrivals import ARRIVALS, ArrivalSchedule
from tokenbench.producer.conversations import MAX_TURNS
from tokenbench.producer.synthetic import LengthSpec, SharedPrefixes
from tokenbench.producer.time_bounds import DEFAULT_DURATION_CAP, TimeBounds, parse_span
from tokenbench.producer.workloads import DATASETS, Workload, WorkloadSpec, build_workload, tokenizer_path
from tokenbench.runner.metrics_scraper import MetricsSource
from tokenbench.shared import keys
from tokenbench.shared.endpoint import (
    APIS,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    DEFAULT_TTFT_TIMEOUT_S,
    MAX_TOKENS_PARAMS,
    REASONING_EFFORTS,
    Endpoint,
    Timeouts,
    is_secret_header,
    resolve_endpoint,
)
from tokenbench.shared.presets import MODES
from tokenbench.shared.redis_conn import REDIS_URL_ENV

if TYPE_CHECKING:
    from tokenbench.producer.prompts import Prompt

mode_option = click.option(
    "--mode", type=click.Choice(MODES), default="openrouter", show_default=True, help="Provider preset."
)
base_url_option = click.option("--base-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1.")
model_option = click.option("--model", help="Model name (default: the mode's preset).")
# Bounds that keep a typo from asking for what no run can hold: a result keeps every request
# (100,000 took 18 s to report), and no model takes a longer context than this.
MAX_PROMPTS = 1_000_000
MAX_TOKENS = 10_000_000
MAX_INPUT_TOKENS = 2_000_000

max_tokens_option = click.option(
    "--max-tokens", type=click.IntRange(1, MAX_TOKENS), help="max_tokens of every request [default: 256]."
)


def prompts_options(command: Any) -> Any:
    """What a run sends: the built-in set, a file, synthetic prompts or a dataset sample, cycled to --prompts."""
    tokens = click.IntRange(1, MAX_TOKENS)
    spread = FiniteFloatRange(0, MAX_TOKENS)
    for option in reversed([
        click.option("--prompts", "num_prompts", type=click.IntRange(1, MAX_PROMPTS),
                     help="Number of requests (default: one per prompt of the file or built-in set, else 30; "
                          "more cycle through them)."),
        click.option("--prompts-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Your prompts: .jsonl ({\"prompt\"|\"messages\", \"id\", \"category\", \"max_tokens\"}), "
                          ".csv with a 'prompt' column, or text with one prompt per line."),
        click.option("--input-tokens", type=click.IntRange(1, MAX_INPUT_TOKENS), metavar="MEAN",
                     help="Synthetic prompts of this many tokens (random words, the same for the same --seed)."),
        click.option("--input-tokens-stddev", type=spread, metavar="S", help="Spread of --input-tokens [default: 0]."),
        click.option("--prefix-tokens", type=click.IntRange(1, MAX_INPUT_TOKENS), metavar="N",
                     help="With --input-tokens: each prompt starts with one of --prefix-groups shared prefixes of N "
                          "tokens (of its --input-tokens), as vLLM's prefix-repetition dataset does."),
        click.option("--prefix-groups", type=click.IntRange(1, 100_000), metavar="G",
                     help="With --prefix-tokens: how many different prefixes, taken in turn [default: 1]."),
        click.option("--output-tokens", type=tokens, metavar="MEAN",
                     help="max_tokens of each request, drawn around this mean (add --ignore-eos where the server "
                          "supports it, so every answer runs to it)."),
        click.option("--output-tokens-stddev", type=spread, metavar="S",
                     help="Spread of --output-tokens [default: 0]."),
        click.option("--tokenizer", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="FILE",
                     help="A Hugging Face tokenizer.json to count prompt tokens with (default: an estimate of 4 "
                          "characters per token, marked approximate)."),
        click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="Replay an arrival trace: .jsonl as Mooncake's ({\"timestamp\" (ms), \"input_length\", "
                          "\"output_length\"}) or .csv timestamp,input_tokens,output_tokens (s): each request sent at "
                          "its time with a prompt and max_tokens of its lengths."),
        click.option("--trace-speed", type=FiniteFloatRange(min=0.001, max=1e6), default=1.0, show_default=True,
                     metavar="X", help="With --trace: replay X times faster."),
        click.option("--turns", type=click.IntRange(1, MAX_TURNS), metavar="N",
                     help="Conversations: each session sends N user turns (the next N prompts of the source) in "
                          "order on one stream, each with the whole history and the model's actual answers; "
                          "--prompts then counts sessions. With --conversations: at most N turns each."),
        click.option("--conversations", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="Conversations to send turn by turn: .jsonl of {\"id\", \"turns\": [\"...\", ...]} or "
                          "ShareGPT records (their human turns; a recorded answer's length is its turn's max_tokens)."),
        click.option("--turn-delay", type=FiniteFloatRange(0, 3600), metavar="SECONDS",
                     help="With --turns or --conversations: think time between an answer and the next turn "
                          "[default: 0]."),
        click.option("--dataset", type=click.Choice(DATASETS),
                     help="Sample prompts from a dataset file (--dataset-path), as vLLM's benchmark does."),
        click.option("--dataset-path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="The --dataset file, e.g. ShareGPT_V3_unfiltered_cleaned_split.json."),
    ]):
        command = option(command)
    return command


def _span(_ctx, _param, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_span(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not 0 < seconds <= MAX_SPAN_S:
        raise click.BadParameter(f"{value!r} is not between 0 and {MAX_SPAN_S // 86400:g} days")
    return seconds


MAX_SPAN_S = 7 * 86400.0
duration_option = click.option(
    "--duration", callback=_span, metavar="SPAN",
    help="End the run this long after its start (90, 90s, 5m, 1h): prompts cycle, --prompts becomes a cap "
         f"[default cap: {DEFAULT_DURATION_CAP:,}]; requests in flight at the end finish and count.")
ramp_up_option = click.option(
    "--ramp-up", callback=_span, metavar="SPAN",
    help="Start the streams one by one over this span (closed loop), instead of all at once.")
measure_after_option = click.option(
    "--measure-after", callback=_span, metavar="SPAN",
    help="Leave the requests sent in this first span of the run (e.g. the --ramp-up) out of every figure; "
         "they are kept in excluded_results.")


def time_bounds_from_flags(flags: dict[str, Any]) -> TimeBounds:
    """The run's duration, ramp-up and measuring start, popping their flags; a --duration without
    --prompts gets the default cap (in sessions, with --turns). Reads --request-rate and --turns,
    so it comes before the workload and the schedule pop theirs (benchmark_inputs)."""
    bounds = TimeBounds(flags.pop("duration", None), flags.pop("ramp_up", None), flags.pop("measure_after", None))
    if bounds.ramp_up_s is not None and flags.get("request_rate"):
        raise click.BadParameter("a request rate sets when requests go out: a ramp-up is for closed-loop runs",
                                 param_hint="'--ramp-up'")
    if bounds.duration_s is not None and flags.get("num_prompts") is None:
        flags["num_prompts"] = max(DEFAULT_DURATION_CAP // (flags.get("turns") or 1), 1)
    return bounds


def workload_from_flags(flags: dict[str, Any], seed: int) -> Workload:
    """The workload that `prompts_options` describe (drawn with ``seed``); pops their flags."""
    from tokenbench.producer.prompt_files import PromptFileError

    input_tokens = _length_spec(flags.pop("input_tokens"), flags.pop("input_tokens_stddev"), "--input-tokens")
    output_tokens = _length_spec(flags.pop("output_tokens"), flags.pop("output_tokens_stddev"), "--output-tokens")
    dataset, dataset_path = flags.pop("dataset"), flags.pop("dataset_path")
    if (dataset is None) != (dataset_path is None):
        raise click.BadParameter("--dataset and --dataset-path go together", param_hint="'--dataset'")
    prefixes = _shared_prefixes(flags.pop("prefix_tokens"), flags.pop("prefix_groups"), input_tokens)
    trace, trace_speed = flags.pop("trace"), flags.pop("trace_speed")
    turns, turn_delay = flags.pop("turns"), flags.pop("turn_delay")
    spec = WorkloadSpec(num_prompts=flags.pop("num_prompts"), prompts_file=flags.pop("prompts_file"), dataset=dataset,
                        dataset_path=dataset_path, input_tokens=input_tokens, output_tokens=output_tokens,
                        tokenizer=flags.pop("tokenizer"), seed=seed, prefixes=prefixes, trace=trace,
                        trace_speed=trace_speed, turns=turns, conversations=flags.pop("conversations"),
                        turn_delay_s=turn_delay or 0.0)
    sources = [name for name, given in (("--prompts-file", spec.prompts_file), ("--dataset", spec.dataset),
                                        ("--input-tokens", spec.input_tokens), ("--trace", spec.trace),
                                        ("--conversations", spec.conversations))
               if given is not None]
    if len(sources) > 1:
        raise click.BadParameter(f"choose one source of prompts, not {' and '.join(sources)}", param_hint="prompts")
    if turns is not None and spec.trace is not None:
        raise click.BadParameter("a trace's requests are independent: --turns does not apply", param_hint="'--turns'")
    if turns is not None and spec.conversations is None and (spec.num_prompts or 1) * turns > MAX_PROMPTS:
        raise click.BadParameter(f"--prompts {spec.num_prompts} sessions of {turns} turns are more than "
                                 f"{MAX_PROMPTS:,} requests", param_hint="'--turns'")
    if turn_delay is not None and turns is None and spec.conversations is None:
        raise click.BadParameter("--turn-delay needs --turns or --conversations", param_hint="'--turn-delay'")
    try:
        return build_workload(spec)
    except PromptFileError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{sources[0] if sources else '--prompts-file'}'") from None


def _shared_prefixes(tokens: int | None, groups: int | None, input_tokens: LengthSpec | None) -> SharedPrefixes | None:
    if tokens is None:
        if groups is not None:
            raise click.BadParameter("--prefix-groups needs --prefix-tokens", param_hint="'--prefix-groups'")
        return None
    if input_tokens is None:
        raise click.BadParameter("--prefix-tokens needs --input-tokens (the prompt's whole length)",
                                 param_hint="'--prefix-tokens'")
    if tokens >= input_tokens.mean:
        raise click.BadParameter(f"{tokens} is not shorter than --input-tokens {input_tokens.mean}: a prompt needs "
                                 "tokens of its own after the prefix", param_hint="'--prefix-tokens'")
    return SharedPrefixes(tokens, groups or 1)


def _length_spec(mean: int | None, stddev: float | None, flag: str) -> LengthSpec | None:
    if mean is None:
        if stddev is not None:
            raise click.BadParameter(f"{flag}-stddev needs {flag}", param_hint=f"'{flag}-stddev'")
        return None
    return LengthSpec(mean, stddev or 0.0)


def _parse_header(_ctx, _param, values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME:VALUE")
        if is_secret_header(name):
            how = ("it is sent as 'Authorization: Bearer KEY'" if name.strip().lower() == "authorization"
                   else f"add --api-key-header {name.strip()} to send it in that header")
            raise click.BadParameter(f"{name.strip()!r} carries a credential, and --header values travel through "
                                     f"Redis: pass the key with --api-key or TOKENBENCH_API_KEY; {how}")
        headers[name.strip()] = content.strip()
    return headers


def _parse_extra_body(_ctx, _param, value: str | None) -> dict:
    if value is None:
        return {}
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"ignore_eos\": true}'")
    return body


def parse_faults(_ctx, _param, value: str | None) -> str | None:
    """``FAULT[,FAULT...]``: the mock's faults (a mix is taken in turn), each checked."""
    from tokenbench.mock import FAULTS

    if value is None:
        return None
    faults = [name.strip() for name in value.split(",")]
    unknown = [name for name in faults if name not in FAULTS]
    if unknown or not faults:
        raise click.BadParameter(f"{', '.join(repr(n) for n in unknown) or repr(value)} is not one of "
                                 f"{', '.join(sorted(FAULTS))}")
    return ",".join(faults)


def parse_sse_variants_option(_ctx, _param, value: str | None) -> tuple[str, ...]:
    try:
        return parse_sse_variants(value or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_slo(_ctx, _param, value: str | None) -> dict[str, float] | None:
    from tokenbench.aggregator.goodput import parse_slo

    if value is None:
        return None
    try:
        return parse_slo(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


slo_option = click.option(
    "--slo", callback=_parse_slo, metavar="METRIC=MS,...",
    help="Service-level objectives for goodput, e.g. ttft=500,tpot=50,e2el=10000 (any subset).",
)


ttl_option = click.option(
    "--ttl", "ttl_s", type=click.IntRange(60, 10 * 365 * 24 * 3600), default=keys.RUN_TTL_S, show_default=True,
    help="Seconds the run's keys (metadata, records, jobs) stay in Redis.",
)
warmup_option = click.option(
    "--warmup", type=click.IntRange(0, 1000), default=0, show_default=True,
    help="Warm-up requests each worker sends (its first prompt) before its first measured one; "
         "kept in the JSON as warmup_results, left out of every figure.",
)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses NaN (which passes every comparison click makes) and infinities."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: longer would overflow RQ's job timeout and mean nothing
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20
timeout_seconds = FiniteFloatRange(min=0, max=MAX_TIMEOUT_S, min_open=True)


def request_options(command: Any) -> Any:
    """Timeouts, headers and extra body fields: how every request of a run is sent."""
    seconds = timeout_seconds
    for option in reversed([
        click.option("--connect-timeout", type=seconds, default=DEFAULT_CONNECT_TIMEOUT_S, show_default=True,
                     help="Seconds to connect."),
        click.option("--ttft-timeout", type=seconds, default=DEFAULT_TTFT_TIMEOUT_S, show_default=True,
                     help="Seconds from sending to the first token."),
        click.option("--idle-timeout", type=seconds, default=DEFAULT_IDLE_TIMEOUT_S, show_default=True,
                     help="Longest silence (seconds) after the first token."),
        click.option("--total-timeout", type=seconds, default=DEFAULT_TOTAL_TIMEOUT_S, show_default=True,
                     help="Seconds from sending to the end of the stream."),
        click.option("--max-response-bytes", type=click.IntRange(1024, 2**40), default=DEFAULT_MAX_RESPONSE_BYTES,
                     show_default=True, help="A response body larger than this fails as response_too_large."),
        click.option("--header", "headers", multiple=True, callback=_parse_header, metavar="NAME:VALUE",
                     help="Extra HTTP header on every request (repeatable)."),
        click.option("--extra-body", callback=_parse_extra_body, metavar="JSON",
                     help="JSON object merged into every request body, e.g. '{\"ignore_eos\": true}'; a field set "
                          "to null is left out (e.g. '{\"stream_options\": null}')."),
        click.option("--max-tokens-param", type=click.Choice(MAX_TOKENS_PARAMS), default=MAX_TOKENS_PARAMS[0],
                     show_default=True,
                     help="The body field that carries --max-tokens (OpenAI's newer models want "
                          "max_completion_tokens; the anthropic API always uses max_tokens)."),
        click.option("--api", type=click.Choice(APIS), default="openai", show_default=True,
                     help="openai: /chat/completions (any OpenAI-compatible server); anthropic: /messages; "
                          "completions: /completions (the text-completions API, prompt as one text); responses: "
                          "/responses (OpenAI's Responses API)."),
        click.option("--reasoning-effort", type=click.Choice(REASONING_EFFORTS),
                     help="Reasoning effort: OpenRouter's reasoning.effort, else reasoning_effort."),
        click.option("--api-key-header", metavar="NAME",
                     help="Send the API key as this header's value (e.g. api-key) instead of a Bearer token."),
        click.option("--ignore-eos", is_flag=True,
                     help="vLLM/SGLang ignore_eos: always generate --max-tokens tokens."),
        click.option("--max-retries", type=click.IntRange(0, 100), default=0, show_default=True,
                     help="Retries of a request answered 429 (or 503 with Retry-After), after the wait it "
                          "asks for; reruns of a request whose worker process died."),
    ]):
        command = option(command)
    return command


def endpoint_from_flags(mode, base_url, model, max_tokens, flags: dict[str, Any], **kwargs: Any) -> Endpoint:
    """The endpoint the flags describe; ``flags`` holds the options of ``request_options``."""
    timeouts = Timeouts(
        connect_s=flags["connect_timeout"],
        ttft_s=flags["ttft_timeout"],
        idle_s=flags["idle_timeout"],
        total_s=flags["total_timeout"],
    )
    return resolve_endpoint(mode, base_url, model, max_tokens, timeouts=timeouts, headers=flags["headers"],
                            extra_body=flags["extra_body"], max_retries=flags["max_retries"], api=flags["api"],
                            reasoning_effort=flags["reasoning_effort"], ignore_eos=flags["ignore_eos"],
                            api_key_header=flags["api_key_header"],
                            max_response_bytes=flags["max_response_bytes"],
                            max_tokens_param=flags["max_tokens_param"], **kwargs)


@dataclass(frozen=True)
class BenchmarkInputs:
    """What the options that `enqueue`, `run` and `sweep` share describe, read in one place."""

    time_bounds: TimeBounds
    workload: Workload
    schedule: ArrivalSchedule | None  # None: the closed loop
    endpoint: Endpoint


def benchmark_inputs(mode: str, base_url: str | None, model: str | None, max_tokens: int | None,
                     flags: dict[str, Any], placeholder_base_url: str | None = None) -> BenchmarkInputs:
    """The typed inputs of a benchmark, popping their flags. The order between them lives here and
    nowhere else: the time bounds first (a --duration without --prompts sets the cap the workload
    is cut to), then the workload, its schedule (a trace's own, or --request-rate's, both from the one
    --seed) and the endpoint (which keeps unmetered text when the workload counts with a tokenizer)."""
    seed = flags.pop("seed")
    time_bounds = time_bounds_from_flags(flags)
    workload = workload_from_flags(flags, seed)
    schedule = schedule_for(workload.prompts, flags, seed)
    endpoint = endpoint_from_flags(mode, base_url, model, max_tokens, flags,
                                   keep_text_without_usage=tokenizer_path(workload.description) is not None,
                                   placeholder_base_url=placeholder_base_url)
    return BenchmarkInputs(time_bounds, workload, schedule, endpoint)


output_option = click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
                             help="Write the JSON here.")


max_error_rate_option = click.option(
    "--max-error-rate", type=click.FloatRange(0, 1), default=DEFAULT_MAX_ERROR_RATE, show_default=True,
    help="Exit 1 when the share of failed requests exceeds this (always when none succeeded); a sweep also "
         "stops after such a level.")


force_option = click.option(
    "--force", is_flag=True, help="Go on with more streams than this host can time at a server's pace.")


def server_metrics_options(command: Any) -> Any:
    """--server-metrics URL, --no-server-metrics."""
    for option in reversed([
        click.option("--server-metrics", "server_metrics_url", metavar="URL",
                     help="Scrape this Prometheus /metrics every second during the run [default: the base URL's "
                          "origin + /metrics (vLLM, SGLang, the mock), off quietly when there is none there]."),
        click.option("--no-server-metrics", is_flag=True, help="Scrape no server metrics."),
    ]):
        command = option(command)
    return command


def metrics_source_from_flags(flags: dict[str, Any]) -> MetricsSource | None:
    """Pops the options of ``server_metrics_options``: where to scrape, or None for nowhere."""
    url, off = flags.pop("server_metrics_url"), flags.pop("no_server_metrics")
    if url and off:
        raise click.UsageError("give --server-metrics URL or --no-server-metrics, not both")
    if off:
        return None
    if url is None:
        return MetricsSource()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url!r} is not an http(s) URL with a host", param_hint="'--server-metrics'")
    return MetricsSource(url, explicit=True)


def redis_url_option(default_help: str) -> Any:
    return click.option("--redis-url", envvar=REDIS_URL_ENV, help=f"Redis URL [env {REDIS_URL_ENV}; {default_help}].")


MIN_REQUEST_RATE = 0.001  # one request every ~17 minutes; slower schedules overflow RQ's job timeout


def schedule_options(command: Any) -> Any:
    """Open-loop load: requests sent on a schedule instead of as soon as a worker is free."""
    for option in reversed([
        click.option("--request-rate", callback=parse_request_rates, metavar="PER_S",
                     help="Open loop: send requests at this mean rate whatever the responses do, with at most "
                          "--concurrency in flight (default, or inf as in vLLM: closed loop, each stream sends "
                          "when it is free). `sweep` takes several, R,R,...: one level each."),
        click.option("--arrival", type=click.Choice(ARRIVALS),
                     help="With --request-rate: gaps between requests [default: poisson]."),
        click.option("--burstiness", type=click.FloatRange(min=0, min_open=True),
                     help="With --arrival poisson: shape of the gamma-distributed gaps as vLLM defines it; "
                          "1 is a Poisson process, below 1 burstier, above 1 more even [default: 1]."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of everything random in the workload (arrival times), so a run can be repeated."),
    ]):
        command = option(command)
    return command


def parse_request_rates(_ctx, _param, value: Any) -> tuple[float, ...] | None:
    """``2.5`` or ``1,2,4,8`` (a sweep's levels): each a rate of at least MIN_REQUEST_RATE per
    second, or ``inf`` (the closed loop)."""
    if value is None:
        return None
    rates = []
    for part in str(value).split(","):
        try:
            rate = float(part)
        except ValueError:
            raise click.BadParameter(f"{part.strip()!r} is not a number") from None
        if math.isnan(rate):
            raise click.BadParameter("is not a number")
        if rate < MIN_REQUEST_RATE:
            raise click.BadParameter(f"{rate:g} is below {MIN_REQUEST_RATE:g} requests per second")
        rates.append(rate)
    if len(set(rates)) != len(rates):
        raise click.BadParameter(f"{value!r} repeats a rate")
    return tuple(rates)


def schedule_for(prompts: list[Prompt], flags: dict[str, Any], seed: int) -> ArrivalSchedule | None:
    """The run's schedule, popping its flags: a replayed trace's own send times, the --request-rate
    schedule (drawn with ``seed``), or None (the closed loop)."""
    rate, arrival, burstiness = (flags.pop(name) for name in ("request_rate", "arrival", "burstiness"))
    if prompts and prompts[0].arrival_s is not None:
        given = [flag for flag, value in (("--request-rate", rate), ("--arrival", arrival),
                                          ("--burstiness", burstiness)) if value is not None]
        if given:
            raise click.BadParameter(f"a trace sets its own send times: drop {', '.join(given)}",
                                     param_hint="'--trace'")
        return ArrivalSchedule.of_trace([p.arrival_s or 0.0 for p in prompts])
    return schedule_from_flags(one_rate(rate), arrival, burstiness, seed)


def one_rate(rates: tuple[float, ...] | None) -> float | None:
    """The one --request-rate of a command that runs one schedule."""
    if rates is not None and len(rates) > 1:
        raise click.BadParameter("one rate here; several (R,R,...) are for `sweep`", param_hint="'--request-rate'")
    return rates[0] if rates else None


def schedule_from_flags(request_rate: float | None, arrival: str | None, burstiness: float | None,
                        seed: int) -> ArrivalSchedule | None:
    if request_rate == math.inf:  # vLLM's way of saying: every request at once, --concurrency at a time
        request_rate = None
    if burstiness is not None and not math.isfinite(burstiness):
        raise click.BadParameter("must be a finite number", param_hint="'--burstiness'")
    if request_rate is None:
        if arrival is not None or burstiness is not None:
            raise click.BadParameter("--arrival and --burstiness need --request-rate", param_hint="'--request-rate'")
        return None
    if arrival == "constant" and burstiness is not None:
        raise click.BadParameter("applies to --arrival poisson only", param_hint="'--burstiness'")
    return ArrivalSchedule(request_rate, arrival or "poisson", 1.0 if burstiness is None else burstiness, seed)


def parse_levels(_ctx, _param, value: str) -> list[int]:
    """``1,5,10`` -> [1, 5, 10]: positive integers, each once."""
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 1,5,10") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter("give one or more levels of at least 1, e.g. 1,5,10")
    if len(set(levels)) != len(levels):
        raise click.BadParameter(f"{value!r} repeats a level")
    return levels
