"""Mail rendering: content duties, consent rules, links, locale formatting, safety, all-or-nothing batches."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import css_inline
import pytest

from nachfass.core.campaigns import load_campaigns
from nachfass.core.links import LinkSigner
from nachfass.core.mail import render as render_module
from nachfass.core.mail.candidates import job_from_row
from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.render import MailRenderer, RenderError, inline_css_into_template, sample_jobs
from nachfass.core.paths import TEMPLATES_DIR
from nachfass.core.shop import ShopSettings, load_shop_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEY = "test-signing-key-0123456789abcdef"
REC_NAME = "Gartenschere Profi"  # a recommendation in every sample payload that carries any
HOSTILE_FIRST = "<script>alert(1)</script>"
HOSTILE_LAST = '"\r\nBcc: x@evil.test'


@pytest.fixture(scope="module")
def shop() -> ShopSettings:
    return load_shop_settings()


@pytest.fixture(scope="module")
def signer() -> LinkSigner:
    return LinkSigner(KEY)


@pytest.fixture(scope="module")
def renderer(shop: ShopSettings, signer: LinkSigner) -> MailRenderer:
    return MailRenderer(shop, signer, now=NOW)


@pytest.fixture(scope="module")
def mails(renderer: MailRenderer) -> list[tuple[MailJob, RenderedMail]]:
    jobs = sample_jobs()
    return list(zip(jobs, renderer.render_batch(jobs), strict=True))


def _sample(campaign: str, step: str = "1", locale: str = "de-DE", variant: str = "control") -> MailJob:
    return next(
        j
        for j in sample_jobs(locales=(locale,))
        if (j.campaign, j.step, j.variant) == (campaign, step, variant)
    )


def _hrefs(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]


# ---- every mail ---------------------------------------------------------------------------------------


def test_every_campaign_step_variant_renders(mails: list[tuple[MailJob, RenderedMail]]) -> None:
    combos = {(j.campaign, j.step, j.variant, j.locale) for j, _ in mails}
    for campaign, settings in load_campaigns().items():
        steps = settings.steps
        for step in steps:
            for locale in ("de-DE", "en-GB"):
                assert (campaign, step, "control", locale) in combos
    assert ("abandoned_cart", "1", "b", "de-DE") in combos
    for job, mail in mails:
        assert mail.send_id == job.send_id and mail.to_email == job.email
        assert mail.categories == [job.campaign, f"{job.campaign}:{job.step}"]
        assert mail.subject and "\n" not in mail.subject
        assert mail.html.startswith("<!DOCTYPE html>") and mail.text.strip()
        assert not {"to", "from", "subject"} & {k.lower() for k in mail.headers}
        assert mail.is_marketing == job.is_marketing


def test_contact_impressum_and_reason_in_every_mail(
    mails: list[tuple[MailJob, RenderedMail]], shop: ShopSettings
) -> None:
    imp = shop.impressum
    for job, mail in mails:
        for body in (mail.html, mail.text):
            for value in (
                imp.company,
                imp.street,
                imp.city,
                imp.managing_directors,
                imp.register,
                imp.vat_id,
            ):
                assert value in body, (job.campaign, value)
            # the phone number with no-break spaces, so it never wraps
            assert shop.contact.email in body and shop.contact.phone.replace(" ", "\u00a0") in body
            assert (
                ("Sie erhalten diese" in body)
                if job.locale.startswith("de")
                else ("You are receiving" in body)
            )


def test_cart_reason_text(mails: list[tuple[MailJob, RenderedMail]]) -> None:
    _, mail = next((j, m) for j, m in mails if j.campaign == "abandoned_cart" and j.locale == "de-DE")
    assert (
        "Sie erhalten diese E-Mail, weil Sie in unserem Shop einen Warenkorb angelegt und dem Erhalt von "
        "E-Mails zugestimmt haben." in mail.html
    )


@pytest.mark.parametrize(
    ("salutation", "first", "last", "de", "en"),
    [
        ("Frau", "Anna", "Schmidt", "Guten Tag Frau Schmidt,", "Dear Ms Schmidt,"),
        ("Herr", "Jonas", "Müller", "Guten Tag Herr Müller,", "Dear Mr Müller,"),
        ("divers", "Kim", "Schneider", "Guten Tag Kim Schneider,", "Dear Kim Schneider,"),
        (None, "Kim", "Schneider", "Guten Tag Kim Schneider,", "Dear Kim Schneider,"),
        ("Frau", None, None, "Guten Tag,", "Hello,"),
        ("divers", "Kim", None, "Guten Tag,", "Hello,"),
        (None, None, None, "Guten Tag,", "Hello,"),
    ],
)
def test_salutation(renderer: MailRenderer, salutation, first, last, de, en) -> None:
    for locale, expected in (("de-DE", de), ("en-GB", en)):
        job = replace(
            _sample("order_thanks", locale=locale), salutation=salutation, first_name=first, last_name=last
        )
        mail = renderer.render(job)
        assert f">{expected}</p>" in mail.html
        assert mail.text.startswith(expected + "\n")
        assert mail.to_name == (" ".join(p for p in (first, last) if p) or None)


def test_trigger_references(mails: list[tuple[MailJob, RenderedMail]]) -> None:
    for job, mail in mails:
        if "items" in job.payload:
            # cross_sell refers to the order and its first item; all other mails list every item
            for item in job.payload["items"][:1] if job.campaign == "cross_sell" else job.payload["items"]:
                assert item["name"] in mail.html and item["name"] in mail.text
                if item.get("image_url") and job.campaign != "cross_sell":
                    assert f'src="{item["image_url"]}"' in mail.html
                    assert f'alt="{item["name"]}"' in mail.html
        if job.campaign in ("order_thanks", "shipping_update", "review_request", "cross_sell"):
            assert job.payload["order_id"] in mail.subject + mail.html
            assert job.payload["order_id"] in mail.text
        if job.campaign == "support_followup":
            assert "T-8812" in mail.subject and "T-8812" in mail.html and "T-8812" in mail.text
        if job.campaign == "shipping_update":
            tracking = job.payload["shipment"]["tracking_url"]
            if job.step == "shipped":
                assert "DHL" in mail.html and "DHL" in mail.text
                assert tracking in mail.text and tracking.replace("&", "&amp;") in mail.html
            else:
                assert "ratgeber/hochbeet-aufbauen" in mail.html  # product guide


def test_all_images_have_alt_text(mails: list[tuple[MailJob, RenderedMail]]) -> None:
    for _, mail in mails:
        for tag in re.findall(r"<img [^>]*>", mail.html):
            assert re.search(r'alt="[^"]+"', tag), tag


# ---- links --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("campaign", "purpose"), [("abandoned_cart", "cart"), ("checkout_recovery", "checkout")]
)
def test_cart_cta_is_signed_restore_link(
    renderer: MailRenderer, signer: LinkSigner, shop: ShopSettings, campaign: str, purpose: str
) -> None:
    job = _sample(campaign)
    mail = renderer.render(job)
    links = [h for h in _hrefs(mail.html) if "/cart/restore?" in h]
    assert links, "no cart restore CTA"
    url = urlsplit(links[0])
    assert f"{url.scheme}://{url.netloc}" == shop.shop_base_url
    query = parse_qs(url.query)
    assert query["utm_campaign"] == [campaign] and query["utm_content"] == ["control"]
    token = query["token"][0]
    assert signer.verify(token, purpose, NOW) == {
        "cart_id": job.payload["cart_id"],
        "customer_id": job.customer_id,
    }
    assert links[0] in mail.text
    # expires after link_ttl_days, refused afterwards
    signer.verify(token, purpose, NOW + timedelta(days=shop.link_ttl_days) - timedelta(seconds=1))
    with pytest.raises(ValueError):
        signer.verify(token, purpose, NOW + timedelta(days=shop.link_ttl_days, seconds=1))
    with pytest.raises(ValueError):
        signer.verify(token, "unsubscribe", NOW)


def test_shop_links_carry_utm(mails: list[tuple[MailJob, RenderedMail]], shop: ShopSettings) -> None:
    host = urlsplit(shop.shop_base_url).netloc
    for job, mail in mails:
        shop_links = [h for h in _hrefs(mail.html) if urlsplit(h).netloc == host]
        assert shop_links
        for link in shop_links:
            query = parse_qs(urlsplit(link).query)
            assert query.get("utm_source") == [shop.utm_source], link
            assert query.get("utm_medium") == ["email"], link
            assert query.get("utm_campaign") == [job.campaign], link
            assert query.get("utm_content") == [job.variant], link


def test_marketing_mails_have_unsubscribe(
    mails: list[tuple[MailJob, RenderedMail]], signer: LinkSigner, shop: ShopSettings
) -> None:
    service = shop.service_base_url
    for job, mail in mails:
        if not job.is_marketing:
            continue
        header = mail.headers["List-Unsubscribe"]
        match = re.fullmatch(
            rf"<{re.escape(service)}/u/([\w.-]+)>, "
            rf"<mailto:{re.escape(shop.unsubscribe_mailto)}\?subject=unsubscribe-([\w.-]+)>",
            header,
        )
        assert match, header
        assert match.group(1) == match.group(2)
        assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        data = signer.verify(match.group(1), "unsubscribe", NOW + timedelta(days=365))
        assert data == {
            "email": job.email,
            "customer_id": job.customer_id,
            "send_id": job.send_id,
            "campaign": job.campaign,
        }
        url = f"{service}/u/{match.group(1)}"
        assert url in _hrefs(mail.html) and url in mail.text


def test_transactional_mails_have_no_unsubscribe_headers(
    mails: list[tuple[MailJob, RenderedMail]], shop: ShopSettings
) -> None:
    transactional = [(j, m) for j, m in mails if j.consent_policy == "none"]
    assert len(transactional) == 8
    for _, mail in transactional:
        assert mail.headers == {}
        assert f"{shop.service_base_url}/u/" not in mail.html + mail.text
        assert f"{shop.service_base_url}/o/" not in mail.html + mail.text


def test_objection_notice_only_on_existing_customer_mails(
    mails: list[tuple[MailJob, RenderedMail]], signer: LinkSigner, shop: ShopSettings
) -> None:
    notice = (
        "Sie können der Verwendung Ihrer E-Mail-Adresse für Werbung jederzeit widersprechen, "
        "ohne dass hierfür andere als die Übermittlungskosten nach den Basistarifen entstehen."
    )
    for job, mail in mails:
        has_link = f"{shop.service_base_url}/o/" in mail.html
        assert has_link == (job.consent_policy == "existing_customer"), job.campaign
        if job.campaign == "review_request":
            if job.locale == "de-DE":
                assert notice in mail.html and notice in mail.text
            token = re.search(r"/o/([\w.-]+)", mail.text).group(1)
            assert signer.verify(token, "objection", NOW)["send_id"] == job.send_id


# ---- consent: no advertising without it -----------------------------------------------------------------


def test_no_recommendations_in_transactional_mails(mails: list[tuple[MailJob, RenderedMail]]) -> None:
    carrying = [(j, m) for j, m in mails if j.consent_policy == "none" and j.payload.get("recommendations")]
    assert carrying, "samples should include transactional payloads with recommendations"
    for _, mail in carrying:
        assert REC_NAME not in mail.html and REC_NAME not in mail.text


def test_recommendations_only_with_consent(renderer: MailRenderer) -> None:
    for campaign in ("abandoned_cart", "cross_sell", "reactivation"):
        job = _sample(campaign)
        assert REC_NAME in renderer.render(job).html
        without = renderer.render(replace(job, has_marketing_consent=False))
        assert REC_NAME not in without.html and REC_NAME not in without.text


# ---- locale -------------------------------------------------------------------------------------------


def _nbsp(mail: RenderedMail) -> RenderedMail:
    # babel puts a no-break space between amount and currency sign ("49,90\u00a0€"), as it should.
    return replace(mail, html=mail.html.replace("\u00a0", " "), text=mail.text.replace("\u00a0", " "))


def test_locale_formatting(renderer: MailRenderer) -> None:
    de = _nbsp(renderer.render(_sample("order_thanks", locale="de-DE")))
    assert "49,90\u00a0€" in renderer.render(_sample("order_thanks", locale="de-DE")).html
    assert "49,90 €" in de.html and "67,80 €" in de.html and "22. November 2026" in de.html
    assert "49,90 €" in de.text and "22. November 2026" in de.text
    en = _nbsp(renderer.render(_sample("order_thanks", locale="en-GB")))
    assert "€49.90" in en.html and "€67.80" in en.html and "22 November 2026" in en.html
    assert "Thank you for your order" in en.html


@pytest.mark.parametrize(
    ("locale", "greeting"),
    [
        ("de-DE", "Guten Tag"),
        ("de-AT", "Guten Tag"),
        ("de-CH", "Guten Tag"),
        ("en-US", "Dear"),
        ("en", "Dear"),
        ("fr-FR", "Guten Tag"),
        ("", "Guten Tag"),
        ("xx_YY", "Guten Tag"),
    ],
)
def test_locale_selects_template_language(renderer: MailRenderer, locale: str, greeting: str) -> None:
    mail = renderer.render(replace(_sample("order_thanks"), locale=locale))
    assert mail.text.startswith(greeting)


# ---- safety -------------------------------------------------------------------------------------------


def _hostile(job: MailJob) -> MailJob:
    payload = dict(job.payload)
    if "items" in payload:
        payload["items"] = [
            {
                **payload["items"][0],
                "name": "<img src=x onerror=alert(1)>\r\nBcc: y@evil.test",
                "url": "javascript:alert(1)",
                "image_url": "data:text/html,<script>alert(1)</script>",
            },
            *payload["items"][1:],
        ]
    # salutation None: the greeting then uses both names ("Guten Tag <first> <last>,")
    return replace(job, first_name=HOSTILE_FIRST, last_name=HOSTILE_LAST, salutation=None, payload=payload)


def test_hostile_customer_data_is_escaped(renderer: MailRenderer) -> None:
    jobs = [_hostile(j) for j in sample_jobs()]
    for mail in renderer.render_batch(jobs):
        assert "<script>" not in mail.html and "<img src=x" not in mail.html
        assert "&lt;script&gt;" in mail.html
        assert "javascript:" not in mail.html and "data:text/html" not in mail.html
        for header_value in (mail.subject, *mail.headers.values(), *mail.headers):
            assert "\r" not in header_value and "\n" not in header_value
            assert "<script>" not in header_value
        assert "\r\nBcc" not in mail.html + mail.subject
        # The display name stays the customer's (plain-text) name, but on one line: the sender encodes it.
        assert mail.to_name == '<script>alert(1)</script> " Bcc: x@evil.test'
        assert "\r" not in mail.to_name and "\n" not in mail.to_name


def test_hostile_product_name_in_subject_is_one_line(renderer: MailRenderer) -> None:
    job = _hostile(_sample("abandoned_cart", variant="b"))
    mail = renderer.render(job)
    assert mail.subject.startswith("Noch in Ihrem Warenkorb: <img src=x onerror=alert(1)> Bcc: y@evil.test")
    assert "\r" not in mail.subject and "\n" not in mail.subject


def test_recipient_address_with_newline_refused(renderer: MailRenderer) -> None:
    with pytest.raises(RenderError, match="recipient address"):
        renderer.render(replace(_sample("order_thanks"), email="a@example.org\r\nBcc: x@evil.test"))


def test_policy_mismatch_refused(renderer: MailRenderer) -> None:
    with pytest.raises(RenderError, match="consent policy"):
        renderer.render(replace(_sample("cross_sell"), consent_policy="none"))


def test_missing_payload_key_fails(renderer: MailRenderer) -> None:
    job = _sample("order_thanks")
    payload = {k: v for k, v in job.payload.items() if k != "order_id"}
    with pytest.raises(RenderError) as info:
        renderer.render_batch([_sample("abandoned_cart"), replace(job, payload=payload)])
    err = info.value
    assert (err.campaign, err.step, err.variant) == ("order_thanks", "1", "control")
    assert "order_number" in str(err) or "order_id" in str(err)


# ---- broken templates ---------------------------------------------------------------------------------


@pytest.fixture()
def templates_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mail_templates"
    shutil.copytree(TEMPLATES_DIR, target)
    return target


def test_strict_undefined(templates_copy: Path, shop: ShopSettings, signer: LinkSigner) -> None:
    path = templates_copy / "de/order_thanks/1.html"
    path.write_text(
        path.read_text().replace("{% block content %}", "{% block content %}<p>{{ voucher_code }}</p>")
    )
    renderer = MailRenderer(shop, signer, templates_dir=templates_copy, now=NOW)
    result = None
    with pytest.raises(RenderError) as info:
        result = renderer.render_batch(sample_jobs(locales=("de-DE",)))
    assert result is None
    assert info.value.campaign == "order_thanks"
    assert "de/order_thanks/1.html" in str(info.value) and "voucher_code" in str(info.value)


def test_broken_template_fails_batch_before_anything_returned(
    templates_copy: Path, shop: ShopSettings, signer: LinkSigner
) -> None:
    path = templates_copy / "de/support_followup/1.txt"
    path.write_text(path.read_text() + "\n{% if %}\n")
    renderer = MailRenderer(shop, signer, templates_dir=templates_copy, now=NOW)
    jobs = sample_jobs(locales=("de-DE",))
    assert jobs[-1].campaign == "support_followup"  # the broken one comes last
    result = None
    with pytest.raises(RenderError) as info:
        result = renderer.render_batch(jobs)
    assert result is None
    assert "support_followup/1" in str(info.value) and "1.txt" in str(info.value)
    with pytest.raises(RenderError):
        renderer.check_templates()


def test_check_templates(renderer: MailRenderer) -> None:
    checked = renderer.check_templates()
    assert ("abandoned_cart", "1", "b", "en-GB") in checked
    assert len(checked) == 28


def test_check_templates_catches_missing_unsubscribe(
    templates_copy: Path, shop: ShopSettings, signer: LinkSigner
) -> None:
    path = templates_copy / "en/base.txt"
    path.write_text(path.read_text().replace("{{ unsubscribe_url }}", "(link removed)"))
    renderer = MailRenderer(shop, signer, templates_dir=templates_copy, now=NOW)
    with pytest.raises(RenderError, match="unsubscribe"):
        renderer.check_templates()


def test_variant_subject_falls_back_to_default(renderer: MailRenderer) -> None:
    job = replace(_sample("order_thanks"), variant="z")
    assert renderer.render(job).subject == "Vielen Dank für Ihre Bestellung 100234"
    assert renderer.render(_sample("abandoned_cart", variant="b")).subject.startswith(
        "Noch in Ihrem Warenkorb:"
    )


# ---- CSS inlining -------------------------------------------------------------------------------------


def test_css_inlined_once_per_template(shop: ShopSettings, signer: LinkSigner, monkeypatch) -> None:
    calls: list[int] = []
    real_fragment, real_inliner = css_inline.inline_fragment, css_inline.CSSInliner

    def counting_fragment(*args, **kwargs):
        calls.append(1)
        return real_fragment(*args, **kwargs)

    class CountingInliner:  # css_inline.CSSInliner is a Rust type and cannot be subclassed
        def __init__(self, **kwargs):
            self._inner = real_inliner(**kwargs)

        def inline(self, *args, **kwargs):
            calls.append(1)
            return self._inner.inline(*args, **kwargs)

    monkeypatch.setattr(render_module.css_inline, "inline_fragment", counting_fragment)
    monkeypatch.setattr(render_module.css_inline, "CSSInliner", CountingInliner)
    renderer = MailRenderer(shop, signer, now=NOW)
    job = _sample("abandoned_cart")
    first = renderer.render(job)
    after_first = len(calls)
    assert after_first == 5  # 1.html, de/base.html, layout.html, components.html, de/blocks.html
    for _ in range(20):
        renderer.render(job)
    assert len(calls) == after_first
    assert 'style="' in first.html and "<style>@media" in first.html


def test_inliner_rejects_tags_the_html_parser_would_move() -> None:
    with pytest.raises(Exception, match="directly inside a table"):
        inline_css_into_template("<table><tbody><tr>{{ x }}<td>a</td></tr></tbody></table>", "", "t.html")
    with pytest.raises(Exception, match="tbody"):
        inline_css_into_template(
            "<table>{% for r in rows %}<tr><td>a</td></tr>{% endfor %}</table>", "", "t.html"
        )
    ok = inline_css_into_template(
        "<table><tbody>{% for r in rows %}"
        '<tr><td class="a" title="{{ r }}">{{ r }}</td></tr>'
        "{% endfor %}</tbody></table>",
        ".a { color: red }",
        "t.html",
    )
    assert (
        '{% for r in rows %}<tr><td class="a" title="{{ r }}" style="color: red;">{{ r }}</td></tr>'
        "{% endfor %}" in ok
    )


def test_text_part_not_html_escaped(renderer: MailRenderer) -> None:
    job = _sample("order_thanks")
    items = [{**job.payload["items"][0], "name": "Erde & Dünger"}]
    mail = renderer.render(replace(job, payload={**job.payload, "items": items}))
    assert "Erde & Dünger" in mail.text and "Erde &amp; Dünger" in mail.html


# ---- candidate rows -----------------------------------------------------------------------------------


def test_job_from_row() -> None:
    row = {
        "campaign": "abandoned_cart",
        "step": 1,
        "variant": None,
        "trigger_key": "cart:K1",
        "customer_id": "C1",
        "email": "a@example.org",
        "first_name": float("nan"),
        "last_name": "Meier",
        "salutation": "Frau",
        "locale": "de-AT",
        "consent_policy": "required",
        "has_marketing_consent": True,
        "payload": '{"cart_id": "K1", "items": []}',
        "experiment_id": None,
        "decision": "send",
        "reason": "ok",
    }
    job = job_from_row(row)
    assert job.step == "1" and job.variant == "control" and job.first_name is None
    assert job.payload == {"cart_id": "K1", "items": []} and job.has_marketing_consent is True
    with pytest.raises(ValueError, match="consent_policy"):
        job_from_row({**row, "consent_policy": "maybe"})
