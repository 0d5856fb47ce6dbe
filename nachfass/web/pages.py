"""The German pages of the unsubscribe/objection flow (formal "Sie").

Everything that comes from a token or the settings goes through ``html.escape``: the token is signed,
but its data (the address) was once entered by a customer.
"""

from __future__ import annotations

from html import escape

from nachfass.core.shop import ShopSettings

_STYLE = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;background:#f4f4f2;color:#222;
margin:0;padding:2rem 1rem;line-height:1.5}
main{max-width:34rem;margin:0 auto;background:#fff;border-radius:8px;padding:2rem;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h1{font-size:1.4rem;margin-top:0}
form{margin:1.2rem 0}
button{font-size:1rem;padding:.7rem 1.2rem;border-radius:6px;border:1px solid #2d6a4f;cursor:pointer}
.primary{background:#2d6a4f;color:#fff}
.secondary{background:#fff;color:#2d6a4f}
.hint{color:#555;font-size:.9rem}
footer{max-width:34rem;margin:1rem auto;color:#777;font-size:.8rem;text-align:center}
"""


def mask_email(email: str) -> str:
    """Show enough of the address to recognise it, not enough to read it off a shoulder-surfed screen."""
    local, sep, domain = email.partition("@")
    if not sep:
        return "***"
    visible = local[:2] if len(local) > 3 else local[:1]
    return f"{visible}***@{domain}"


def _layout(title: str, body: str, shop: ShopSettings | None) -> str:
    shop_name = escape(shop.shop_name) if shop else ""
    footer = ""
    if shop:
        imp = shop.impressum
        footer = (
            f"<footer>{escape(imp.company)} · {escape(imp.street)} · {escape(imp.postal_code)} "
            f"{escape(imp.city)}</footer>"
        )
    heading_suffix = f" – {shop_name}" if shop_name else ""
    return (
        '<!doctype html>\n<html lang="de"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{escape(title)}{heading_suffix}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{footer}</body></html>\n"
    )


def _contact_hint(shop: ShopSettings | None) -> str:
    if shop is None:
        return (
            "<p>Wenn Sie keine E-Mails mehr von uns erhalten möchten, antworten Sie bitte einfach auf "
            "eine unserer E-Mails oder wenden Sie sich an unseren Kundenservice.</p>"
        )
    c = shop.contact
    return (
        "<p>Wenn Sie keine E-Mails mehr von uns erhalten möchten, schreiben Sie uns bitte an "
        f'<a href="mailto:{escape(shop.unsubscribe_mailto)}">{escape(shop.unsubscribe_mailto)}</a> '
        f"oder wenden Sie sich an unseren Kundenservice: "
        f'<a href="mailto:{escape(c.email)}">{escape(c.email)}</a>, Telefon {escape(c.phone)} '
        f"({escape(c.hours)}).</p>"
    )


def unsubscribe_confirm(token: str, email: str, shop: ShopSettings | None) -> str:
    # Relative form actions ("<token>") resolve to /u/<token>, so the page works behind a path prefix too.
    t = escape(token, quote=True)
    body = (
        "<h1>Abmeldung von Werbe-E-Mails</h1>"
        f"<p>Möchten Sie keine Werbe-E-Mails mehr an <strong>{escape(mask_email(email))}</strong> "
        "erhalten? Dann klicken Sie bitte auf „Abmelden“.</p>"
        f'<form method="post" action="{t}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button class="primary" type="submit">Abmelden</button></form>'
        "<p>Oder möchten Sie einfach seltener von uns hören?</p>"
        f'<form method="post" action="{t}?choice=weekly">'
        '<button class="secondary" type="submit">Weniger E-Mails (höchstens eine pro Woche)</button>'
        "</form>"
        '<p class="hint">E-Mails zu Ihren Bestellungen, zum Versand und zu Ihren Serviceanfragen '
        "erhalten Sie in jedem Fall weiterhin.</p>"
    )
    return _layout("Abmeldung", body, shop)


def objection_confirm(token: str, email: str, shop: ShopSettings | None) -> str:
    t = escape(token, quote=True)
    body = (
        "<h1>Widerspruch gegen Werbung per E-Mail</h1>"
        "<p>Sie können der Verwendung Ihrer E-Mail-Adresse für Werbung jederzeit widersprechen, ohne "
        "dass hierfür andere als die Übermittlungskosten nach den Basistarifen entstehen.</p>"
        f"<p>Möchten Sie der Werbung an <strong>{escape(mask_email(email))}</strong> widersprechen?</p>"
        f'<form method="post" action="{t}">'
        '<button class="primary" type="submit">Widersprechen</button></form>'
        '<p class="hint">E-Mails zu Ihren Bestellungen, zum Versand und zu Ihren Serviceanfragen '
        "erhalten Sie in jedem Fall weiterhin.</p>"
    )
    return _layout("Widerspruch gegen Werbung", body, shop)


def unsubscribed(email: str, shop: ShopSettings | None) -> str:
    body = (
        "<h1>Sie wurden abgemeldet</h1>"
        f"<p>Sie erhalten von uns keine Werbe-E-Mails mehr an <strong>{escape(mask_email(email))}</strong>."
        '</p><p class="hint">E-Mails zu Ihren Bestellungen und Serviceanfragen erhalten Sie weiterhin. '
        "Sie können sich jederzeit wieder für unseren Newsletter anmelden.</p>"
    )
    return _layout("Sie wurden abgemeldet", body, shop)


def weekly_saved(email: str, shop: ShopSettings | None) -> str:
    body = (
        "<h1>Ihre Einstellung wurde gespeichert</h1>"
        f"<p>Sie erhalten an <strong>{escape(mask_email(email))}</strong> künftig höchstens eine "
        "Werbe-E-Mail pro Woche.</p>"
        '<p class="hint">Sie können sich über den Abmeldelink in jeder unserer E-Mails jederzeit ganz '
        "abmelden.</p>"
    )
    return _layout("Einstellung gespeichert", body, shop)


def objection_saved(email: str, shop: ShopSettings | None) -> str:
    body = (
        "<h1>Ihr Widerspruch wurde gespeichert</h1>"
        f"<p>Wir verwenden <strong>{escape(mask_email(email))}</strong> nicht mehr für Werbung.</p>"
        '<p class="hint">E-Mails zu Ihren Bestellungen und Serviceanfragen erhalten Sie weiterhin.</p>'
    )
    return _layout("Widerspruch gespeichert", body, shop)


def invalid_link(shop: ShopSettings | None) -> str:
    body = (
        "<h1>Dieser Link ist ungültig oder abgelaufen</h1>"
        "<p>Bitte verwenden Sie den Link aus einer aktuellen E-Mail von uns.</p>" + _contact_hint(shop)
    )
    return _layout("Link ungültig", body, shop)


def unavailable(shop: ShopSettings | None) -> str:
    body = (
        "<h1>Vorübergehend nicht verfügbar</h1>"
        "<p>Diese Seite ist im Moment leider nicht erreichbar. Bitte versuchen Sie es später erneut.</p>"
        + _contact_hint(shop)
    )
    return _layout("Nicht verfügbar", body, shop)


def not_found(shop: ShopSettings | None) -> str:
    return _layout("Seite nicht gefunden", "<h1>Seite nicht gefunden</h1>", shop)


def server_error(shop: ShopSettings | None) -> str:
    body = (
        "<h1>Es ist ein Fehler aufgetreten</h1>"
        "<p>Ihre Anfrage konnte nicht gespeichert werden. Bitte versuchen Sie es in einigen Minuten "
        "erneut.</p>" + _contact_hint(shop)
    )
    return _layout("Fehler", body, shop)
