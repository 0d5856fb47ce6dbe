"""Benchmark: the web service's webhook under load on loopback (server in its own process).

    python bench/bench_webapp.py [--seconds 10] [--concurrency 8] [--batch 50 --batch 10 --batch 1]

For each batch size: signed SendGrid-like batches from ``--concurrency`` keep-alive connections for
``--seconds``; prints accepted events/s and request latency percentiles (p50/p95/p99/max). Every batch is
written durably (fsync of file and folder) before its 200, so small batches measure fsync.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nachfass.devtools.event_simulator import generate_keypair  # noqa: E402
from nachfass.devtools.webhook_load import run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, action="append", help="events per batch (repeatable)")
    args = parser.parse_args()
    batches = args.batch or [50, 10, 1]
    private_key, public_key = generate_keypair()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    landing = Path(tempfile.mkdtemp(prefix="bench-webapp-"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nachfass.cli.main",
            "webapp",
            "--port",
            str(port),
            "--landing",
            str(landing),
        ]
        + ["--log-level", "WARNING"],
        env={**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key},
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/webhooks/sendgrid"
        print(f"python {platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        run_load(
            url, private_key, concurrency=args.concurrency, events_per_batch=10, duration_s=1.0
        )  # warm-up
        for size in batches:
            result = run_load(
                url, private_key, concurrency=args.concurrency, events_per_batch=size, duration_s=args.seconds
            )
            print(f"batch {size:>3} events, {args.concurrency} connections: {result.summary()}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
