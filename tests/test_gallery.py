"""The preview gallery: built from sample data, opened in headless Chromium at desktop and mobile width and
in dark mode."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nachfass.cli.main import main
from nachfass.core.campaigns import load_campaigns
from nachfass.devtools.preview import (
    MOBILE_WIDTH,
    SCREENSHOT_HEIGHT,
    SCREENSHOT_VIEWS,
    _screenshots,
    build_gallery,
    screenshot,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or "faketime" in os.environ.get("LD_PRELOAD", ""),
    reason="chromium not installed (apt-get install chromium), or run under libfaketime (its timers stall)",
)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    return build_gallery(out, now=datetime(2026, 11, 22, 12, 0, tzinfo=UTC))


def test_gallery_links_every_combination(gallery: Path) -> None:
    index = gallery.read_text(encoding="utf-8")
    for campaign, settings in load_campaigns().items():
        for step in settings.steps:
            for locale in ("de-DE", "en-GB"):
                slug = f"{campaign}__{step}__control__{locale}"
                assert f'src="mails/{slug}.html" width="640"' in index
                assert f'src="mails/{slug}.html" width="{MOBILE_WIDTH}"' in index
                assert f'src="mails/{slug}.dark.html" width="{MOBILE_WIDTH}"' in index
                dark = (gallery.parent / "mails" / f"{slug}.dark.html").read_text(encoding="utf-8")
                assert "prefers-color-scheme" not in dark and "@media all" in dark
                assert (gallery.parent / "mails" / f"{slug}.txt").exists()
    assert "abandoned_cart__1__b__de-DE" in index


def test_preview_cli_render(tmp_path: Path) -> None:
    code = main(
        [
            "preview",
            "render",
            "--campaign",
            "abandoned_cart",
            "--step",
            "1",
            "--variant",
            "b",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    html = (tmp_path / "abandoned_cart__1__b__de-DE.html").read_text(encoding="utf-8")
    assert "Guten Tag Frau Schmidt," in html
    headers = (tmp_path / "abandoned_cart__1__b__de-DE.headers.txt").read_text(encoding="utf-8")
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in headers
    assert (
        main(["preview", "render", "--campaign", "abandoned_cart", "--step", "9", "--out", str(tmp_path)])
        == 1
    )


def test_preview_of_a_deferred_candidate_takes_its_payload_from_the_segment(tmp_path: Path) -> None:
    """`nachfass preview render --customer-id`: mail_candidates carries the payload only on the rows sent
    and the holdouts, so a deferred (or skipped) trigger's preview reads it from the segment table; a row
    that is sent uses its own. A real DuckDB file with the two tables as dbt writes them."""
    import json

    import duckdb

    from nachfass.core.mail.candidates import CANDIDATE_COLUMNS
    from nachfass.core.mail.samples import sample_jobs

    job = next(j for j in sample_jobs(locales=("de-DE",)) if (j.campaign, j.step) == ("abandoned_cart", "1"))

    def payload(product_name: str) -> str:
        items = [{**item, "name": product_name} for item in job.payload["items"]]
        return json.dumps({**job.payload, "items": items})

    def row(customer_id: str, trigger_key: str, decision: str, reason: str, own: str | None) -> list:
        values = {**{name: getattr(job, name, None) for name in CANDIDATE_COLUMNS}, "variant": "control"}
        values |= {"customer_id": customer_id, "trigger_key": trigger_key, "payload": own}
        values |= {"decision": decision, "reason": reason}
        return [values[name] for name in CANDIDATE_COLUMNS]

    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema eligibility; create schema segments")
        con.execute(
            "create table eligibility.mail_candidates ("
            + ", ".join(
                f"{c} boolean" if c == "has_marketing_consent" else f"{c} varchar" for c in CANDIDATE_COLUMNS
            )
            + ")"
        )
        con.executemany(
            f"insert into eligibility.mail_candidates values ({', '.join('?' * len(CANDIDATE_COLUMNS))})",
            [
                row("C-DEFER", "K-1", "defer", "quiet_hours", None),
                row("C-SEND", "K-2", "send", "due", payload("Rosenschere Gesendet")),
            ],
        )
        con.execute(
            "create table segments.abandoned_cart "
            "(campaign varchar, step varchar, trigger_key varchar, payload varchar)"
        )
        con.executemany(
            "insert into segments.abandoned_cart values ('abandoned_cart', '1', ?, ?)",
            [("K-1", payload("Gartenschlauch Vertagt")), ("K-2", payload("Segmentzeile Alt"))],
        )

    for customer_id, shown in (("C-DEFER", "Gartenschlauch Vertagt"), ("C-SEND", "Rosenschere Gesendet")):
        out = tmp_path / customer_id
        argv = ["preview", "render", "--campaign", "abandoned_cart", "--step", "1", "--out", str(out)]
        assert main([*argv, "--customer-id", customer_id, "--warehouse", str(warehouse)]) == 0
        (html,) = [p.read_text(encoding="utf-8") for p in out.glob("*.html")]
        assert shown in html, customer_id
        assert "Segmentzeile Alt" not in html


def _png_rows(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, channels, unfiltered scanlines) of an 8-bit PNG, with the stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8
            channels = {2: 3, 6: 4, 0: 1, 4: 2}[color_type]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):  # the five PNG filters (RFC 2083, 6.)
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def _png_stats(path: Path) -> tuple[int, int, int, float]:
    """(width, height, distinct scanlines, mean brightness 0..255 of the colour channels)."""
    width, height, channels, rows = _png_rows(path)
    colour = [value for row in rows[::8] for i, value in enumerate(row) if i % channels < 3]
    return width, height, len(set(rows)), sum(colour) / len(colour)


@needs_chromium
@pytest.mark.parametrize("view", list(SCREENSHOT_VIEWS))
def test_mail_screenshots_desktop_mobile_dark(gallery: Path, tmp_path: Path, view: str) -> None:
    mail = gallery.parent / "mails" / "cross_sell__1__control__de-DE.html"
    png = screenshot(CHROMIUM, mail.as_uri(), tmp_path / f"mail_{view}.png", view, tmp_path / "profile")
    width, height, distinct_rows, brightness = _png_stats(png)
    assert (width, height) == (SCREENSHOT_VIEWS[view][0], SCREENSHOT_HEIGHT)
    # A blank or error page has a handful of distinct scanlines; the mail has hundreds.
    assert distinct_rows > 200, distinct_rows
    # Dark mode really is dark (the mail's own dark stylesheet applied), the light views really light.
    assert (brightness < 80) if view == "dark" else (brightness > 170), brightness


def _border_runs(png: Path, colour: bytes, min_length: int) -> list[list[int]]:
    """Per scanline, the lengths of the runs of one colour at least ``min_length`` pixels long."""
    width, _, channels, rows = _png_rows(png)
    runs_per_row = []
    for row in rows:
        runs, run = [], 0
        for x in range(width):
            if row[x * channels : x * channels + 3] == colour:
                run += 1
            else:
                if run >= min_length:
                    runs.append(run)
                run = 0
        if run >= min_length:
            runs.append(run)
        runs_per_row.append(runs)
    return runs_per_row


@needs_chromium
def test_product_grid_is_two_columns_on_desktop_one_on_mobile(gallery: Path, tmp_path: Path) -> None:
    """The top edges of the product cards' image frames (#e4e1d8): two side by side in one scanline on
    desktop, never on a phone, where a card spans the screen."""
    mail = gallery.parent / "mails" / "cross_sell__1__control__de-DE.html"
    frame = bytes((0xE4, 0xE1, 0xD8))
    desktop = _border_runs(
        screenshot(CHROMIUM, mail.as_uri(), tmp_path / "d.png", "desktop", tmp_path / "p"), frame, 120
    )
    mobile = _border_runs(
        screenshot(CHROMIUM, mail.as_uri(), tmp_path / "m.png", "mobile", tmp_path / "p"), frame, 120
    )
    assert any(len(runs) == 2 and all(run < 320 for run in runs) for runs in desktop)
    assert not any(len(runs) >= 2 for runs in mobile)
    assert any(run > 0.8 * MOBILE_WIDTH for runs in mobile for run in runs)


@needs_chromium
def test_gallery_screenshots_option_writes_three_views(gallery: Path, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    markup = _screenshots(CHROMIUM, gallery.parent / "mails", shots, "review_request__1__control__de-DE")
    for view in SCREENSHOT_VIEWS:
        png = shots / f"review_request__1__control__de-DE.{view}.png"
        assert png.exists() and f'src="screenshots/{png.name}"' in markup
        assert _png_stats(png)[2] > 100


@needs_chromium
def test_gallery_index_screenshot_not_blank(gallery: Path, tmp_path: Path) -> None:
    png = screenshot(CHROMIUM, gallery.as_uri(), tmp_path / "index.png", "desktop", tmp_path / "profile")
    _, _, distinct_rows, _ = _png_stats(png)
    assert distinct_rows > 200
