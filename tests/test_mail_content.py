"""What the mails contain (issue 13): products with reasons in sales mails, star ratings, guest-safe signed
links, shipping facts, price notes and unit prices, brand, legal links, typography."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nachfass.core.campaigns import load_campaigns
from nachfass.core.links import LinkSigner
from nachfass.core.mail.formatting import format_money, typographic_quotes, unit_price
from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.render import MailRenderer, sample_jobs
from nachfass.core.shop import ShopSettings, load_shop_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEY = "test-signing-key-0123456789abcdef"
NBSP = "\u00a0"
SALES = {"abandoned_cart", "cross_sell", "reactivation"}  # mails that show recommended products


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


def _mail(mails, campaign: str, step: str = "1", locale: str = "de-DE", variant: str = "control"):
    return next(
        (j, m)
        for j, m in mails
        if (j.campaign, j.step, j.locale, j.variant) == (campaign, step, locale, variant)
    )


def _content(html: str) -> str:
    """The mail's own part of the HTML: between the greeting and the contact block (no service bar,
    no preheader, no footer)."""
    return html.split('class="greeting"', 1)[1].split('class="contact"', 1)[0]


def _hrefs(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


# ---- recommendations ----


def test_sales_mails_show_a_product_grid_with_reasons(mails) -> None:
    for job, mail in mails:
        if job.campaign not in SALES:
            continue
        assert 'class="grid-cell"' in mail.html, (job.campaign, job.step)
        if job.locale == "de-DE":
            assert "Passend zu Hochbeet „Kräutergarten“ aus Lärchenholz" in mail.html
            assert (
                "Beliebt in Gartenwerkzeug" in mail.html
                or job.campaign == "abandoned_cart"
                and job.step == "1"
            )
        else:
            assert "Goes with Hochbeet „Kräutergarten“ aus Lärchenholz" in mail.html
        # the text part names the products and why, too
        assert "Gartenschere Profi" in mail.text and ("Passend zu" in mail.text or "Goes with" in mail.text)


def test_cart_mails_say_customers_also_bought(mails) -> None:
    for step, shown in (("1", 2), ("2", 4)):
        _, mail = _mail(mails, "abandoned_cart", step)
        assert "Kunden kauften auch" in mail.html
        assert mail.html.count('class="card-name"') == shown


def test_two_column_grid_fills_the_last_row(renderer: MailRenderer) -> None:
    job = next(j for j in sample_jobs(locales=("de-DE",)) if j.campaign == "cross_sell")
    job = replace(job, payload={**job.payload, "recommendations": job.payload["recommendations"][:3]})
    html = renderer.render(job).html
    rows = re.findall(r"<tr>(.*?)</tr>", html.split('class="grid"')[1].split("</table>")[0], flags=re.S)
    assert [row.count('class="grid-cell"') for row in rows] == [2, 2]  # the third card gets an empty partner


@pytest.mark.parametrize(
    "campaign", sorted(n for n, c in load_campaigns().items() if c.consent_policy == "none")
)
def test_transactional_mails_never_advertise(mails, campaign: str) -> None:
    for job, mail in mails:
        if job.campaign == campaign:
            assert 'class="grid-cell"' not in mail.html and "Gartenschere Profi" not in mail.text
            assert "inkl. MwSt" not in mail.html  # no price advertising either


# ---- review request ----


def test_review_request_has_five_signed_star_links_per_product_and_no_prices(mails, signer) -> None:
    job, mail = _mail(mails, "review_request")
    assert "€" not in _content(mail.html) and "€" not in mail.text
    links = [h for h in _hrefs(mail.html) if "rating=" in h]
    assert len(links) == 5 * len(job.payload["items"])
    for item in job.payload["items"]:
        mine = [
            h for h in links if signer.verify(_token(h), "review", NOW)["product_id"] == item["product_id"]
        ]
        assert sorted(int(parse_qs(urlsplit(h).query)["rating"][0]) for h in mine) == [1, 2, 3, 4, 5]
        assert signer.verify(_token(mine[0]), "review", NOW) == {
            "order_id": job.payload["order_id"],
            "product_id": item["product_id"],
        }
        assert all(urlsplit(h).path == "/bewertung" for h in mine)
    assert 'aria-label="4 von 5 Sternen"' in mail.html
    assert "4 von 5 Sternen: https://" in mail.text
    assert "/konto/" not in mail.html


# ---- guest-safe links ----


def test_no_account_link_in_any_mail(mails) -> None:
    """Guests have no customer account: no mail links to /konto/ (the signed links work for everyone)."""
    for job, mail in mails:
        assert "/konto/" not in mail.html and "/konto/" not in mail.text, (job.campaign, job.step)
        assert "Kundenkonto anmelden" not in mail.html


def test_order_status_and_returns_links_are_signed_without_personal_data(mails, signer, shop) -> None:
    for campaign, step in (
        ("order_thanks", "1"),
        ("shipping_update", "shipped"),
        ("shipping_update", "delivered"),
    ):
        job, mail = _mail(mails, campaign, step)
        status = [h for h in _hrefs(mail.html) if urlsplit(h).path == "/bestellstatus"]
        assert status, campaign
        assert signer.verify(_token(status[0]), "order", NOW) == {"order_id": job.payload["order_id"]}
        assert status[0].split("?")[0] in mail.text
    _, delivered = _mail(mails, "shipping_update", "delivered")
    returns = [h for h in _hrefs(delivered.html) if urlsplit(h).path == "/ruecksendung"]
    assert len(returns) == 1 and signer.verify(_token(returns[0]), "order", NOW)
    # returns is a text link, not the button
    assert not re.search(r'class="btn-link"[^>]*>[^<]*R[üu]cksendung', delivered.html)
    assert "Rücksendung online anmelden" in delivered.html


# ---- shipping ----


def test_shipped_mail_shows_carrier_tracking_number_link_and_expected_delivery(mails) -> None:
    job, mail = _mail(mails, "shipping_update", "shipped")
    assert "00340434161234567890" in mail.html and "Sendungsnummer" in mail.html
    assert f"25.{NBSP}November{NBSP}2026" in mail.html  # expected delivery, no-break spaces
    assert "Voraussichtliche Zustellung" in mail.html and "Voraussichtliche Zustellung" in mail.text
    assert job.payload["shipment"]["tracking_url"] in [h for h in _hrefs(mail.html)]
    assert "SH-5501" not in mail.html  # the internal shipment id is not for customers


def test_tracking_link_built_from_the_carrier_when_the_export_has_only_a_number(renderer, shop) -> None:
    job = next(j for j in sample_jobs(locales=("de-DE",)) if j.step == "shipped")
    shipment = {
        **job.payload["shipment"],
        "tracking_url": None,
        "carrier": "DPD",
        "tracking_number": "0815 4711",
    }
    mail = renderer.render(replace(job, payload={**job.payload, "shipment": shipment}))
    assert "https://tracking.dpd.de/status/de_DE/parcel/0815%204711" in _hrefs(mail.html)
    unknown = {**shipment, "carrier": "Kurier Müller"}
    mail = renderer.render(replace(job, payload={**job.payload, "shipment": unknown}))
    assert "Sendung verfolgen" not in mail.html and "Bestellstatus ansehen" in mail.html


# ---- price notes and unit prices ----


def test_price_note_next_to_prices_in_every_advertising_mail(mails) -> None:
    for job, mail in mails:
        if job.is_marketing and "€" in _content(mail.html):
            note = "Alle Preise inkl. MwSt., zzgl." if job.locale == "de-DE" else "All prices include VAT"
            assert note in mail.html and note in mail.text, (job.campaign, job.step)


def test_unit_price_for_goods_sold_by_volume_or_weight(mails) -> None:
    _, cart = _mail(mails, "abandoned_cart")
    assert f"Grundpreis 0,22{NBSP}€{NBSP}/{NBSP}1{NBSP}l" in cart.html  # 8,95 € for 40 l
    _, cross = _mail(mails, "cross_sell")
    assert f"Grundpreis 3,20{NBSP}€{NBSP}/{NBSP}1{NBSP}kg" in cross.html  # 7,99 € for 2,5 kg
    assert f"(Grundpreis 3,20{NBSP}€{NBSP}/{NBSP}1{NBSP}kg)" in cross.text
    _, en = _mail(mails, "cross_sell", locale="en-GB")
    assert f"unit price €3.20{NBSP}/{NBSP}1{NBSP}kg" in en.html


@given(
    cents=st.integers(min_value=1, max_value=10_000_000),
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000"), places=2),
    unit=st.sampled_from(["g", "kg", "ml", "l", "cm", "m", "m2", "m3"]),
)
def test_unit_price_is_price_per_base_unit(cents: int, amount: Decimal, unit: str) -> None:
    price = Decimal(cents) / 100
    text = unit_price(price, amount, unit, lambda value: format_money(value, "EUR", "en_GB"))
    assert text is not None
    value, base = text.replace(NBSP, " ").split(" / ")
    per_base = Decimal(value.lstrip("€").replace(",", ""))
    factor = Decimal("0.001") if unit in ("g", "ml") else Decimal("0.01") if unit == "cm" else Decimal(1)
    assert abs(per_base - price / (amount * factor)) <= Decimal("0.005") + Decimal("1e-9")
    assert base == {"g": "1 kg", "ml": "1 l", "cm": "1 m", "m2": "1 m²", "m3": "1 m³"}.get(unit, f"1 {unit}")


def test_no_unit_price_without_content() -> None:
    money = lambda value: format_money(value, "EUR", "de_DE")  # noqa: E731
    assert unit_price("9.99", None, "l", money) is None
    assert unit_price("9.99", "0", "l", money) is None
    assert unit_price("9.99", "5", "Stück", money) is None


# ---- brand, legal links, typography ----


def test_logo_with_dark_variant_service_bar_and_dark_mode_styles(mails, shop) -> None:
    for job, mail in mails:
        assert (
            f'src="{shop.brand.logo_url}"' in mail.html and f'src="{shop.brand.logo_dark_url}"' in mail.html
        )
        assert "@media (prefers-color-scheme: dark)" in mail.html
        assert 'content="light dark"' in mail.html
        bar = shop.service_bar["de" if job.locale == "de-DE" else "en"]
        # sales talk ("free shipping from 50 €"): in marketing mails only, never in transactional ones
        assert all((fact in mail.html) == job.is_marketing for fact in bar), (job.campaign, job.step)
        assert "v:roundrect" in mail.html or 'class="btn-link"' not in mail.html  # Outlook-safe button


def test_privacy_and_imprint_links_in_every_mail(mails, shop) -> None:
    for _, mail in mails:
        hrefs = [h.split("?")[0] for h in _hrefs(mail.html)]
        assert shop.legal.privacy_url in hrefs and shop.legal.imprint_url in hrefs
        assert shop.legal.privacy_url in mail.text and shop.legal.imprint_url in mail.text


def test_no_break_spaces_in_dates_and_phone_and_localised_hours(mails, shop) -> None:
    _, de = _mail(mails, "order_thanks")
    assert f"22.{NBSP}November{NBSP}2026" in de.html and "22. November 2026" not in _content(de.html)
    assert shop.contact.phone.replace(" ", NBSP) in de.html
    _, en = _mail(mails, "order_thanks", locale="en-GB")
    assert "Uhr" not in en.html and shop.contact.hours_by_language["en"] in en.html


def test_german_quotes_in_product_names(renderer) -> None:
    job = next(j for j in sample_jobs(locales=("de-DE",)) if j.campaign == "abandoned_cart")
    items = [{**job.payload["items"][0], "name": 'Lichterkette "Terra", frostfest'}]
    mail = renderer.render(replace(job, payload={**job.payload, "items": items}))
    assert "Lichterkette „Terra“, frostfest" in mail.html and "Lichterkette „Terra“, frostfest" in mail.text
    en = renderer.render(replace(job, locale="en-GB", payload={**job.payload, "items": items}))
    assert "Lichterkette “Terra”, frostfest" in en.html
    assert typographic_quotes('kein "Paar', "de") == 'kein "Paar'


def test_german_copy_uses_german_quotes() -> None:
    """No straight double quotes in the German mail copy (outside Jinja tags and HTML attributes)."""
    from nachfass.core.paths import TEMPLATES_DIR

    for path in sorted((TEMPLATES_DIR / "de").rglob("*.*")):
        if path.suffix not in (".html", ".txt"):
            continue
        text = re.sub(r"\{[{%#].*?[}%#]\}", "", path.read_text(encoding="utf-8"), flags=re.S)
        text = re.sub(r"<[^>]*>", "", text)
        assert '"' not in text, path
