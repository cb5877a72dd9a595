"""A real LLM server on this machine's CPU, measured by tokenbench and by a bare client side by side.

Builds a tiny random-weight Llama locally (no downloads: a byte-level BPE tokenizer trained on
synthetic words, ChatML template, 4 layers of 256), serves it with Hugging Face `transformers
serve` (or a vLLM you installed: --server vllm --server-python .../bin/python), and at each
concurrency level runs, in turn, runner/bare_client.py (one process, aiohttp, no Redis) and
`tokenbench run` against it: the same prompt, max tokens and request count. It prints TTFT, ITL
and E2E p50 and the tokens per request for both, and the server's own metrics (vLLM's /metrics)
where it has them. The weights are random, so the text is gibberish; the serving stack, its
scheduler and the streaming are real.

    python benchmarks/real_server.py [--work DIR] [--levels 1,4,16] [--max-tokens 32]
    python benchmarks/real_server.py --base-url http://127.0.0.1:8000 --model tiny-llama \
        --levels 4 --max-tokens 64 --repeat 6 --new-session

With --base-url it measures a server that is already running (e.g. vLLM from
../shared/real-servers/vllm.sh) instead of starting one. Each run also prints how long the client's
event-loop thread, ready to run, waited for a CPU (Linux schedstat: the bare client's own thread,
tokenbench's `worker_cpu_wait`), and --new-session adds tokenbench started in a session of its own
(the old worker design: on a kernel with autogroup scheduling, a scheduling group of its own).

The first run makes a venv in DIR/venv with torch 2.13.0 (CPU) and transformers 5.24.0 (about
1.2 GB with a CPU torch; PyPI's default torch brings CUDA libraries) and builds the model
(~10 s); later runs reuse both. `transformers serve` runs with float32 and OMP_NUM_THREADS=1:
on a 2-core CPU bf16 ran at ~265 ms a token and 2 threads gave uneven gaps (the recipe this
follows measured both). Not part of the test suite: its figures go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

import orjson

from tokenbench.runner.bare_client import bare_requests
from tokenbench.worker.loop_lag import open_schedstat, read_schedstat

REPO_ID, SNAPSHOT = "local/tiny-llama", "0" * 40
PROMPT = "Explain in two sentences why the sky looks blue during the day."
SERVER_PACKAGES = ("torch==2.13.0", "transformers[serving]==5.24.0", "tokenizers")

# Run by the server's interpreter (it has torch, transformers and tokenizers); argv[1]: the snapshot folder.
BUILD_MODEL = r'''
import random, sys
from pathlib import Path
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"]
words = ["".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 3)))) for _ in range(20000)]
corpus = [" ".join(rng.choices(words, k=40)) for _ in range(5000)]
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=8192, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
fast.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
fast.save_pretrained(out)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                     bos_token_id=0, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
LlamaForCausalLM(config).save_pretrained(out)
'''


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def server_python(work: Path, given: str | None) -> str:
    if given:
        return given
    venv = work / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"making the server's venv in {venv} (torch, transformers)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *SERVER_PACKAGES], check=True)
    return str(python)


def build_model(python: str, hf_home: Path) -> Path:
    hub = hf_home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = hub / "snapshots" / SNAPSHOT
    if not (snapshot / "config.json").exists():
        log(f"building the model in {snapshot}")
        subprocess.run([python, "-c", BUILD_MODEL, str(snapshot)], check=True)
        (hub / "refs").mkdir(parents=True, exist_ok=True)
        (hub / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


def start_server(kind: str, python: str, snapshot: Path, hf_home: Path, port: int, log_file: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    bin_dir = Path(python).parent
    if kind == "vllm":
        command = [str(bin_dir / "vllm"), "serve", str(snapshot), "--served-model-name", REPO_ID, "--host",
                   "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "1024"]
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.pop("OMP_NUM_THREADS")
    else:
        command = [str(bin_dir / "transformers"), "serve", REPO_ID, "--host", "127.0.0.1", "--port", str(port),
                   "--device", "cpu", "--dtype", "float32"]
    log(f"starting {' '.join(command)} (log: {log_file})")
    return subprocess.Popen(command, env=env, stdout=log_file.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(base: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    body = orjson.dumps({"model": REPO_ID, "stream": True, "max_tokens": 4,
                         "messages": [{"role": "user", "content": "hi"}]})
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}); see its log")
        try:
            request = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                answer.read()
            return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"the server did not answer within {timeout_s:g} s")


def bare_figures(base: str, model: str, concurrency: int, rounds: int, max_tokens: int) -> dict[str, float]:
    schedstat = open_schedstat()  # this thread's: the bare client's event loop runs on it
    before, started = read_schedstat(schedstat) or (0, 0), time.monotonic_ns()
    requests = asyncio.run(bare_requests(base + "/v1/chat/completions", concurrency, rounds, max_tokens,
                                         model=model, prompt=PROMPT))
    after, wall_ns = read_schedstat(schedstat) or (0, 0), time.monotonic_ns() - started
    if schedstat is not None:
        os.close(schedstat)
    waited, turns = after[0] - before[0], after[1] - before[1]
    timed = [r for r in requests if r.token_received_ns]
    gaps = [(b - a) / 1e6 for r in timed for a, b in zip(r.token_received_ns, r.token_received_ns[1:])]
    return {"ttft_p50": median((r.token_received_ns[0] - r.sent_ns) / 1e6 for r in timed),
            "itl_p50": median(gaps) if gaps else float("nan"),
            "e2e_p50": median((r.token_received_ns[-1] - r.sent_ns) / 1e6 for r in timed),
            "chunks_per_request": sum(len(r.token_received_ns) for r in timed) / max(len(timed), 1),
            "requests": len(timed),
            "cpu_wait_share": waited / wall_ns, "cpu_wait_mean_ms": waited / 1e6 / max(turns, 1)}


def tokenbench_figures(base: str, model: str, concurrency: int, rounds: int, max_tokens: int, out: Path,
                       new_session: bool = False) -> dict:
    prompts = out.with_suffix(".jsonl")
    prompts.write_bytes(orjson.dumps({"prompt": PROMPT}) + b"\n")
    command = [sys.executable, "-m", "tokenbench", "run", "--mode", "openai", "--base-url", base + "/v1", "--model",
               model, "--concurrency", str(concurrency), "--prompts", str(concurrency * rounds), "--prompts-file",
               str(prompts), "--max-tokens", str(max_tokens), "--warmup", "1", "--output", str(out),
               "--max-error-rate", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, start_new_session=new_session)
    if done.returncode != 0:
        raise SystemExit(f"tokenbench run failed: {done.stderr[-2000:]}")
    return orjson.loads(out.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the venv, the model and the results [default: a new one]")
    parser.add_argument("--server", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--server-python", help="the interpreter of an existing server venv")
    parser.add_argument("--base-url", help="measure this running server (e.g. http://127.0.0.1:8000) instead")
    parser.add_argument("--model", default=REPO_ID, help="the model name the running server serves")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=4, help="requests per stream at each level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each client at each level, interleaved")
    parser.add_argument("--new-session", action="store_true", help="also run tokenbench in a session of its own")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tokenbench-real-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    if args.base_url:
        base, model, label = args.base_url.rstrip("/"), args.model, f"the server at {args.base_url}"
    else:
        python = server_python(work, args.server_python)
        hf_home = work / "hf"
        snapshot = build_model(python, hf_home)
        base, model, label = f"http://127.0.0.1:{args.port}", REPO_ID, f"{args.server} serve"
        server = start_server(args.server, python, snapshot, hf_home, args.port, work / f"{args.server}.log")
    clients = ["tokenbench", "tokenbench, new session"] if args.new_session else ["tokenbench"]
    rows = []
    try:
        if server is not None:
            wait_ready(base, server)
            log("server ready")
        for level in (int(v) for v in args.levels.split(",")):
            for repeat in range(args.repeat):
                bare = bare_figures(base, model, level, args.rounds, args.max_tokens)
                rows.append((level, "bare client", bare_row(bare)))
                for client in clients[repeat % 2:] + clients[:repeat % 2]:
                    out = work / f"tokenbench-c{level}-{repeat}-{len(rows)}.json"
                    report = tokenbench_figures(base, model, level, args.rounds, args.max_tokens, out,
                                                new_session=client != "tokenbench")
                    rows.append((level, client, tokenbench_row(report)))
                log(f"c={level} run {repeat + 1}: " + ", ".join(f"{c} TTFT p50 {r['ttft']}" for lv, c, r in rows[-3:]
                                                               if lv == level))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)
    print(f"{label}, max_tokens {args.max_tokens}, {args.rounds} requests per stream; ms")
    print("| C | client | TTFT p50 | ITL p50 | E2E p50 | tokens/request | requests ok | CPU wait share / mean a turn "
          "| loop lag p99 | server TTFT mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for level, client, row in rows:
        print(f"| {level} | {client} | {row['ttft']} | {row['itl']} | {row['e2e']} | {row['tokens']} | {row['ok']} | "
              f"{row['cpu_wait']} | {row['lag']} | {row['server_ttft']} |")
    print(f"results: {work}")


def bare_row(bare: dict[str, float]) -> dict[str, str]:
    return {"ttft": f"{bare['ttft_p50']:.1f}", "itl": f"{bare['itl_p50']:.2f}", "e2e": f"{bare['e2e_p50']:.1f}",
            "tokens": f"{bare['chunks_per_request']:.1f} (chunks)", "ok": str(bare["requests"]),
            "cpu_wait": f"{bare['cpu_wait_share']:.1%} / {bare['cpu_wait_mean_ms']:.2f}", "lag": "", "server_ttft": ""}


def tokenbench_row(report: dict) -> dict[str, str]:
    ok = max(report["successful_runs"], 1)
    wait = report.get("worker_cpu_wait") or {}
    lag = report.get("event_loop_lag_ms") or {}
    parts = report.get("server_decomposition") or {}
    cpu_wait = (f"{wait['share']:.1%} / {wait['mean_wait_ms']:.2f}" if wait.get("share") is not None
                and wait.get("mean_wait_ms") is not None else "-")
    return {"ttft": f"{report['ttft_ms']['p50']:.1f}", "itl": f"{report['itl_ms']['p50']:.2f}",
            "e2e": f"{report['e2e_latency_ms']['p50']:.1f}",
            "tokens": f"{report['total_output_tokens'] / ok:.1f} ({'/'.join(report['output_tokens_source'])})",
            "ok": str(report["successful_runs"]), "cpu_wait": cpu_wait, "lag": str(lag.get("p99", "-")),
            "server_ttft": str(parts.get("server_ttft_mean_ms") or "-")}


if __name__ == "__main__":
    main()
