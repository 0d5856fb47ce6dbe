"""Benchmark: writing rendered mails to the outbox (the send step without a SendGrid key).

    python bench/bench_outbox.py [--mails 20000] [--concurrency 32] [--dir /dev/shm]

Renders N real cart reminders once (not timed; the templates of ``mail_templates/``, ~21 KiB per mail),
then in one run (the composing alone, without files, is timed too), each into a fresh folder:

1. **floor**: the same two files per mail (``.json`` and ``.eml``, bytes prepared beforehand) written
   with plain ``open().write()``, no composing, no rename: what the file system costs;
2. **transport**: ``OutboxTransport.send`` per mail (payload, .eml composed, both files written atomically);
3. **deliver**: ``deliver()`` into a DuckDB ledger through ``OutboxTransport``, as the send step runs it
   (claims committed in batches, outcomes recorded, send journal).

Each phase starts after ``os.sync()``, so none is slowed by the write-back of the one before. Prints
mails/s for each and the ratios to the floor. Target (throughput issue): ≥ 3,000 mails/s for the
outbox.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
from bench_render import make_jobs  # noqa: E402

from nachfass.core.links import LinkSigner  # noqa: E402
from nachfass.core.mail import ledger  # noqa: E402
from nachfass.core.mail.eml import payload_to_eml  # noqa: E402
from nachfass.core.mail.render import MailRenderer  # noqa: E402
from nachfass.core.mail.sender import deliver  # noqa: E402
from nachfass.core.mail.sendgrid_payload import build_payload, payload_body  # noqa: E402
from nachfass.core.mail.transport import OutboxTransport  # noqa: E402
from nachfass.core.shop import load_shop_settings  # noqa: E402

AS_OF = datetime(2026, 11, 24, 10, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mails", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32, help="deliver()'s threads (the send step's)")
    parser.add_argument("--dir", default=None, help="where to write (default: the system's temp folder)")
    args = parser.parse_args()
    shop = load_shop_settings()
    renderer = MailRenderer(shop, LinkSigner("bench-signing-key-0123456789abcdef"))
    mails = renderer.render_batch(make_jobs(args.mails))
    size = sum(len(m.html.encode()) + len(m.text.encode()) for m in mails) / len(mails) / 1024
    print(
        f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"load {os.getloadavg()[0]:.1f}; {args.mails:,} cart reminders, {size:.1f} KiB of content each"
    )
    rates: dict[str, float] = {}
    t0 = time.perf_counter()
    files = [
        (
            m.send_id,
            payload_body(p := build_payload(m, shop, as_of=AS_OF)),
            payload_to_eml(p, send_id=m.send_id, date=AS_OF),
        )
        for m in mails
    ]
    compose = len(mails) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        floor_dir, transport_dir, deliver_dir = (
            Path(tmp) / name for name in ("floor", "transport", "deliver")
        )
        floor_dir.mkdir()
        os.sync()  # each phase starts without the previous one's dirty pages being written back under it
        t0 = time.perf_counter()
        for send_id, payload_bytes, eml in files:
            with open(floor_dir / f"{send_id}.json", "wb") as fh:
                fh.write(payload_bytes)
            with open(floor_dir / f"{send_id}.eml", "wb") as fh:
                fh.write(eml)
        rates["floor: write prepared bytes"] = len(files) / (time.perf_counter() - t0)

        transport = OutboxTransport(transport_dir, shop=shop, as_of=AS_OF)
        os.sync()
        t0 = time.perf_counter()
        results = [transport.send(m) for m in mails]
        rates["OutboxTransport.send"] = len(mails) / (time.perf_counter() - t0)
        assert all(r.status == "sent" for r in results)
        assert (transport_dir / f"{mails[-1].send_id}.eml").read_bytes() == files[-1][2]

        conn = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        ledger.ensure_ledger(conn)
        os.sync()
        t0 = time.perf_counter()
        report = deliver(
            conn,
            mails,
            OutboxTransport(deliver_dir, shop=shop, as_of=AS_OF),
            run_id="bench",
            as_of=AS_OF,
            concurrency=args.concurrency,
            total=len(mails),
        )
        rates[f"deliver() → ledger + outbox (concurrency {args.concurrency})"] = len(mails) / (
            time.perf_counter() - t0
        )
        assert report.counts.get("sent") == len(mails), report.counts
        conn.close()
    floor = rates["floor: write prepared bytes"]
    print(f"  {'compose only (payload, JSON, .eml; no files)':<55} {compose:>9,.0f} mails/s   (CPU)")
    for name, rate in rates.items():
        print(f"  {name:<55} {rate:>9,.0f} mails/s   {rate / floor:5.2f} × floor")


if __name__ == "__main__":
    main()
