"""Mail previews for marketers (wired into the CLI as ``nachfass preview …``).

    nachfass preview render --campaign abandoned_cart --step 1 --variant control \\
        [--locale de-DE] [--customer-id C123 --warehouse data/warehouse.duckdb] --out DIR
    nachfass preview gallery --out DIR [--screenshots]
    nachfass preview check

Previews sign their links with a throwaway key (``PREVIEW_SIGNING_KEY``), never the production key:
a preview file lying around must not contain working unsubscribe or cart links for a real customer.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from nachfass.core.campaigns import load_campaigns
from nachfass.core.links import PREVIEW_SIGNING_KEY, LinkSigner
from nachfass.core.mail.candidates import CANDIDATE_COLUMNS, job_from_row
from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.render import MailRenderer, RenderError
from nachfass.core.mail.samples import sample_jobs
from nachfass.core.paths import TEMPLATES_DIR, warehouse_path
from nachfass.core.shop import ShopSettings, load_shop_settings

__all__ = ["build_gallery", "check", "gallery", "job_from_row", "load_candidate", "render_one", "write_mail"]

CANDIDATES_TABLE = "eligibility.mail_candidates"
GALLERY_LOCALES = {"de": "de-DE", "en": "en-GB"}
DESKTOP_WIDTH, MOBILE_WIDTH = 640, 375
SCREENSHOT_HEIGHT = 2000
# The gallery's dark view: the mail's own dark-mode rules applied unconditionally, as a mail client in dark
# mode applies them (a browser showing the gallery in light mode would not).
_DARK_MEDIA = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)")
# name → (window width, extra Chromium flags) of the screenshots `gallery --screenshots` takes
SCREENSHOT_VIEWS: dict[str, tuple[int, tuple[str, ...]]] = {
    "desktop": (DESKTOP_WIDTH, ()),
    "mobile": (MOBILE_WIDTH, ()),
    "dark": (MOBILE_WIDTH, ("--force-dark-mode",)),
}


def dark_view(mail_html: str) -> str:
    """The mail as a client in dark mode shows it: its prefers-color-scheme: dark rules always on."""
    return _DARK_MEDIA.sub("@media all", mail_html)


def find_chromium() -> str | None:
    """Headless Chromium (Debian package ``chromium``) for screenshots, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(chromium: str, url: str, out: Path, view: str, profile: Path) -> Path:
    """A PNG of ``url`` in one of SCREENSHOT_VIEWS (desktop, mobile, dark), taken by headless Chromium."""
    width, flags = SCREENSHOT_VIEWS[view]
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={width},{SCREENSHOT_HEIGHT}", "--hide-scrollbars",
        *flags, f"--screenshot={out}", url,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out


def _renderer(shop: ShopSettings, templates_dir: Path, now: datetime | None = None) -> MailRenderer:
    return MailRenderer(shop, LinkSigner(PREVIEW_SIGNING_KEY), templates_dir=templates_dir, now=now)


def _slug(campaign: str, step: str, variant: str, locale: str) -> str:
    return f"{campaign}__{step}__{variant}__{locale}".replace("/", "_")


def write_mail(mail: RenderedMail, out_dir: Path, slug: str) -> dict[str, Path]:
    """Write ``<slug>.html``, ``<slug>.txt`` and ``<slug>.headers.txt``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "html": out_dir / f"{slug}.html",
        "text": out_dir / f"{slug}.txt",
        "headers": out_dir / f"{slug}.headers.txt",
    }
    paths["html"].write_text(mail.html, encoding="utf-8")
    paths["text"].write_text(mail.text, encoding="utf-8")
    to = f"{mail.to_name} <{mail.to_email}>" if mail.to_name else mail.to_email
    lines = [f"To: {to}", f"Subject: {mail.subject}", *(f"{k}: {v}" for k, v in mail.headers.items())]
    lines += [f"X-Categories: {', '.join(mail.categories)}", f"X-Send-Id: {mail.send_id}"]
    paths["headers"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def load_candidate(
    warehouse: Path, customer_id: str, campaign: str, step: str, variant: str | None = None
) -> MailJob:
    """The candidate row of one customer for a campaign/step from the warehouse, as a ``MailJob``.

    Prefers a row with ``decision = 'send'``, so the preview shows what would actually go out. A deferred
    or skipped row has no payload in mail_candidates (only the rows sent and the holdouts carry it): its
    payload comes from the campaign's segment table, which keeps every trigger's.
    """
    import duckdb  # local: the rest of the preview works without a warehouse

    with duckdb.connect(str(warehouse), read_only=True) as con:
        segment = con.execute(
            "select 1 from information_schema.tables where table_schema = 'segments' and table_name = ?",
            [campaign],
        ).fetchone()
        columns = [
            f"coalesce(c.payload, {'s.payload' if segment else 'null'}) as payload"
            if name == "payload"
            else f"c.{name}"
            for name in CANDIDATE_COLUMNS
        ]
        join = (
            f'left join segments."{campaign}" as s on s.campaign = c.campaign '
            "and cast(s.step as varchar) = cast(c.step as varchar) and s.trigger_key = c.trigger_key"
            if segment
            else ""
        )
        cursor = con.execute(
            f"""
            select {", ".join(columns)}
            from {CANDIDATES_TABLE} as c
            {join}
            where c.customer_id = ? and c.campaign = ? and cast(c.step as varchar) = ?
              and (? is null or c.variant = ?)
            order by (c.decision = 'send') desc, c.trigger_key desc
            limit 1
            """,
            [customer_id, campaign, step, variant, variant],
        )
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    if row is None:
        raise LookupError(f"no row in {CANDIDATES_TABLE} for customer {customer_id} and {campaign}/{step}")
    return job_from_row(dict(zip(names, row, strict=True)))


def _sample_job(campaign: str, step: str, variant: str, locale: str) -> MailJob:
    for job in sample_jobs(locales=(locale,)):
        if job.campaign == campaign and job.step == step:
            return replace(job, variant=variant)
    raise LookupError(f"unknown campaign/step {campaign}/{step} (known: {_known()})")


def _known() -> str:
    return ", ".join(f"{c}/{s}" for c, settings in load_campaigns().items() for s in settings.steps)


def build_gallery(
    out_dir: Path,
    shop: ShopSettings | None = None,
    templates_dir: Path = TEMPLATES_DIR,
    now: datetime | None = None,
    screenshots: bool = False,
) -> Path:
    """Render every campaign/step/variant/language with sample data; write ``index.html``; return it.

    Each mail is shown at desktop and mobile width and in dark mode (``<slug>.dark.html``). With
    ``screenshots``, headless Chromium also takes a PNG of each view (``screenshots/<slug>.<view>.png``)
    and the index shows those.
    """
    shop = shop or load_shop_settings()
    chromium = find_chromium() if screenshots else None
    if screenshots and chromium is None:
        raise LookupError("--screenshots needs headless Chromium (Debian: apt-get install chromium)")
    renderer = _renderer(shop, templates_dir, now)
    mails_dir = out_dir / "mails"
    samples = {(j.campaign, j.step): j for j in sample_jobs(locales=("de-DE",))}
    sections: list[str] = []
    toc: list[str] = []
    for campaign, settings in renderer.campaigns.items():
        policy = settings.consent_policy
        for step in settings.steps:
            for variant in renderer.variants(campaign, step):
                for lang in settings.languages:
                    locale = GALLERY_LOCALES[lang]
                    job = replace(samples[(campaign, step)], variant=variant, locale=locale)
                    mail = renderer.render(job)
                    slug = _slug(campaign, step, variant, locale)
                    write_mail(mail, mails_dir, slug)
                    (mails_dir / f"{slug}.dark.html").write_text(dark_view(mail.html), encoding="utf-8")
                    e = html.escape
                    shots = ""
                    if chromium:
                        shots = _screenshots(chromium, mails_dir, out_dir / "screenshots", slug)
                    label = f"{campaign} / {step} / {variant} / {locale}"
                    toc.append(f'<li><a href="#{e(slug)}">{e(label)}</a></li>')
                    sections.append(
                        f"""<section id="{e(slug)}">
<h2>{e(label)} <small>({e(policy)}{", marketing" if mail.is_marketing else ", transactional"})</small></h2>
<p><b>Betreff:</b> {e(mail.subject)}<br>
<a href="mails/{e(slug)}.txt">Textversion</a> · <a href="mails/{e(slug)}.headers.txt">Header</a> ·
<a href="mails/{e(slug)}.html">HTML einzeln öffnen</a></p>
<div class="frames">
<figure><figcaption>Desktop {DESKTOP_WIDTH}px</figcaption>
<iframe src="mails/{e(slug)}.html" width="{DESKTOP_WIDTH}" height="1250"
 title="{e(label)} desktop" sandbox></iframe></figure>
<figure><figcaption>Mobil {MOBILE_WIDTH}px</figcaption>
<iframe src="mails/{e(slug)}.html" width="{MOBILE_WIDTH}" height="1250"
 title="{e(label)} mobil" sandbox></iframe></figure>
<figure><figcaption>Dunkelmodus {MOBILE_WIDTH}px</figcaption>
<iframe src="mails/{e(slug)}.dark.html" width="{MOBILE_WIDTH}" height="1250"
 title="{e(label)} dunkel" sandbox></iframe></figure>
</div>{shots}
</section>"""
                    )
    index = out_dir / "index.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    index.write_text(
        f"""<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Nachfass – Mail-Galerie</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; margin: 24px; background: #fafafa; color: #222; }}
section {{ border-top: 1px solid #ccc; padding: 16px 0 24px; }}
.frames {{ display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }}
figure {{ margin: 0; }} figcaption {{ font-size: 13px; color: #555; margin-bottom: 4px; }}
iframe {{ border: 1px solid #bbb; background: #fff; }}
small {{ color: #666; font-weight: normal; }}
</style></head>
<body>
<h1>Nachfass – alle Mails mit Beispieldaten</h1>
<p>Erzeugt am {datetime.now(UTC):%Y-%m-%d %H:%M} UTC aus <code>{html.escape(str(templates_dir))}</code>.
Links sind mit einem Vorschau-Schlüssel signiert und funktionieren nicht im Shop.</p>
<ul>{"".join(toc)}</ul>
{"".join(sections)}
</body></html>
""",
        encoding="utf-8",
    )
    return index


def _screenshots(chromium: str, mails_dir: Path, shots_dir: Path, slug: str) -> str:
    """Take the desktop, mobile and dark PNGs of one mail; return the index's HTML for them."""
    shots_dir.mkdir(parents=True, exist_ok=True)
    url = (mails_dir / f"{slug}.html").resolve().as_uri()
    figures = []
    for view in SCREENSHOT_VIEWS:
        name = f"{slug}.{view}.png"
        screenshot(chromium, url, shots_dir / name, view, shots_dir / ".chromium-profile")
        figures.append(
            f'<figure><figcaption>Screenshot {view}</figcaption><a href="screenshots/{html.escape(name)}">'
            f'<img src="screenshots/{html.escape(name)}" width="200" alt="{html.escape(slug)} {view}">'
            "</a></figure>"
        )
    return f'\n<div class="frames">{"".join(figures)}</div>'


def render_one(
    campaign: str,
    step: str,
    out: Path,
    *,
    variant: str | None = None,
    locale: str | None = None,
    customer_id: str | None = None,
    warehouse: Path | None = None,
    templates_dir: Path = TEMPLATES_DIR,
    shop_config: Path | None = None,
) -> int:
    """`nachfass preview render`: one mail for sample data, or for a customer's candidate row."""
    shop = load_shop_settings(shop_config)
    try:
        renderer = _renderer(shop, templates_dir)
        if customer_id:
            # The customer's own row, whatever variant they were assigned; --variant/--locale then show
            # "what would this customer get in variant b / in English".
            job = load_candidate(warehouse or warehouse_path(), customer_id, campaign, step)
            if variant:
                job = replace(job, variant=variant)
            if locale:
                job = replace(job, locale=locale)
        else:
            job = _sample_job(campaign, step, variant or "control", locale or "de-DE")
        mail = renderer.render(job)
        paths = write_mail(mail, out, _slug(job.campaign, job.step, job.variant, job.locale))
    except (RenderError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Subject: {mail.subject}")
    for path in paths.values():
        print(f"written: {path}")
    return 0


def gallery(
    out: Path,
    *,
    screenshots: bool = False,
    templates_dir: Path = TEMPLATES_DIR,
    shop_config: Path | None = None,
) -> int:
    """`nachfass preview gallery`."""
    try:
        index = build_gallery(out, load_shop_settings(shop_config), templates_dir, screenshots=screenshots)
    except (RenderError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"gallery written: {index}")
    return 0


def check(*, templates_dir: Path = TEMPLATES_DIR, shop_config: Path | None = None) -> int:
    """`nachfass preview check`: compile and render every template against sample data."""
    try:
        checked = _renderer(load_shop_settings(shop_config), templates_dir).check_templates()
    except (RenderError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(checked)} campaign/step/variant/locale combinations render fine")
    return 0
