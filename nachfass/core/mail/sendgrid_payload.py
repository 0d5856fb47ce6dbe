"""Build the SendGrid v3 ``/mail/send`` request body for one rendered mail.

The body is built as a plain dict that is equal to what ``sendgrid.helpers.mail.Mail(...).get()`` produces
for the same mail (``tests/test_sendgrid_payload.py`` checks this): building the helper objects costs
more than the HTTP call at 100k mails, and a plain dict is what the outbox stores verbatim.

Rules enforced here (from docs/spec ``sendgrid.md``), so that a bad mail fails before anything is sent:
reserved headers refused, header names/values without CR/LF, at most 10 categories of at most 255 chars,
``custom_args`` are strings and carry no personal data (only the opaque send id and campaign metadata),
content values non-empty, text/plain before text/html.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from nachfass.core.addresses import address_problem
from nachfass.core.mail.message import RenderedMail
from nachfass.core.shop import ShopSettings

# Lower-cased; SendGrid refuses these in ``headers`` (sendgrid.md).
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)
MAX_CATEGORIES = 10
MAX_CATEGORY_LEN = 255
MAX_CUSTOM_ARGS_BYTES = 10_000
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII except ':'


class PayloadError(ValueError):
    """The mail cannot be sent as it is (a programming or template error, not a SendGrid answer)."""


def clean_display_name(name: str | None) -> str | None:
    """Collapse all whitespace (including CR/LF from messy shop exports) so a name is one safe line."""
    if name is None:
        return None
    cleaned = " ".join(name.split())
    return cleaned or None


def _address(email: str, name: str | None) -> dict[str, str]:
    # Key order as sendgrid.helpers.mail.Email.get(): name first, then email.
    out: dict[str, str] = {}
    name = clean_display_name(name)
    if name:
        out["name"] = name
    out["email"] = email.strip()
    return out


def categories_for(mail: RenderedMail) -> list[str]:
    """``campaign``, ``campaign:step`` and the mail's own categories, de-duplicated, order kept."""
    cats = list(dict.fromkeys([mail.campaign, f"{mail.campaign}:{mail.step}", *mail.categories]))
    if len(cats) > MAX_CATEGORIES:
        raise PayloadError(f"send {mail.send_id}: {len(cats)} categories, SendGrid allows {MAX_CATEGORIES}")
    for cat in cats:
        if not cat or len(cat) > MAX_CATEGORY_LEN:
            raise PayloadError(
                f"send {mail.send_id}: category must be 1..{MAX_CATEGORY_LEN} chars: {cat[:40]!r}"
            )
    return cats


def custom_args_for(mail: RenderedMail, as_of: datetime | None = None) -> dict[str, str]:
    """Opaque identifiers only: SendGrid keeps custom_args forever and echoes them in every event.

    ``as_of`` is the logical time of the sending run (UTC, ISO 8601): events carry the time their mail was
    decided in, so the local event simulator (and an analyst) can relate them to it.
    """
    args = {"send_id": mail.send_id, "campaign": mail.campaign, "step": mail.step, "variant": mail.variant}
    if as_of is not None:
        args["as_of"] = as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args = {k: str(v) for k, v in args.items()}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in args.items())
    if size > MAX_CUSTOM_ARGS_BYTES:
        raise PayloadError(
            f"send {mail.send_id}: custom_args are {size} bytes, limit {MAX_CUSTOM_ARGS_BYTES}"
        )
    return args


def check_headers(headers: dict[str, str], send_id: str = "?") -> dict[str, str]:
    """Refuse reserved headers and anything that could inject a header line."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise PayloadError(f"send {send_id}: invalid header name {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise PayloadError(f"send {send_id}: header {name!r} is reserved by SendGrid and cannot be set")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise PayloadError(f"send {send_id}: header {name!r} must be a single-line string")
        out[name] = value
    return out


def build_payload(
    mail: RenderedMail, shop: ShopSettings, *, sandbox_mode: bool = False, as_of: datetime | None = None
) -> dict[str, Any]:
    """The exact JSON body for ``POST /v3/mail/send`` (equal to the sendgrid helpers' ``Mail.get()``)."""
    subject = " ".join(mail.subject.split())  # a subject is one line; CR/LF would be header injection
    if not subject:
        raise PayloadError(f"send {mail.send_id}: empty subject")
    if not mail.text.strip() or not mail.html.strip():
        raise PayloadError(f"send {mail.send_id}: text and html content must be non-empty")
    if (problem := address_problem(mail.to_email)) is not None:
        raise PayloadError(f"send {mail.send_id}: recipient address is not an email address ({problem})")
    payload: dict[str, Any] = {
        "from": _address(shop.sender.email, shop.sender.name),
        "subject": subject,
        "personalizations": [{"to": [_address(mail.to_email, mail.to_name)]}],
        # SendGrid requires text/plain first when both are present.
        "content": [{"type": "text/plain", "value": mail.text}, {"type": "text/html", "value": mail.html}],
    }
    headers = check_headers(dict(mail.headers), mail.send_id)
    if headers:
        payload["headers"] = headers
    payload["categories"] = categories_for(mail)
    payload["custom_args"] = custom_args_for(mail, as_of)
    if sandbox_mode:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    payload["reply_to"] = _address(shop.reply_to.email, shop.reply_to.name)
    return payload


def payload_body(payload: dict[str, Any]) -> bytes:
    """The payload as the UTF-8 JSON body of the request (and of the outbox's ``.json``), compact.

    orjson: 27 µs for a ~21 KiB mail where ``json.dumps(..., ensure_ascii=False).encode()`` takes ~95 µs,
    a quarter of what the outbox spent per mail. Text that is not valid Unicode (a lone surrogate) raises
    ``PayloadError``, as encoding it to UTF-8 did."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise PayloadError(f"payload cannot be written as JSON: {exc}") from None
