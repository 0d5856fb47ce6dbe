"""Payloads: valid against SendGrid's official OpenAPI spec, equal to the sendgrid helpers, safe headers."""

from __future__ import annotations

import copy
import email
import email.policy
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sendgrid.helpers.mail import (
    Category,
    Content,
    CustomArg,
    From,
    Header,
    Mail,
    MailSettings,
    Personalization,
    ReplyTo,
    SandBoxMode,
    Subject,
    To,
)
from sendgrid_fixtures import SHOP, SPEC_PATH, mail_send_schema, make_mail

from nachfass.core.mail.sendgrid_payload import (
    RESERVED_HEADERS,
    PayloadError,
    build_payload,
    clean_display_name,
    payload_body,
)
from nachfass.core.mail.transport import OutboxTransport, payload_to_eml
from nachfass.devtools.sendgrid_server import ValidationError, validate

_SCHEMA = mail_send_schema()
needs_spec = pytest.mark.skipif(_SCHEMA is None, reason=f"official SendGrid spec not found at {SPEC_PATH}")


def _validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def _schema_errors(payload: dict) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(payload)]


VARIANTS = [
    make_mail(0),
    make_mail(1, to_name=None, headers={}, categories=[]),
    make_mail(2, experiment_id="exp-7", variant="holdout-free", categories=["a", "b", "c"]),
    make_mail(
        3, campaign="order_thanks", step="immediate", is_marketing=False, headers={"X-Entity-Ref-ID": "x"}
    ),
    make_mail(4, to_name="Eve\r\nBcc: x@evil.test"),
]


@needs_spec
@pytest.mark.parametrize("sandbox_mode", [False, True])
@pytest.mark.parametrize("mail", VARIANTS, ids=lambda m: m.trigger_key)
def test_payload_validates_against_official_spec(mail, sandbox_mode):
    payload = build_payload(mail, SHOP, sandbox_mode=sandbox_mode)
    assert _schema_errors(payload) == []
    # ... and against the local server's rules (which add what the spec cannot express).
    validate(payload)


@needs_spec
def test_schema_check_is_not_vacuous():
    payload = build_payload(make_mail(0), SHOP)
    broken = copy.deepcopy(payload)
    del broken["from"]
    broken["custom_args"]["n"] = 1
    errors = _schema_errors(broken)
    assert any("'from' is a required property" in e for e in errors)
    assert any("is not of type 'string'" in e for e in errors)


@needs_spec
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.one_of(st.none(), st.text(min_size=0, max_size=40)),
    subject=st.text(min_size=1, max_size=80).filter(lambda s: s.strip()),
    text=st.text(min_size=1, max_size=200).filter(lambda s: s.strip()),
    cats=st.lists(st.text(alphabet="abcdefghij_:-", min_size=1, max_size=30), max_size=8),
)
def test_generated_payloads_validate(name, subject, text, cats):
    mail = make_mail(9, to_name=name, subject=subject, text=text, categories=cats)
    payload = build_payload(mail, SHOP)
    assert _schema_errors(payload) == []
    validate(payload)
    assert len(payload["categories"]) <= 10


def _helper_mail(mail, sandbox_mode: bool) -> dict:
    """The same mail built with sendgrid.helpers.mail: build_payload must produce exactly this."""
    m = Mail()
    m.from_email = From(SHOP.sender.email, SHOP.sender.name)
    m.subject = Subject(mail.subject)
    p = Personalization()
    p.add_to(To(mail.to_email, clean_display_name(mail.to_name)))
    m.add_personalization(p)
    m.add_content(Content("text/html", mail.html))
    m.add_content(Content("text/plain", mail.text))
    for k, v in mail.headers.items():
        m.add_header(Header(k, v))
    cats = list(dict.fromkeys([mail.campaign, f"{mail.campaign}:{mail.step}", *mail.categories]))
    for cat in reversed(cats):  # the helper prepends categories
        m.add_category(Category(cat))
    for k in ("send_id", "campaign", "step", "variant"):
        m.add_custom_arg(CustomArg(k, getattr(mail, k)))
    if sandbox_mode:
        m.mail_settings = MailSettings()
        m.mail_settings.sandbox_mode = SandBoxMode(True)
    m.reply_to = ReplyTo(SHOP.reply_to.email, SHOP.reply_to.name)
    return m.get()


@pytest.mark.parametrize("sandbox_mode", [False, True])
@pytest.mark.parametrize("mail", VARIANTS[:4], ids=lambda m: m.trigger_key)
def test_payload_equals_sendgrid_helpers(mail, sandbox_mode):
    assert build_payload(mail, SHOP, sandbox_mode=sandbox_mode) == _helper_mail(mail, sandbox_mode)


def test_payload_shape():
    mail = make_mail(5)
    p = build_payload(mail, SHOP)
    assert p["from"] == {"name": "Gartenglück Versand", "email": "service@gartenglueck.example"}
    assert p["reply_to"]["email"] == "kundenservice@gartenglueck.example"
    assert p["personalizations"] == [{"to": [{"name": "Jörg Müller 5", "email": "kunde5@beispiel.example"}]}]
    assert [c["type"] for c in p["content"]] == ["text/plain", "text/html"]
    assert p["categories"][:2] == ["abandoned_cart", "abandoned_cart:reminder_1"]
    assert p["custom_args"] == {
        "send_id": mail.send_id,
        "campaign": "abandoned_cart",
        "step": "reminder_1",
        "variant": "B",
    }
    assert "mail_settings" not in p
    assert build_payload(mail, SHOP, sandbox_mode=True)["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_no_personal_data_in_custom_args_or_categories():
    mail = make_mail(6)
    p = build_payload(mail, SHOP)
    opaque = json.dumps([p["custom_args"], p["categories"]])
    for personal in (mail.to_email, "Jörg", "Müller", mail.customer_id, mail.trigger_key):
        assert personal not in opaque


@pytest.mark.parametrize("header", sorted(RESERVED_HEADERS) + ["Subject", "BCC", "dkim-Signature"])
def test_reserved_headers_refused(header):
    with pytest.raises(PayloadError, match="reserved"):
        build_payload(make_mail(0, headers={header: "x"}), SHOP)


@pytest.mark.parametrize("headers", [{"X-A": "a\r\nBcc: x@evil.test"}, {"X-A\r\nBcc": "x"}, {"X A": "x"}])
def test_header_injection_refused(headers):
    with pytest.raises(PayloadError):
        build_payload(make_mail(0, headers=headers), SHOP)


def test_category_limits():
    with pytest.raises(PayloadError, match="categories"):
        build_payload(make_mail(0, categories=[f"c{i}" for i in range(9)]), SHOP)
    with pytest.raises(PayloadError, match="255"):
        build_payload(make_mail(0, categories=["x" * 256]), SHOP)
    assert len(build_payload(make_mail(0, categories=[f"c{i}" for i in range(8)]), SHOP)["categories"]) == 10


def test_empty_content_and_subject_refused():
    with pytest.raises(PayloadError):
        build_payload(make_mail(0, text="  "), SHOP)
    with pytest.raises(PayloadError):
        build_payload(make_mail(0, subject="\r\n"), SHOP)


def test_subject_is_one_line():
    p = build_payload(make_mail(0, subject="Hallo\r\nBcc: x@evil.test"), SHOP)
    assert "\n" not in p["subject"] and "\r" not in p["subject"]


# --- outbox ----------------------------------------------------------------------------------------------


def test_outbox_writes_eml_and_exact_payload(tmp_path):
    mail = make_mail(7)
    result = OutboxTransport(tmp_path, shop=SHOP).send(mail)
    assert result.status == "sent" and result.message_id is None
    payload = json.loads((tmp_path / f"{mail.send_id}.json").read_text(encoding="utf-8"))
    assert payload == build_payload(mail, SHOP)
    msg = email.message_from_bytes(
        (tmp_path / f"{mail.send_id}.eml").read_bytes(), policy=email.policy.default
    )
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["To"].addresses[0].addr_spec == mail.to_email
    assert str(msg["Subject"]) == mail.subject
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Nachfass-Send-Id"] == mail.send_id
    assert "Ihr Warenkorb 7 wartet" in msg.get_body(("plain",)).get_content()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@settings(max_examples=80, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=400))
def test_the_request_body_is_the_payload_as_utf8_json(text):
    """The body (orjson) reads back, with the standard library, as the payload it was made from."""
    payload = build_payload(make_mail(5, to_name=text, text=text + "x", html=f"<p>{text}</p>"), SHOP)
    body = payload_body(payload)
    assert json.loads(body.decode("utf-8")) == payload


def test_text_that_is_not_unicode_fails_the_mail_before_anything_is_written(tmp_path):
    mail = make_mail(6, text="Hallo \udc80 Welt")  # a lone surrogate: no UTF-8 for it
    with pytest.raises(PayloadError, match="JSON"):
        payload_body(build_payload(mail, SHOP))
    result = OutboxTransport(tmp_path, shop=SHOP).send(mail)
    assert result.status == "failed" and result.attempts == 0
    assert list(tmp_path.iterdir()) == []


def test_an_outbox_without_a_folder_composes_every_mail_and_writes_none(tmp_path, monkeypatch):
    """A backtest's default (no --mail-files): a mail that composes is `sent` as into the folder, one that
    cannot be composed fails as it would live, and no file is written anywhere."""
    monkeypatch.chdir(tmp_path)
    transport = OutboxTransport(None, shop=SHOP)
    assert transport.send(make_mail(7)).status == "sent"
    failed = transport.send(make_mail(6, text="Hallo \udc80 Welt"))
    assert failed.status == "failed" and failed.attempts == 0 and "JSON" in (failed.error or "")
    assert list(tmp_path.iterdir()) == []


_no_surrogates = st.characters(blacklist_categories=("Cs",))
# mostly text that composes, with the failures to compare mixed in: CR/LF/NUL, lone surrogates, long lines
_hostile = st.text(_no_surrogates, max_size=80) | st.sampled_from(
    ["Zeile\r\nBcc: x@y.z", "\udc80", "a" * 1200, "=?utf-8?q?x?=", "Ärger; <x@y.z>", "\x00"]
)


@settings(max_examples=200, deadline=None)
@given(
    to_email=st.sampled_from(
        ["kundin@beispiel.example", "jörg@beispiel.example", "kunde@bücher.example", "a@b", "x@y\r\nBcc: z"]
    ),
    to_name=st.none() | _hostile,
    subject=_hostile.filter(lambda s: s.strip()),
    header=_hostile,
    text=_hostile,
    html=_hostile,
)
def test_an_outbox_without_a_folder_fails_exactly_the_mails_the_folder_fails(
    tmp_path_factory, to_email, to_name, subject, header, text, html
):
    """The folder-less outbox composes only the header block (eml_head): on hostile input it must still
    fail the same mails with the same error as the outbox that writes them, and send the same others."""
    mail = make_mail(
        3,
        to_email=to_email,
        to_name=to_name,
        subject=subject,
        text=text,
        html=f"<p>{html}</p>",
        headers={"List-Unsubscribe": "<https://mail.gartenglueck.example/u/3>", "X-Kampagne": header},
    )
    folder = tmp_path_factory.mktemp("outbox")
    with_files = OutboxTransport(folder, shop=SHOP).send(mail)
    without = OutboxTransport(None, shop=SHOP).send(mail)
    assert (without.status, without.error, without.attempts) == (
        with_files.status,
        with_files.error,
        with_files.attempts,
    )
    written = sorted(p.suffix for p in folder.iterdir())
    assert written == ([".eml", ".json"] if with_files.status == "sent" else [])


def test_a_new_outbox_transport_removes_only_dead_writers_half_written_files(tmp_path):
    """Runs may overlap on PostgreSQL and share the outbox: a transport starting beside a running one must
    not delete the files that one is writing (that lost two mails of an overlapping run: its rename found
    no file). Half-written files of a writer that is gone (a crash) are removed."""
    import os
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(finished.stdout)
    running = tmp_path / f".tmp-{os.getpid()}-s_running.json"
    crashed = tmp_path / f".tmp-{dead_pid}-s_crashed.json"
    legacy = tmp_path / ".tmp-s_legacy.eml"  # the name before the writer's pid was part of it
    for path in (running, crashed, legacy):
        path.write_bytes(b"half")
    OutboxTransport(tmp_path, shop=SHOP)
    assert running.exists()
    assert not crashed.exists() and not legacy.exists()
    # and this process's own sends still leave nothing behind
    OutboxTransport(tmp_path, shop=SHOP).send(make_mail(9))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == [running.name]


def test_outbox_header_injection_is_neutralised(tmp_path):
    mail = make_mail(8, to_name="Eve\r\nBcc: x@evil.test")
    assert OutboxTransport(tmp_path, shop=SHOP).send(mail).status == "sent"
    raw = (tmp_path / f"{mail.send_id}.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == [mail.to_email]
    assert b"\r\nBcc:" not in raw


def test_email_package_refuses_raw_crlf():
    # Defence in depth: even a payload that bypassed build_payload cannot inject a header line.
    payload = build_payload(make_mail(0), SHOP)
    payload["personalizations"][0]["to"][0]["name"] = "Eve\r\nBcc: x@evil.test"
    with pytest.raises(ValueError):
        payload_to_eml(payload, send_id="s_x")
    payload = build_payload(make_mail(0), SHOP)
    payload["subject"] = "Hi\r\nBcc: x@evil.test"
    with pytest.raises(ValueError):
        payload_to_eml(payload, send_id="s_x")


def test_outbox_refuses_bad_mail_without_writing(tmp_path):
    result = OutboxTransport(tmp_path, shop=SHOP).send(make_mail(0, headers={"To": "x@evil.test"}))
    assert result.status == "failed" and "reserved" in result.error
    assert list(tmp_path.iterdir()) == []


def test_server_validation_error_shape():
    with pytest.raises(ValidationError) as info:
        validate({"personalizations": []})
    assert info.value.field == "personalizations"
