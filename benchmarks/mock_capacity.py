"""How many concurrent streams the mock server sustains before its timing drifts.

Starts `tokenbench mock-server` in its own process and opens N streams at once from an asyncio
client in this process (raw sockets, minimal parsing, so the client adds as little as possible).
For each N it prints the TTFT error and the end-of-stream drift (measured minus scheduled).

    python benchmarks/mock_capacity.py [--levels 16,64,128,256] [--tokens 100] [--itl-ms 10] [--processes 1]

``--processes N`` serves the port from N mock processes (SO_REUSEPORT), as `mock-server --processes`
does: where one process's timing drifts, see whether more of them keep the pace (on this machine the
client and the mock processes share its cores).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import orjson

from tokenbench.aggregator.stats import percentile


async def one_stream(host: str, port: int, tokens: int) -> tuple[float, float]:
    """(ms to the first content chunk, ms to the last) for one streamed request."""
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                         "max_tokens": tokens, "stream": True})
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    sent = time.perf_counter()
    writer.write(request)
    first = last = None
    seen = 0
    while True:
        data = await reader.read(65536)
        if not data:
            break
        now = time.perf_counter()
        count = data.count(b'"content":" ')
        if count:
            seen += count
            first = first or now
            last = now
    writer.close()
    assert seen == tokens, f"expected {tokens} tokens, saw {seen}"
    return (first - sent) * 1000, (last - sent) * 1000


async def level(host: str, port: int, streams: int, tokens: int) -> list[tuple[float, float]]:
    return await asyncio.gather(*(one_stream(host, port, tokens) for _ in range(streams)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="16,64,128,256")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "tokenbench", "mock-server", "--port", "0",
                               "--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms),
                               "--processes", str(args.processes)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split("listening on http://")[1].strip()
        host, port = url.rsplit(":", 1)
        scheduled_end = args.ttft_ms + (args.tokens - 1) * args.itl_ms
        print(f"mock ({args.processes} process(es)): TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, "
              f"{args.tokens} tokens (scheduled end {scheduled_end:g} ms); "
              f"chunk rate = streams x {1000 / args.itl_ms:g}/s")
        print(f"{'streams':>8} {'chunks/s':>9} {'TTFT err p50':>13} {'p99':>7} {'end drift p50':>14} {'p99':>7}")
        for streams in (int(n) for n in args.levels.split(",")):
            results = asyncio.run(level(host, int(port), streams, args.tokens))
            ttft_err = sorted(first - args.ttft_ms for first, _ in results)
            drift = sorted(last - scheduled_end for _, last in results)
            print(f"{streams:>8} {streams * 1000 / args.itl_ms:>9,.0f} {percentile(ttft_err, 50):>13.2f} "
                  f"{percentile(ttft_err, 99):>7.2f} {percentile(drift, 50):>14.2f} {percentile(drift, 99):>7.2f}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
