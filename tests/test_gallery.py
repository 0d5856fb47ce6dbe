"""The preview gallery: built from sample data, opened in headless Chromium at desktop and mobile width."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dagster_project.mail.preview import MOBILE_WIDTH, build_gallery, main
from dagster_project.mail.render import CAMPAIGNS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    return build_gallery(out, now=datetime(2026, 11, 22, 12, 0, tzinfo=UTC))


def test_gallery_links_every_combination(gallery: Path) -> None:
    index = gallery.read_text(encoding="utf-8")
    for campaign, (_, steps) in CAMPAIGNS.items():
        for step in steps:
            for locale in ("de-DE", "en-GB"):
                slug = f"{campaign}__{step}__control__{locale}"
                assert f'src="mails/{slug}.html" width="640"' in index
                assert f'src="mails/{slug}.html" width="{MOBILE_WIDTH}"' in index
                assert (gallery.parent / "mails" / f"{slug}.txt").exists()
    assert "abandoned_cart__1__b__de-DE" in index


def test_preview_cli_render(tmp_path: Path) -> None:
    code = main(
        ["render", "--campaign", "abandoned_cart", "--step", "1", "--variant", "b", "--out", str(tmp_path)]
    )
    assert code == 0
    html = (tmp_path / "abandoned_cart__1__b__de-DE.html").read_text(encoding="utf-8")
    assert "Guten Tag Frau Schmidt," in html
    headers = (tmp_path / "abandoned_cart__1__b__de-DE.headers.txt").read_text(encoding="utf-8")
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in headers
    assert main(["render", "--campaign", "abandoned_cart", "--step", "9", "--out", str(tmp_path)]) == 1


def _png_stats(path: Path) -> tuple[int, int, int, int]:
    """(width, height, distinct scanlines, distinct byte values) of an 8-bit PNG, with stdlib only."""
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
    stride = 1 + width * channels
    rows = {raw[i : i + stride] for i in range(0, len(raw), stride)}
    return width, height, len(rows), len(set(raw))


def _screenshot(url: str, width: int, out: Path, profile: Path) -> Path:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={width},2000", "--hide-scrollbars",
        f"--screenshot={out}", url,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=90)
    return out


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [640, MOBILE_WIDTH])
def test_mail_screenshot_not_blank(gallery: Path, tmp_path: Path, width: int) -> None:
    mail = gallery.parent / "mails" / "abandoned_cart__1__control__de-DE.html"
    png = _screenshot(mail.as_uri(), width, tmp_path / f"mail_{width}.png", tmp_path / "profile")
    got_width, height, distinct_rows, distinct_bytes = _png_stats(png)
    assert (got_width, height) == (width, 2000)
    # A blank or error page has a handful of distinct scanlines; the mail has hundreds.
    assert distinct_rows > 200, distinct_rows
    assert distinct_bytes > 100, distinct_bytes


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)")
def test_gallery_index_screenshot_not_blank(gallery: Path, tmp_path: Path) -> None:
    png = _screenshot(gallery.as_uri(), 1100, tmp_path / "index.png", tmp_path / "profile")
    _, _, distinct_rows, distinct_bytes = _png_stats(png)
    assert distinct_rows > 200 and distinct_bytes > 100
