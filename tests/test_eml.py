"""The outbox's .eml composer against the standard library: what a mail client reads is what the payload says.

``nachfass.core.mail.eml`` writes MIME directly (the email package's header folding cost ~5 ms a mail).
These tests parse its output with the standard library's parser and compare every field with the payload
and with a message composed by the email package itself (``reference_eml`` below), on hostile generated
input: display names with quotes, commas and backslashes, non-ASCII everywhere, text that looks like an
encoded word or a MIME boundary, CR/LF mixes and very long lines in the bodies.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rfc8058 import one_click_uri
from sendgrid_fixtures import SHOP, make_mail

from nachfass.core.mail.eml import payload_to_eml
from nachfass.core.mail.sendgrid_payload import build_payload

NO_CRLF = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
names = st.text(NO_CRLF, max_size=60) | st.sampled_from(
    ['Müller, "Jürgen"', "O'Brien \\ Co", "=?utf-8?q?fake?=", "Zoë 🌱", "a" * 120, "  ", "Ärger; <x@y.z>"]
)
subjects = (
    (
        st.text(NO_CRLF, min_size=1, max_size=200)
        | st.sampled_from(["=?utf-8?b?SGk=?=", "Hallo," * 40, "x" * 300])
    )
    .map(lambda s: " ".join(s.split()))
    .filter(bool)
)
bodies = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=3000) | (
    st.sampled_from(["--=_s_x\r\n", ".\n", "From here\n", "a \t\n", "x" * 5000, "=3D=\n"])
)


def parse(raw: bytes, policy=email.policy.default) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy)


def reference_eml(payload: dict, send_id: str) -> bytes:
    """The same message composed by the email package (the way the outbox wrote it before)."""
    msg = EmailMessage(policy=email.policy.SMTP)

    def addr(obj: dict) -> Address:
        local, _, domain = obj["email"].rpartition("@")
        return Address(display_name=obj.get("name", ""), username=local, domain=domain)

    msg["From"] = addr(payload["from"])
    msg["To"] = [addr(to) for to in payload["personalizations"][0]["to"]]
    msg["Reply-To"] = addr(payload["reply_to"])
    msg["Subject"] = payload["subject"]
    for name, value in (payload.get("headers") or {}).items():
        msg[name] = value
    contents = {c["type"]: c["value"] for c in payload["content"]}
    msg.set_content(contents["text/plain"], subtype="plain", charset="utf-8")
    msg.add_alternative(contents["text/html"], subtype="html", charset="utf-8")
    return msg.as_bytes()


def lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def mailboxes(raw: bytes, field: str) -> list[tuple[str, str]]:
    """(display name, address) pairs as an RFC 2047 reader sees them. The header registry of
    ``policy.default`` keeps the whitespace between adjacent encoded words of a display name (a CPython
    bug: RFC 2047 section 6.2 says to drop it), so names are read with the legacy API instead."""
    values = parse(raw, email.policy.compat32).get_all(field) or []
    return [(str(make_header(decode_header(name))), addr) for name, addr in getaddresses(values)]


def read(raw: bytes) -> dict:
    """What a mail client shows: addresses, names, subject and the two bodies (line ends normalised)."""
    msg = parse(raw)
    return {
        "from": mailboxes(raw, "From"),
        "to": mailboxes(raw, "To"),
        "reply_to": mailboxes(raw, "Reply-To"),
        "subject": str(msg["Subject"]),
        "text": lines(msg.get_body(("plain",)).get_content()),
        "html": lines(msg.get_body(("html",)).get_content()),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, subject=subjects, text=bodies, html=bodies)
@example(name='Müller, "Jürgen"', subject="Ihr Warenkorb – „jetzt“", text="Grüße\r\n", html="<p>€</p>")
@example(name="0 000\x80\x80" + "\u0800" * 12 + " \x80", subject="0", text="", html="")
def test_a_mail_client_reads_what_the_payload_says(name, subject, text, html):
    text, html = (
        body if body.strip() else body + "x" for body in (text, html)
    )  # build_payload needs content
    mail = make_mail(3, to_name=name, subject=subject, text=text, html=html)
    payload = build_payload(mail, SHOP)
    raw = payload_to_eml(payload, send_id=mail.send_id)
    head, _, _ = raw.partition(b"\r\n\r\n")
    assert head.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert not msg.defects and all(not part.defects for part in msg.walk())
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    plain, html_part = msg.iter_parts()
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert html_part["Content-Transfer-Encoding"] == "base64"
    assert all(len(line) <= 76 for line in html_part.get_payload().splitlines())  # RFC 2045 section 6.8
    seen = read(raw)
    expected_name = payload["personalizations"][0]["to"][0].get("name", "")
    assert seen["to"] == [(expected_name, mail.to_email)]
    assert seen["subject"] == payload["subject"]
    assert seen["text"] == lines(payload["content"][0]["value"])
    assert seen["html"] == lines(payload["content"][1]["value"])
    assert seen["from"] == [(SHOP.sender.name, SHOP.sender.email)]
    # ... and the same as the email package's own composition of the payload reads (which ends every
    # body with a line break; this composer keeps the body exactly as rendered).
    reference = read(reference_eml(payload, mail.send_id))
    for body in ("text", "html"):
        seen[body] = seen[body] if seen[body].endswith("\n") else seen[body] + "\n"
    if "=?" in subject:  # the email package writes such text raw, and readers decode it: not comparable
        del seen["subject"], reference["subject"]
    if "=?" in expected_name:
        del seen["to"], reference["to"]
    elif reference["to"] != [(expected_name, mail.to_email)]:
        # The email package's own encoder can lose a space at the edge of an encoded word (hypothesis found
        # '0 000\x80\x80ࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀ \x80' read back without its last space); this composer keeps it
        # (asserted above), so the reference is not comparable there.
        del seen["to"], reference["to"]
    assert seen == reference
    assert msg["X-Nachfass-Send-Id"] == mail.send_id


@settings(max_examples=60, deadline=None)
@given(path=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-._~"), min_size=1, max_size=400))
def test_list_unsubscribe_stays_a_uri_a_one_click_check_finds(path):
    url = f"https://shop.example/u/{path}"
    mail = make_mail(
        5,
        headers={
            "List-Unsubscribe": f"<{url}>, <mailto:abmelden@shop.example?subject=u>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    raw = payload_to_eml(build_payload(mail, SHOP), send_id=mail.send_id)
    assert one_click_uri(raw) == url
    assert parse(raw, email.policy.compat32)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(
        st.text(st.sampled_from("abcXYZ0,;:-!?&'\"()"), min_size=1, max_size=30), min_size=1, max_size=40
    )
)
def test_a_long_ascii_subject_is_folded_at_spaces_and_unfolds_to_itself(words):
    subject = " ".join(words)
    raw = payload_to_eml(build_payload(make_mail(0, subject=subject), SHOP), send_id="s_x")
    head = raw.partition(b"\r\n\r\n")[0].decode("ascii")
    folded = re.search(r"\r\nSubject: (.*?)\r\n(?=\S)", head, re.S).group(1)
    assert folded.replace("\r\n", "") == subject  # RFC 5322 2.2.3: unfolding removes the CRLFs only
    assert all(len(line) <= 78 for line in f"Subject: {folded}".split("\r\n"))


def test_same_mail_same_bytes_and_a_message_id_from_the_send_id():
    mail = make_mail(6)
    payload = build_payload(mail, SHOP)
    raw = payload_to_eml(payload, send_id=mail.send_id)
    assert raw == payload_to_eml(payload, send_id=mail.send_id)  # rewriting an outbox mail changes nothing
    assert parse(raw)["Message-ID"] == f"<{mail.send_id}@{SHOP.sender.email.rpartition('@')[2]}>"


@pytest.mark.parametrize(
    "field, value",
    [
        ("to_name", "Eve\r\nBcc: x@evil.test"),
        ("subject", "Hi\nBcc: x@evil.test"),
        ("header", "<https://x.example/u>\r\nBcc: x@evil.test"),
        ("header_name", "Bcc: x@evil.test\r\nX"),
    ],
)
def test_a_line_break_in_any_header_is_refused_not_written(field, value):
    # build_payload cleans names and subjects; the composer refuses even a payload that bypassed it.
    payload = build_payload(make_mail(0), SHOP)
    if field == "to_name":
        payload["personalizations"][0]["to"][0]["name"] = value
    elif field == "subject":
        payload["subject"] = value
    elif field == "header":
        payload["headers"] = {"List-Unsubscribe": value}
    else:
        payload["headers"] = {value: "x"}
    with pytest.raises(ValueError):
        payload_to_eml(payload, send_id="s_x")


def test_an_internationalised_domain_is_written_in_its_ascii_form():
    payload = build_payload(make_mail(0), SHOP)
    payload["personalizations"][0]["to"] = [{"email": "kunde@münchen.de", "name": "Kunde"}]
    msg = parse(payload_to_eml(payload, send_id="s_x"))
    assert msg["To"].addresses[0].addr_spec == "kunde@xn--mnchen-3ya.de"
