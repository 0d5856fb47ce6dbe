"""Render ``MailJob``s into ``RenderedMail``s: subject, preheader, HTML (CSS inlined), plain text, headers.

Design notes (the why):

* CSS is inlined ONCE per template file, when Jinja loads its source (``_InliningLoader``): the Jinja tags
  are swapped for placeholders the HTML parser leaves alone, css_inline applies ``styles.css``, the tags
  are put back, and only then does Jinja compile. Rendering a mail therefore does no CSS work at all.
* Every environment is sandboxed, uses ``StrictUndefined`` and autoescapes HTML; the plain-text body is
  not escaped but never goes into a header. Subject and display name are squeezed to one line, so a
  name like ``"\\r\\nBcc: x@evil.test`` cannot add a header.
* ``render_batch`` renders everything first and raises ``RenderError`` on the first failure, so the
  caller sends nothing from a batch that contains a broken mail.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import css_inline
import yaml
from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from nachfass.core.addresses import address_problem
from nachfass.core.campaigns import CampaignSettings, load_campaigns
from nachfass.core.links import LinkSigner
from nachfass.core.mail.formatting import (
    TEMPLATE_LANGUAGES,
    babel_locale,
    clean_text,
    display_name,
    format_date,
    format_money,
    header_safe,
    no_break,
    safe_url,
    salutation_line,
    template_language,
    typographic_quotes,
    unit_price,
)
from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.samples import sample_jobs
from nachfass.core.paths import TEMPLATES_DIR
from nachfass.core.shop import ShopSettings

# Campaigns whose CTA restores a cart; value = LinkSigner purpose.
CART_LINK_PURPOSE = {"abandoned_cart": "cart", "checkout_recovery": "checkout"}

# Unsubscribe/objection links must keep working long after the mail was sent (a recipient may use an old
# mail); two years, after which the web service's form still lets them unsubscribe by address.
OPT_OUT_LINK_TTL_DAYS = 730
# Order-status and returns links: the order's life (delivery, 14-day withdrawal period, a late return or
# question) with room to spare. Rating links: a review request is acted on within weeks, if at all.
ORDER_LINK_TTL_DAYS = 120
REVIEW_LINK_TTL_DAYS = 90
RATINGS = (1, 2, 3, 4, 5)
DEFAULT_VARIANT = "control"
SUBJECTS_FILE = "subjects.yaml"
STYLES_FILE = "styles.css"


class RenderError(Exception):
    """A mail could not be rendered. Names campaign/step/variant/template and the cause."""

    def __init__(
        self,
        cause: str,
        *,
        campaign: str | None = None,
        step: str | None = None,
        variant: str | None = None,
        template: str | None = None,
        send_id: str | None = None,
    ) -> None:
        self.cause = cause
        self.campaign = campaign
        self.step = step
        self.variant = variant
        self.template = template
        self.send_id = send_id
        where = f"{campaign}/{step} variant {variant!r}" if campaign else "template check"
        if template:
            where += f", template {template}"
        if send_id:
            where += f", send_id {send_id}"
        super().__init__(f"{where}: {cause}")

    def __reduce__(self):
        # raised in a render worker (render_pool.py), it crosses to the calling process with every field
        fields = ("campaign", "step", "variant", "template", "send_id")
        return (partial(RenderError, self.cause, **{f: getattr(self, f) for f in fields}), ())


# --------------------------------------------------------------------------------------------------------
# Template loading with CSS inlining at load time
# --------------------------------------------------------------------------------------------------------

_JINJA_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}|\{\{.*?\}\}", re.DOTALL)
_PLACEHOLDER = re.compile(r"<!--NFJ(\d+)-->|NFJ(\d+)NFJ")
# An expression placeholder right after a table-structure tag (only whitespace/statements in between) is
# text in "in table" parser mode, which HTML5 "foster-parents" out of the table.
_TABLE_TEXT = re.compile(
    r"(?:<(?:table|tbody|thead|tfoot|tr)\b[^>]*>|</(?:td|th|tr|thead|tbody|tfoot|caption|colgroup)>)"
    r"(?:\s|<!--NFJ\d+-->)*NFJ(\d+)NFJ",
    re.IGNORECASE,
)


def inline_css_into_template(source: str, css: str, name: str) -> str:
    """Inline ``css`` into an HTML Jinja template's source, keeping the Jinja tags intact.

    Statements and comments become HTML comments (the parser keeps comments where they are, even between
    table rows); expressions become alphanumeric tokens (safe in text and attribute values). A tag the
    parser would move anyway, e.g. an expression directly inside ``<tr>``, is reported instead of silently
    breaking the mail.
    """
    tags: list[str] = []

    def protect(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        n = len(tags) - 1
        return f"NFJ{n}NFJ" if match.group(0).startswith("{{") else f"<!--NFJ{n}-->"

    protected = _JINJA_TAG.sub(protect, source)
    misplaced = _TABLE_TEXT.search(protected)
    if misplaced:
        tag = tags[int(misplaced.group(1))]
        raise TemplateError(
            f"{name}: the Jinja expression {tag!r} stands directly inside a table (not in a <td>); the HTML "
            "parser would move it out of the table. Put it inside a <td>."
        )
    if re.search(r"<html[\s>]", protected, re.IGNORECASE):
        # keep_at_rules keeps the @media queries (mobile layout) in a <style> block in <head>.
        inlined = css_inline.CSSInliner(keep_at_rules=True, extra_css=css).inline(protected)
    else:
        inlined = css_inline.inline_fragment(protected, css)

    restored = _PLACEHOLDER.sub(lambda m: tags[int(m.group(1) or m.group(2))], inlined)
    seen = _placeholder_order(inlined)
    if seen != list(range(len(tags))):
        moved = next((tags[i] for i, n in enumerate(seen) if n != i), tags[len(seen)] if tags else "?")
        raise TemplateError(
            f"{name}: the HTML parser moved or dropped the Jinja tag {moved!r}; keep Jinja tags inside "
            "elements that may contain text (a <td>, <p>, …), never directly between <table>/<tr> tags "
            "or inside a tag's attribute list"
        )
    if inlined.lower().count("<tbody") != protected.lower().count("<tbody"):
        # An implied <tbody> would end up inside a {% for %} loop over rows and repeat per row.
        raise TemplateError(f"{name}: write <tbody> explicitly in every <table>")
    return restored


_START_TAG = re.compile(r"<[A-Za-z][^<>]*>")


def _placeholder_order(html: str) -> list[int]:
    """The placeholders' numbers in document order, those within one start tag sorted: the inliner may
    write an element's attributes in another order (harmless), but must not move a tag elsewhere."""
    order: list[int] = []
    pos = 0
    for tag in _START_TAG.finditer(html):
        order += [int(a or b) for a, b in _PLACEHOLDER.findall(html, pos, tag.start())]
        order += sorted(int(a or b) for a, b in _PLACEHOLDER.findall(tag.group(0)))
        pos = tag.end()
    order += [int(a or b) for a, b in _PLACEHOLDER.findall(html, pos)]
    return order


class _InliningLoader(FileSystemLoader):
    """FileSystemLoader that inlines ``styles.css`` into every ``.html`` template as it is loaded."""

    def __init__(self, templates_dir: Path) -> None:
        super().__init__(str(templates_dir))
        css_path = templates_dir / STYLES_FILE
        self._css = css_path.read_text(encoding="utf-8") if css_path.exists() else ""

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = super().get_source(environment, template)
        if template.endswith(".html"):
            source = inline_css_into_template(source, self._css, template)
        return source, filename, uptodate


def _make_environment(templates_dir: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=_InliningLoader(templates_dir),
        # HTML escaped; .txt (plain-text body) not: it is a text/plain MIME part, never a header.
        autoescape=select_autoescape(
            enabled_extensions=("html",),
            disabled_extensions=("txt",),
            default_for_string=True,
            default=True,
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates are loaded once per renderer; skip the mtime check on every get_template.
        auto_reload=False,
        cache_size=-1,
    )
    return env


@dataclass(frozen=True)
class _Compiled:
    lang: str
    html_name: str
    text_name: str
    html: Template
    text: Template
    subject: Template
    preheader: Template


def _template_location(tb: TracebackType | None, templates_dir: Path) -> str | None:
    """'de/abandoned_cart/1.html line 12' for the innermost template frame of a traceback."""
    found = None
    root = str(templates_dir)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root):
            found = f"{Path(filename).relative_to(templates_dir).as_posix()} line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


# --------------------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------------------


class BatchRenderer(Protocol):
    """What the render step needs: ``MailRenderer``, or a backtest side's (``render_share.TickRenders``)."""

    def render_batch(self, jobs: Iterable[MailJob]) -> list[RenderedMail]: ...


class MailRenderer:
    def __init__(
        self,
        shop: ShopSettings,
        signer: LinkSigner,
        templates_dir: Path = TEMPLATES_DIR,
        now: datetime | None = None,
        campaigns: Mapping[str, CampaignSettings] | None = None,
    ) -> None:
        """``campaigns``: the campaign registry (default: the segment YAML files, checked against these
        templates); every mail's consent policy, steps, templates and languages come from it."""
        self.shop = shop
        self.campaigns = (
            dict(campaigns) if campaigns is not None else load_campaigns(templates_dir=templates_dir)
        )
        self.signer = signer
        self.templates_dir = Path(templates_dir)
        self._fixed_now = now
        self._tz = ZoneInfo(shop.timezone)
        self._env = _make_environment(self.templates_dir)
        # Subjects and preheaders are one-line texts: not HTML-escaped, CR/LF stripped afterwards.
        self._line_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._compiled: dict[tuple[str, str, str, str], _Compiled] = {}
        self._names = set(self._env.list_templates())
        for url_name in ("shop_base_url", "service_base_url"):
            url = getattr(shop, url_name)
            if safe_url(url) != url or any(c.isspace() for c in url):
                raise RenderError(f"ShopSettings.{url_name} must be an absolute http(s) URL, got {url!r}")
        self._shop_base = shop.shop_base_url.rstrip("/")
        self._service_base = shop.service_base_url.rstrip("/")
        self._shop_host = urlsplit(self._shop_base).netloc.lower()
        self._lines = {lang: self._load_lines(lang) for lang in TEMPLATE_LANGUAGES}
        # Per template language: the shop context with that language's opening hours and service bar.
        self._shop_ctx_by_lang: dict[str, dict[str, Any]] = {}
        if shop.legal is None:
            raise RenderError("ShopSettings.legal (privacy_url, imprint_url) is required to render mails")
        for url_name in ("privacy_url", "imprint_url", "shipping_costs_url"):
            url = getattr(shop.legal, url_name)
            if url is not None and safe_url(url) != url:
                raise RenderError(
                    f"ShopSettings.legal.{url_name} must be an absolute http(s) URL, got {url!r}"
                )
        brand = shop.brand
        self._shop_ctx = {
            "name": shop.shop_name,
            "base_url": self._shop_base,
            "contact": {
                "email": shop.contact.email,
                "phone": no_break(shop.contact.phone),
                "phone_href": "tel:" + "".join(c for c in shop.contact.phone if c.isdigit() or c == "+"),
                "hours": shop.contact.hours,
            },
            "brand": {
                "logo_url": safe_url(brand.logo_url),
                "logo_dark_url": safe_url(brand.logo_dark_url),
                "logo_width": brand.logo_width,
                "logo_height": brand.logo_height,
            },
            "impressum": {
                "company": shop.impressum.company,
                "street": shop.impressum.street,
                "postal_code": shop.impressum.postal_code,
                "city": shop.impressum.city,
                "country": shop.impressum.country,
                "managing_directors": shop.impressum.managing_directors,
                "register": shop.impressum.register,
                "vat_id": shop.impressum.vat_id,
            },
        }

    def at(self, now: datetime) -> MailRenderer:
        """This renderer for another logical time (link expiry, dates): compiled templates are shared, so
        a replay renders tick after tick without compiling or inlining anything again."""
        other = copy.copy(self)
        other._fixed_now = now
        return other

    def _shop_for(self, lang: str) -> dict[str, Any]:
        ctx = self._shop_ctx_by_lang.get(lang)
        if ctx is None:
            contact = self.shop.contact
            ctx = {
                **self._shop_ctx,
                "contact": {
                    **self._shop_ctx["contact"],
                    "hours": contact.hours_by_language.get(lang, contact.hours),
                },
                "service_bar": list(self.shop.service_bar.get(lang, [])),
            }
            self._shop_ctx_by_lang[lang] = ctx
        return ctx

    # ---- template lookup ---------------------------------------------------------------------------

    def _load_lines(self, lang: str) -> dict[str, Any]:
        path = self.templates_dir / lang / SUBJECTS_FILE
        if not path.exists():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RenderError(f"not valid YAML: {exc}", template=f"{lang}/{SUBJECTS_FILE}") from exc
        if not isinstance(data, dict):
            raise RenderError(
                "expected campaign → step → {subject, preheader}", template=f"{lang}/{SUBJECTS_FILE}"
            )
        return {str(c): {str(s): v for s, v in (steps or {}).items()} for c, steps in data.items()}

    def _template(self, campaign: str, step: str) -> str:
        """The step's template name (``steps.<step>.template`` in the campaign's YAML)."""
        return self.campaigns[campaign].steps[step].template

    def variants(self, campaign: str, step: str) -> list[str]:
        """Variants that have their own subject, preheader or template (plus 'control') for a step."""
        found = {DEFAULT_VARIANT}
        template = self._template(campaign, step)
        for lang in self.campaigns[campaign].languages:
            entry = self._lines.get(lang, {}).get(campaign, {}).get(step, {}) or {}
            for key in ("subject", "preheader"):
                if isinstance(entry.get(key), dict):
                    found.update(str(v) for v in entry[key] if v != "default")
            prefix = f"{lang}/{template}."
            for name in self._names:
                if name.startswith(prefix) and name.endswith(".html") and name[len(prefix) :].count(".") == 1:
                    found.add(name[len(prefix) : -len(".html")])
        return sorted(found, key=lambda v: (v != DEFAULT_VARIANT, v))

    def _pick(self, lang: str, campaign: str, step: str, variant: str, ext: str) -> str | None:
        template = self._template(campaign, step)
        for name in (f"{lang}/{template}.{variant}.{ext}", f"{lang}/{template}.{ext}"):
            if name in self._names:
                return name
        return None

    def _line_source(self, lang: str, campaign: str, step: str, variant: str, key: str) -> str:
        entry = self._lines.get(lang, {}).get(campaign, {}).get(step)
        where = f"{lang}/{SUBJECTS_FILE}"
        if not isinstance(entry, dict) or key not in entry:
            raise RenderError(f"no {key} for {campaign}/{step}", template=where)
        value = entry[key]
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            for candidate in (variant, "default"):
                if isinstance(value.get(candidate), str):
                    return value[candidate]
        raise RenderError(f"{key} of {campaign}/{step} needs a 'default' text", template=where)

    def _templates_for(self, lang: str, campaign: str, step: str, variant: str) -> _Compiled:
        key = (lang, campaign, step, variant)
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        # No templates in the recipient's language: the campaign's fallback language (`languages`).
        lang = self.campaigns[campaign].template_language(lang)
        template = self._template(campaign, step)
        html_name = self._pick(lang, campaign, step, variant, "html")
        text_name = self._pick(lang, campaign, step, variant, "txt")
        own = {ext: f"{lang}/{template}.{variant}.{ext}" in self._names for ext in ("html", "txt")}
        if own["html"] != own["txt"]:
            # A body test changes both parts: otherwise text-only readers get the control copy and the
            # experiment measures a mixture.
            have, lack = ("html", "txt") if own["html"] else ("txt", "html")
            raise RenderError(
                f"variant {variant!r} has its own {lang}/{template}.{variant}.{have} but no "
                f".{lack}: a body variant needs both parts",
                campaign=campaign,
                step=step,
                variant=variant,
            )
        if html_name is None or text_name is None:
            raise RenderError(
                f"missing template {lang}/{template}.{'txt' if html_name else 'html'}",
                campaign=campaign,
                step=step,
                variant=variant,
            )
        loading = html_name
        try:
            html = self._env.get_template(html_name)
            loading = text_name
            text = self._env.get_template(text_name)
            loading = f"{lang}/{SUBJECTS_FILE}"
            subject = self._line_env.from_string(self._line_source(lang, campaign, step, variant, "subject"))
            preheader = self._line_env.from_string(
                self._line_source(lang, campaign, step, variant, "preheader")
            )
        except RenderError as exc:
            raise RenderError(
                exc.cause, campaign=campaign, step=step, variant=variant, template=loading
            ) from exc
        except TemplateError as exc:
            raise RenderError(
                f"{type(exc).__name__}: {exc}",
                campaign=campaign,
                step=step,
                variant=variant,
                template=loading,
            ) from exc
        compiled = _Compiled(lang, html_name, text_name, html, text, subject, preheader)
        self._compiled[key] = compiled
        return compiled

    # ---- links -------------------------------------------------------------------------------------

    def _utm(self, job: MailJob) -> str:
        return urlencode(
            {
                "utm_source": self.shop.utm_source,
                "utm_medium": "email",
                "utm_campaign": job.campaign,
                "utm_content": job.variant,
            }
        )

    def _shop_link(self, utm: str, target: Any = "/", **params: Any) -> str:
        """A shop URL with UTM parameters: ``target`` is a path ("/konto") or a shop URL from the payload.

        URLs on other hosts (the carrier's tracking page) are returned unchanged, a non-http(s) URL
        becomes the shop's home page.
        """
        text = clean_text(target)
        if text.startswith("/") and not text.startswith("//"):
            url = self._shop_base + quote(text, safe="/-._~%")
        else:
            url = safe_url(text)
            if url is None:
                url = self._shop_base + "/"
            elif urlsplit(url).netloc.lower() != self._shop_host:
                return url
        query = urlencode({k: v for k, v in params.items() if v is not None})
        query = f"{query}&{utm}" if query else utm
        return f"{url}{'&' if '?' in url else '?'}{query}"

    # ---- context -----------------------------------------------------------------------------------

    def _context(self, job: MailJob, lang: str, now: datetime) -> dict[str, Any]:
        shop = self.shop
        locale = babel_locale(job.locale, shop.default_locale)
        tz = self._tz
        payload = job.payload or {}
        currency = payload.get("currency") or shop.currency
        utm = self._utm(job)
        link = partial(self._shop_link, utm)
        money = partial(_money, locale=locale, default_currency=currency)
        day = partial(format_date, locale=locale, tz=tz)
        advertising_allowed = job.is_marketing and job.has_marketing_consent

        ctx: dict[str, Any] = {
            "campaign": job.campaign,
            "step": job.step,
            "variant": job.variant,
            "lang": lang,
            "locale": locale,
            "consent_policy": job.consent_policy,
            "is_marketing": job.is_marketing,
            "shop": self._shop_for(lang),
            "greeting": salutation_line(lang, job.salutation, job.first_name, job.last_name),
            "first_name": clean_text(job.first_name),
            "last_name": clean_text(job.last_name),
            "customer_id": job.customer_id,
            "shop_link": link,
            "money": money,
            "format_date": day,
            "home_url": link("/"),
            "privacy_url": link(shop.legal.privacy_url),  # type: ignore[union-attr]
            "imprint_url": link(shop.legal.imprint_url),  # type: ignore[union-attr]
            "shipping_costs_url": (
                link(shop.legal.shipping_costs_url) if shop.legal.shipping_costs_url else None  # type: ignore[union-attr]
            ),
            "recommendations": [],
            "guides": [],
        }
        if "items" in payload:
            ctx["items"] = [_item(i, raw, link, money, lang) for i, raw in enumerate(payload["items"] or [])]
        for key in ("cart_id", "order_id"):
            if payload.get(key) is not None:
                ctx[key] = clean_text(payload[key])
        if "order_id" in ctx:
            ctx["order_number"] = ctx["order_id"]
            self._order_links(ctx, job, now, utm)
        if payload.get("total_amount") is not None:
            ctx["total"] = money(payload["total_amount"])
        for key in ("placed_at", "last_order_at"):
            if payload.get(key):
                ctx[key] = day(payload[key])
        if isinstance(payload.get("shipment"), dict):
            raw = payload["shipment"]
            carrier = clean_text(raw.get("carrier"))
            number = clean_text(raw.get("tracking_number")) or None
            tracking_url = safe_url(raw.get("tracking_url"))
            if tracking_url is None and number and carrier in self.shop.carrier_tracking_urls:
                tracking_url = safe_url(
                    self.shop.carrier_tracking_urls[carrier].replace(
                        "{tracking_number}", quote(number, safe="")
                    )
                )
            ctx["shipment"] = {
                "shipment_id": clean_text(raw.get("shipment_id")),
                "carrier": carrier,
                "tracking_number": number,
                "tracking_url": tracking_url,
                "shipped_at": day(raw["shipped_at"]) if raw.get("shipped_at") else None,
                "delivered_at": day(raw["delivered_at"]) if raw.get("delivered_at") else None,
                "expected_delivery": (
                    day(raw["expected_delivery_date"]) if raw.get("expected_delivery_date") else None
                ),
            }
        if isinstance(payload.get("ticket"), dict):
            raw = payload["ticket"]
            ctx["ticket"] = {
                "ticket_id": clean_text(raw.get("ticket_id")),
                "topic": clean_text(raw.get("topic")),
                "opened_at": day(raw["opened_at"]) if raw.get("opened_at") else None,
                "closed_at": day(raw["closed_at"]) if raw.get("closed_at") else None,
            }
        # Advertising only with consent: transactional mails and existing-customer mails to customers
        # without confirmed consent never get the block, whatever the payload or template says.
        if advertising_allowed and payload.get("recommendations"):
            ctx["recommendations"] = [
                _recommendation(i, raw, link, money, lang) for i, raw in enumerate(payload["recommendations"])
            ]
        if payload.get("guides"):
            ctx["guides"] = [
                {"name": typographic_quotes(clean_text(g.get("name")), lang), "url": link(g["guide_url"])}
                for g in payload["guides"]
                if safe_url(g.get("guide_url"))
            ]
        if job.campaign == "review_request" and "order_id" in ctx and "items" in ctx:
            self._rating_links(ctx, now, utm)

        purpose = CART_LINK_PURPOSE.get(job.campaign)
        if purpose and "cart_id" in ctx:
            expires = now + timedelta(days=shop.link_ttl_days)
            token = self.signer.sign(
                purpose, {"cart_id": ctx["cart_id"], "customer_id": job.customer_id}, expires
            )
            ctx["cart_url"] = f"{self._shop_base}/cart/restore?token={token}&{utm}"
            ctx["cart_link_valid_until"] = day(expires)
        return ctx

    def _order_links(self, ctx: dict[str, Any], job: MailJob, now: datetime, utm: str) -> None:
        """Signed order-status and returns links: they work without a login, so guests (who have no
        account) and customers on another device get there alike; the shop verifies the token."""
        expires = now + timedelta(days=ORDER_LINK_TTL_DAYS)
        token = self.signer.sign("order", {"order_id": ctx["order_id"]}, expires)
        paths = self.shop.shop_paths
        ctx["order_status_url"] = f"{self._shop_base}{quote(paths.order_status)}?token={token}&{utm}"
        ctx["returns_url"] = f"{self._shop_base}{quote(paths.returns)}?token={token}&{utm}"

    def _rating_links(self, ctx: dict[str, Any], now: datetime, utm: str) -> None:
        """Per product five signed links, one per star rating: one click records the rating (no login,
        guests included); the shop's page then offers to add a text."""
        expires = now + timedelta(days=REVIEW_LINK_TTL_DAYS)
        path = quote(self.shop.shop_paths.review)
        for item in ctx["items"]:
            token = self.signer.sign(
                "review", {"order_id": ctx["order_id"], "product_id": item["product_id"]}, expires
            )
            item["rating_urls"] = [
                (stars, f"{self._shop_base}{path}?token={token}&rating={stars}&{utm}") for stars in RATINGS
            ]

    def _opt_out_links(self, job: MailJob, now: datetime) -> tuple[str | None, str | None, dict[str, str]]:
        if not job.is_marketing:
            return None, None, {}
        data = {
            "email": job.email,
            "customer_id": job.customer_id,
            "send_id": job.send_id,
            "campaign": job.campaign,
        }
        expires = now + timedelta(days=OPT_OUT_LINK_TTL_DAYS)
        token = self.signer.sign("unsubscribe", data, expires)
        unsubscribe_url = f"{self._service_base}/u/{token}"
        objection_url = None
        if job.consent_policy == "existing_customer":
            objection_url = f"{self._service_base}/o/{self.signer.sign('objection', data, expires)}"
        headers = {
            "List-Unsubscribe": (
                f"<{unsubscribe_url}>, <mailto:{self.shop.unsubscribe_mailto}?subject=unsubscribe-{token}>"
            ),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        return unsubscribe_url, objection_url, headers

    # ---- public API --------------------------------------------------------------------------------

    def render(self, job: MailJob) -> RenderedMail:
        """Render one mail or raise ``RenderError`` naming campaign/step/variant/template and the cause."""
        where = {"campaign": job.campaign, "step": job.step, "variant": job.variant}
        spec = self.campaigns.get(job.campaign)
        if spec is None or job.step not in spec.steps:
            raise RenderError(
                f"unknown campaign/step {job.campaign}/{job.step} (not in the campaign registry, "
                "dbt/models/segments/*.yml)",
                **where,
            )
        if job.consent_policy != spec.consent_policy:
            raise RenderError(
                f"consent policy {job.consent_policy!r} does not match the campaign's "
                f"{spec.consent_policy!r}",
                **where,
            )
        email = job.email or ""
        if any(c.isspace() or ord(c) < 32 for c in email) or address_problem(email) is not None:
            raise RenderError(
                "recipient address is empty, contains whitespace/control characters or breaks the address "
                f"rule ({address_problem(email.strip())})",
                **where,
            )

        lang = template_language(job.locale, self.shop.default_locale)
        compiled = self._templates_for(lang, job.campaign, job.step, job.variant)
        now = self._fixed_now or datetime.now(UTC)
        template = None
        try:
            ctx = self._context(job, compiled.lang, now)
            unsubscribe_url, objection_url, headers = self._opt_out_links(job, now)
            ctx["unsubscribe_url"] = unsubscribe_url
            ctx["objection_url"] = objection_url
            template = f"{compiled.lang}/{SUBJECTS_FILE}"
            subject = header_safe(compiled.subject.render(ctx))
            ctx["subject"] = subject
            ctx["preheader"] = clean_text(compiled.preheader.render(ctx))
            template = compiled.html_name
            html = compiled.html.render(ctx)
            template = compiled.text_name
            text = _tidy_text(compiled.text.render(ctx))
        except Exception as exc:  # noqa: BLE001 - every failure must become a RenderError for the batch
            location = _template_location(exc.__traceback__, self.templates_dir) or template
            raise RenderError(
                f"{type(exc).__name__}: {exc}", template=location, send_id=job.send_id, **where
            ) from exc
        if not subject:
            raise RenderError("empty subject", template=f"{compiled.lang}/{SUBJECTS_FILE}", **where)

        return RenderedMail(
            send_id=job.send_id,
            campaign=job.campaign,
            step=job.step,
            variant=job.variant,
            trigger_key=job.trigger_key,
            customer_id=job.customer_id,
            to_email=email,
            to_name=display_name(job.first_name, job.last_name),
            subject=subject,
            html=html,
            text=text,
            headers=headers,
            categories=[job.campaign, f"{job.campaign}:{job.step}"],
            is_marketing=job.is_marketing,
            experiment_id=job.experiment_id,
            preheader=ctx["preheader"],
        )

    def render_batch(self, jobs: Iterable[MailJob]) -> list[RenderedMail]:
        """All or nothing: returns every rendered mail, or raises ``RenderError`` for the first failure."""
        return [self.render(job) for job in jobs]

    def check_templates(self) -> list[tuple[str, str, str, str]]:
        """Compile and render every campaign/step/variant/language against sample data (preflight).

        Besides "it renders", checks the legal duties a marketer could break by editing a template: the
        unsubscribe link in marketing mails, the objection link in existing-customer mails, the Impressum,
        and no recommendations in mails that must not advertise. Raises ``RenderError`` on the first
        failure; returns the (campaign, step, variant, locale) combinations checked.
        """
        checked: list[tuple[str, str, str, str]] = []
        samples = {(j.campaign, j.step): j for j in sample_jobs(self.campaigns, locales=("de-DE",))}
        locales = {"de": "de-DE", "en": "en-GB"}
        for campaign, settings in self.campaigns.items():
            policy = settings.consent_policy
            for step in settings.steps:
                base = samples[(campaign, step)]
                for variant in self.variants(campaign, step):
                    for lang in settings.languages:
                        job = _replace(base, variant=variant, locale=locales[lang])
                        mail = self.render(job)
                        _check_duties(self, job, mail)
                        if policy != "none":
                            # The same mail to a customer without marketing consent: no advertising.
                            no_consent = _replace(job, has_marketing_consent=False)
                            if policy == "existing_customer":
                                _check_duties(self, no_consent, self.render(no_consent))
                        checked.append((campaign, step, variant, locales[lang]))
        return checked

    def check_experiments(self, campaigns: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """Refuse experiments that do not vary what they say (campaign settings ``experiment.varies``).

        Renders every non-control variant of every step next to the control, with sample data, in every
        template language, and compares: subject line or preheader (aspect ``subject``), HTML and text
        body (``body``; both parts or neither), plus a variant's ``extra_delay_minutes`` (``send_delay``).
        A variant that is identical to the control in a step is refused (the experiment would report a
        difference between two equal mails), as is one that changes an aspect the experiment does not
        declare, and an aspect declared that no variant changes. Raises ``RenderError``; returns the
        (campaign, step, variant) combinations checked.
        """
        # One clock for both renders: link expiries in the tokens must not differ by a second.
        previous, self._fixed_now = self._fixed_now, self._fixed_now or datetime.now(UTC)
        try:
            return self._check_experiments(campaigns)
        finally:
            self._fixed_now = previous

    def _check_experiments(self, campaigns: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        checked: list[tuple[str, str, str]] = []
        samples = {(j.campaign, j.step): j for j in sample_jobs(self.campaigns, locales=("de-DE",))}
        locales = {"de": "de-DE", "en": "en-GB"}
        for name, campaign in campaigns.items():
            experiment = getattr(campaign, "experiment", None)
            if experiment is None or name not in self.campaigns:
                continue
            declared = set(experiment.varies)
            shown: set[str] = set()
            for variant in experiment.variants:
                if variant == DEFAULT_VARIANT:
                    continue
                for step in campaign.steps:
                    where = {"campaign": name, "step": step, "variant": variant}
                    changed: set[str] = set()
                    if experiment.extra_delay_minutes.get(variant):
                        changed.add("send_delay")
                    for lang in self.campaigns[name].languages:
                        base = _replace(samples[(name, step)], locale=locales[lang])
                        changed |= _differences(
                            self.render(_replace(base, variant=DEFAULT_VARIANT)),
                            self.render(_replace(base, variant=variant)),
                            where,
                        )
                    if not changed:
                        raise RenderError(
                            f"experiment {experiment.id!r}: variant {variant!r} renders exactly like the "
                            "control in this step and has no extra_delay_minutes, so the experiment would "
                            "compare two identical mails (give it its own subject or templates, or a delay)",
                            **where,
                        )
                    undeclared = sorted(changed - declared)
                    if undeclared:
                        raise RenderError(
                            f"experiment {experiment.id!r}: variant {variant!r} changes the "
                            f"{' and '.join(undeclared)} although the experiment declares varies: "
                            f"{sorted(declared)} (declare it, or make the variant change only that)",
                            **where,
                        )
                    shown |= changed
                    checked.append((name, step, variant))
            unused = sorted(declared - shown)
            if unused:
                raise RenderError(
                    f"experiment {experiment.id!r} declares varies: {sorted(declared)}, but no variant "
                    f"changes the {' or '.join(unused)}",
                    campaign=name,
                )
        return checked


def _differences(control: RenderedMail, variant: RenderedMail, where: dict[str, str]) -> set[str]:
    """Which aspects (subject, body) of a variant's mail differ from the control's. The variant's own name
    in the links' utm_content and its preheader (counted as subject) are not body differences."""
    changed: set[str] = set()
    if control.subject != variant.subject or control.preheader != variant.preheader:
        changed.add("subject")

    def normal(mail: RenderedMail, text: str) -> str:
        # the subject is the HTML's <title>, the preheader its hidden first line: both count as "subject"
        text = re.sub(f"utm_content={re.escape(mail.variant)}(?![A-Za-z0-9_])", "utm_content=*", text)
        for line, mark in ((mail.preheader, "\x00"), (mail.subject, "\x01")):
            if line:
                text = text.replace(str(escape(line)), mark)
        return text

    html_differs = normal(variant, variant.html) != normal(control, control.html)
    text_differs = normal(variant, variant.text) != normal(control, control.text)
    if html_differs != text_differs:
        part = "HTML" if html_differs else "text"
        raise RenderError(
            f"variant {variant.variant!r} changes only the {part} part of the body: text-only readers "
            "would see another mail than HTML readers (change both parts or neither)",
            **where,
        )
    if html_differs:
        changed.add("body")
    return changed


def _replace(job: MailJob, **changes: Any) -> MailJob:
    values = {name: getattr(job, name) for name in job.__dataclass_fields__}
    values.update(changes)
    values["payload"] = copy.deepcopy(values["payload"])
    return MailJob(**values)


def _check_duties(renderer: MailRenderer, job: MailJob, mail: RenderedMail) -> None:
    def fail(cause: str) -> None:
        raise RenderError(
            cause,
            campaign=job.campaign,
            step=job.step,
            variant=job.variant,
            template=f"{template_language(job.locale, 'de')}/{renderer._template(job.campaign, job.step)}",
        )

    company = renderer.shop.impressum.company
    legal = renderer.shop.legal
    assert legal is not None  # the renderer refuses settings without it
    for part, body in (("HTML", mail.html), ("text", mail.text)):
        if company not in body.replace("&amp;", "&"):
            fail(f"the {part} body lacks the Impressum (company {company!r})")
        for label, url in (("privacy policy", legal.privacy_url), ("Impressum", legal.imprint_url)):
            if url not in body.replace("&amp;", "&"):
                fail(f"the {part} body lacks the {label} link ({url})")
        if job.is_marketing and f"{renderer.shop.service_base_url.rstrip('/')}/u/" not in body:
            fail(f"marketing mail without unsubscribe link in the {part} body")
        if (
            job.consent_policy == "existing_customer"
            and f"{renderer.shop.service_base_url.rstrip('/')}/o/" not in body
        ):
            fail(f"existing-customer mail without objection link in the {part} body")
        if not (job.is_marketing and job.has_marketing_consent):
            for rec in job.payload.get("recommendations") or []:
                if rec.get("name") and rec["name"] in body:
                    fail(f"recommendation {rec['name']!r} in a mail that must not advertise ({part})")
    if job.is_marketing != ("List-Unsubscribe" in mail.headers):
        fail("List-Unsubscribe header must be present exactly on marketing mails")


def _money(amount: Any, currency: str | None = None, *, locale: str, default_currency: str) -> str:
    return format_money(amount, currency or default_currency, locale)


def _item(
    index: int, raw: Any, link: Callable[..., str], money: Callable[..., str], lang: str
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"item {index} is not an object")
    missing = [key for key in ("name", "unit_price") if raw.get(key) in (None, "")]
    if missing:
        raise ValueError(f"item {index} lacks {', '.join(missing)}")
    quantity = int(raw.get("quantity") or 1)
    currency = raw.get("currency") or None
    return {
        "product_id": clean_text(raw.get("product_id")),
        "name": typographic_quotes(clean_text(raw["name"]), lang),
        "quantity": quantity,
        "unit_price": money(raw["unit_price"], currency),
        "line_total": money(_mul(raw["unit_price"], quantity), currency),
        # Grundpreis (PAngV) when the product export carries its net content
        "base_price": unit_price(
            raw["unit_price"],
            raw.get("content_amount"),
            raw.get("content_unit"),
            partial(money, currency=currency),
        ),
        "image_url": safe_url(raw.get("image_url")),
        "url": link(raw["url"]) if raw.get("url") else None,
    }


_REASON_KINDS = ("bought_together", "category", "popular")


def _recommendation(
    index: int, raw: Any, link: Callable[..., str], money: Callable[..., str], lang: str
) -> dict[str, Any]:
    """A recommended product (an item without quantity) and why it is recommended: ``reason.kind`` is
    bought_together (with ``reason.product_name``, the product it goes with), category (``reason.category``)
    or popular; the language's template turns it into the line under the product."""
    item = _item(index, raw, link, money, lang)
    reason = raw.get("reason") if isinstance(raw.get("reason"), dict) else {}
    kind = reason.get("kind") if reason.get("kind") in _REASON_KINDS else "popular"
    anchor = typographic_quotes(clean_text(reason.get("product_name")), lang)
    category = clean_text(reason.get("category") or raw.get("category"))
    if (kind == "bought_together" and not anchor) or (kind == "category" and not category):
        kind = "popular"
    item["reason"] = {"kind": kind, "product_name": anchor, "category": category}
    return item


def _mul(amount: Any, quantity: int) -> str:
    return str(Decimal(str(amount)) * quantity)


_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def _tidy_text(text: str) -> str:
    # The substring checks are much cheaper than the regexes, which most mails do not need.
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip() + "\n"


__all__ = ["MailRenderer", "RenderError", "inline_css_into_template", "sample_jobs"]
