"""Benchmark: deliver() through the SendGrid transport against the local server with 50 ms latency.

    python bench/bench_send.py [--mails 100000] [--latency-ms 50] [--concurrency 128] [--naive 200]

Starts ``nachfass sandbox`` in its own process (so the server does not share
this process's GIL), sends synthetic RenderedMails generated lazily into a DuckDB ledger in a temp dir, and
prints the sustained rate, RSS at 10k / 50k / 100k mails pulled, peak RSS, the server's CPU time and its
peak number of concurrent requests. Then times the naive way (one ``SendGridAPIClient.send()`` after
another) on a sample and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import sendgrid  # noqa: E402

from nachfass.core.mail import ledger  # noqa: E402
from nachfass.core.mail.message import RenderedMail, make_send_id  # noqa: E402
from nachfass.core.mail.sender import deliver  # noqa: E402
from nachfass.core.mail.sendgrid_payload import build_payload  # noqa: E402
from nachfass.core.mail.transport import SendGridTransport  # noqa: E402
from nachfass.core.shop import load_shop_settings  # noqa: E402

API_KEY = "SG.bench-key"
_ROWS = "".join(
    f'<tr><td><img src="https://cdn.example/p/{n}.jpg" alt=""></td><td>Gartenschere Modell {n}</td>'
    f'<td style="text-align:right">{n * 3 + 0.99:.2f} €</td></tr>'
    for n in range(40)
)


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def synthetic(n: int, marks: dict[int, float], prefix: str = "bench") -> Iterator[RenderedMail]:
    """Lazily generated mails of realistic size (~6 KB HTML); records RSS when mail 10k/50k/100k is pulled."""
    for i in range(n):
        if (i + 1) in (10_000, 50_000, 100_000, n):
            marks[i + 1] = rss_mib()
        key = f"{prefix}-{i:07d}"
        yield RenderedMail(
            send_id=make_send_id("abandoned_cart", "reminder_1", key),
            campaign="abandoned_cart",
            step="reminder_1",
            variant="A" if i % 2 else "B",
            trigger_key=key,
            customer_id=f"c{i:07d}",
            to_email=f"kunde{i}@beispiel.example",
            to_name=f"Kundin {i}",
            subject="Ihr Warenkorb wartet",
            html=f"<html><body><p>Hallo Kundin {i},</p><table>{_ROWS}</table></body></html>",
            text=f"Hallo Kundin {i},\nIhr Warenkorb wartet.\n",
            headers={
                "List-Unsubscribe": f"<https://mail.example/u/{i}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            categories=["marketing"],
            is_marketing=True,
        )


class PrintLog:
    def info(self, msg: str, *args) -> None:
        print("  " + (msg % args if args else msg), f"[rss {rss_mib():.0f} MiB]", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mails", type=int, default=100_000)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--chunk-size", type=int, default=500)
    p.add_argument("--claim-batch", type=int, default=None, help="mails per claim (default: concurrency)")
    p.add_argument("--no-journal", action="store_true", help="deliver() without the send journal")
    p.add_argument(
        "--naive", type=int, default=200, help="mails for the sequential SendGridAPIClient baseline"
    )
    args = p.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nachfass.cli.main",
            "sandbox",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--latency-ms",
            str(args.latency_ms),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    shop = load_shop_settings(REPO / "config" / "shop.yaml")
    try:
        server.stdout.readline()
        print(
            f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; duckdb {duckdb.__version__}"
        )
        print(f"server: {url}, latency {args.latency_ms:.0f} ms/request, separate process")
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib())
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        marks: dict[int, float] = {}
        with tempfile.TemporaryDirectory() as tmp:
            conn = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
            ledger.ensure_ledger(conn)
            transport = SendGridTransport(API_KEY, url, shop=shop, timeout=30)
            server_cpu0 = cpu_seconds(server.pid)
            print(
                f"deliver(): {args.mails:,} mails, concurrency {args.concurrency}, chunk {args.chunk_size}, "
                f"claim batch {args.claim_batch or args.concurrency}, journal {not args.no_journal}, "
                f"rss at start {rss_mib():.0f} MiB"
            )
            report = deliver(
                conn,
                synthetic(args.mails, marks),
                transport,
                run_id="bench",
                as_of=datetime(2026, 11, 24, 10, tzinfo=UTC),
                chunk_size=args.chunk_size,
                claim_batch=args.claim_batch,
                journal_dir=None if args.no_journal else "auto",
                concurrency=args.concurrency,
                log=PrintLog(),
                total=args.mails,
                progress_every_s=20,
            )
            server_cpu = cpu_seconds(server.pid) - server_cpu0
            transport.close()
            counts = ledger.status_counts(conn)
            conn.close()
        stop.set()
        sampler.join()
        import json
        import urllib.request

        with urllib.request.urlopen(url + "/_sandbox/stats") as r:
            stats = json.loads(r.read())
        print(f"result: {report.counts} in {report.seconds:.1f} s = {report.rate:,.0f} mails/s sustained")
        print(
            f"ledger: {counts}; server accepted {stats.get('accepted')}, peak concurrent requests "
            f"{stats.get('max_inflight')}, server CPU {server_cpu:.1f} s "
            f"({server_cpu / report.seconds * 100:.0f}% of one core)"
        )
        print(
            "rss when mail N was pulled: "
            + ", ".join(f"{k:,}: {v:.0f} MiB" for k, v in sorted(marks.items()))
        )
        print(
            f"peak rss (sampled every 0.2 s): {peak[0]:.0f} MiB; ru_maxrss "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; server rss "
            f"{rss_mib(server.pid):.0f} MiB"
        )

        if args.naive:
            client = sendgrid.SendGridAPIClient(api_key=API_KEY, host=url)
            sample_mails = list(synthetic(args.naive, {}, prefix="naive"))
            t0 = time.monotonic()
            for mail in sample_mails:
                client.send(build_payload(mail, shop))
            naive_s = time.monotonic() - t0
            naive_rate = args.naive / naive_s
            print(
                f"naive: {args.naive} x SendGridAPIClient.send() one after another: {naive_s:.1f} s = "
                f"{naive_rate:.1f} mails/s (no ledger)"
            )
            print(f"ratio deliver()/naive: {report.rate / naive_rate:.0f}x")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
