"""Ground truth for the harness's own delay: the mock server (``--stamp-send-time``) writes, in every
chunk it streams, the time it handed the chunk to the socket on the host's monotonic clock. A worker
on the same host reads the same clock when the chunk reaches its Python code, so the difference is
what the harness adds (kernel, scheduling, HTTP parsing) on top of the server's own timing.
"""

SEND_STAMP_FIELD = "tokenbench_sent_ns"  # time.perf_counter_ns() (CLOCK_MONOTONIC) of the mock's write
