"""The outbox's ``.eml``: an RFC 5322 / MIME message equivalent to a SendGrid payload, written directly.

Why not ``email.message.EmailMessage``: its header registry parses and refolds every header through a
generic parse tree, which costs about 5 ms per mail, 80 % of the outbox's time (a million-customer first
run spent 14 minutes there). A payload has a fixed, small shape (one multipart/alternative with a text and
an HTML part, known headers), so composing it directly takes ~0.1 ms and stays simple enough to check
completely: ``tests/test_eml.py`` parses what this writes with the standard library's parser (the
``default`` and ``compat32`` policies) and compares every field with the payload and with a message
composed by the email package, on generated hostile input (hypothesis).

What it writes:

* header lines end in CRLF, none is longer than 998 octets; a value with CR or LF raises ``ValueError``
  (header injection cannot happen, even for a payload that bypassed ``build_payload``);
* non-ASCII display names, subjects and header values become RFC 2047 encoded words (UTF-8), folded;
* ``List-Unsubscribe`` and other ASCII values are written as given, folded only between list items, so a
  URI is never turned into an encoded word (which would break RFC 8058 one-click unsubscribe);
* both parts are UTF-8 with CRLF line ends: the text part quoted-printable (it stays readable in the
  raw file), the HTML part base64 in lines of 76 characters. Inlined CSS and tracked links make HTML
  lines longer than 998 octets, so 8bit cannot carry it, and ``binascii.b2a_qp`` took ~150 µs of a
  ~21 KiB mail's ~360 µs, base64 ~15 µs (the email package's own ``set_content`` also chooses base64
  when it is shorter). The boundary starts with ``=_``, which neither encoding can produce;
* the Message-ID is derived from the send id (unique per mail), so writing the same mail twice gives the
  same bytes.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

CRLF = "\r\n"
_ATEXT_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_LINE_LIMIT = 78  # RFC 5322 SHOULD; values longer than this are folded where the format allows
_FOLD_POINT = re.compile(r"(?<=\S) (?=\S)")  # a single space between two words
_WORD_BYTES = 42  # UTF-8 octets per encoded word: 56 base64 characters, 68 with the delimiters


def _check_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains CR or LF")
    return value


def _encoded(value: str) -> str:
    """RFC 2047 encoded words (UTF-8, base64) of at most 68 characters each, one per folded line.

    Words are cut between characters, never inside a UTF-8 sequence (RFC 2047 section 5)."""
    data = value.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and 0x80 <= data[end] < 0xC0:  # a continuation byte: cut before its lead
            end -= 1
        words.append(
            "=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?="
        )
        start = end
    return f"{CRLF} ".join(words)


@functools.lru_cache(maxsize=4096)  # the sender's names repeat in every mail
def _phrase(name: str, display_name: str) -> str:
    """A display name as an RFC 5322 phrase: atoms, a quoted string, or encoded words."""
    display_name = " ".join(_check_value(name, display_name).split())
    if not display_name.isascii() or "=?" in display_name:
        return _encoded(display_name)
    if _ATEXT_PHRASE.fullmatch(display_name):
        return display_name
    return '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr_spec(name: str, email: str) -> str:
    local, at, domain = _check_value(name, email).rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"header {name}: {email!r} is not an address")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    if not local.isascii() or any(c in local for c in ' <>(),;:"[]\\'):
        raise ValueError(f"header {name}: local part of {email!r} cannot be written without SMTPUTF8")
    return f"{local}@{domain}"


def _mailbox(name: str, obj: Mapping[str, str]) -> str:
    spec = _addr_spec(name, obj["email"])
    display_name = obj.get("name") or ""
    return f"{_phrase(name, display_name)} <{spec}>" if display_name.strip() else spec


def _unstructured(name: str, value: str) -> str:
    """An unstructured value (Subject, custom headers): as is when ASCII and short, else folded or encoded."""
    _check_value(name, value)
    if not value.isascii() or "=?" in value:  # text that looks like an encoded word is encoded itself
        return _encoded(value)
    return _fold_ascii(len(name) + 2, value)


def _fold_ascii(used: int, value: str) -> str:
    """Fold before spaces that precede a word, so lines stay ≤ 78 where possible; unfolding (deleting the
    CRLFs) gives back exactly ``value``. A word longer than a line stays whole."""
    out, line_start, last_break = [], 0, None
    for match in _FOLD_POINT.finditer(value):
        if (
            used + match.start() - line_start > _LINE_LIMIT
            and last_break is not None
            and last_break > line_start
        ):
            out.append(value[line_start:last_break])
            line_start, used = last_break, 0
        last_break = match.start()
    if used + len(value) - line_start > _LINE_LIMIT and last_break is not None and last_break > line_start:
        out.append(value[line_start:last_break])
        line_start = last_break
    out.append(value[line_start:])
    return CRLF.join(out)


def raw_header_value(value: str) -> str | None:
    """An ASCII header value as it goes on the wire, folded only between list items (RFC 2369 allows
    whitespace there); None for values that need RFC 2047 encoding (non-ASCII).

    URIs stay whole: the email package would turn a URI longer than a line into an encoded word (a
    CPython folding bug), and a mail client reading ``List-Unsubscribe`` per RFC 2369/8058 would then
    find no URI. A line may exceed 78 characters (a SHOULD in RFC 5322), never 998 (``check_headers``
    keeps values far shorter, and ``payload_to_eml`` checks).
    """
    if not value.isascii():
        return None
    return f",{CRLF} ".join(part.strip() for part in value.split(",")) if value.startswith("<") else value


def _lf(text: str) -> bytes:
    """UTF-8 with every line end (CRLF, CR, LF) as LF. On bytes, not on the str: a str with non-ASCII
    characters is replaced character by character, several times slower."""
    data = text.encode("utf-8")
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


def _qp(text: str) -> bytes:
    """UTF-8 text as quoted-printable with CRLF line ends (soft breaks keep lines ≤ 76 octets)."""
    return binascii.b2a_qp(_lf(text), quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


def _base64(text: str) -> bytes:
    """UTF-8 text with CRLF line ends (the canonical form RFC 2045 encodes) as base64, 76 characters a
    line."""
    data = _lf(text).replace(b"\n", b"\r\n")
    encoded = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)])


def _part(content_type: str, text: str, *, base64: bool = False) -> bytes:
    cte = "base64" if base64 else "quoted-printable"
    head = f'Content-Type: {content_type}; charset="utf-8"{CRLF}Content-Transfer-Encoding: {cte}'
    return head.encode("ascii") + b"\r\n\r\n" + (_base64(text) if base64 else _qp(text))


def payload_to_eml(payload: Mapping, *, send_id: str, date: datetime | None = None) -> bytes:
    """An RFC 5322 multipart/alternative message equivalent to a SendGrid payload.

    ``date``: the run's logical time for the Date header (the wall clock when not given)."""
    head, boundary = eml_head(payload, send_id=send_id, date=date)
    contents = {c["type"]: c["value"] for c in payload["content"]}
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    parts = [_part("text/plain", contents.get("text/plain", ""))]
    if "text/html" in contents:
        parts.append(_part("text/html", contents["text/html"], base64=True))
    return head + b"\r\n" + delimiter + delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode("ascii")


def eml_head(payload: Mapping, *, send_id: str, date: datetime | None = None) -> tuple[bytes, str]:
    """The message's header block (ASCII, CRLF between lines, no final CRLF) and its MIME boundary.

    Every check that can fail composing a message is here: the bodies are UTF-8 text encoded without
    failing once the payload is valid JSON (``payload_body``). An outbox that writes no files (a backtest
    without ``--mail-files``) composes only this part, for the same failures at ~45 % of the cost."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", send_id):
        raise ValueError(f"send id {send_id!r} is not a token")
    domain = _addr_spec("From", payload["from"]["email"]).rpartition("@")[2]
    to = payload["personalizations"][0]["to"]
    lines = [
        f"From: {_mailbox('From', payload['from'])}",
        "To: " + f",{CRLF} ".join(_mailbox("To", addr) for addr in to),
    ]
    if "reply_to" in payload:
        lines.append(f"Reply-To: {_mailbox('Reply-To', payload['reply_to'])}")
    lines += [
        f"Subject: {_unstructured('Subject', payload['subject'])}",
        f"Date: {format_datetime((date or datetime.now(UTC)).astimezone(UTC))}",
        f"Message-ID: <{send_id}@{domain}>",
    ]
    for name, value in (payload.get("headers") or {}).items():
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a field name")
        raw = raw_header_value(_check_value(name, value))
        lines.append(f"{name}: {raw if raw is not None else _unstructured(name, value)}")
    boundary = f"=_{send_id}"
    lines += [
        f"X-Nachfass-Send-Id: {send_id}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    head = CRLF.join(lines)
    if any(len(line) > 998 for line in head.split(CRLF)):
        raise ValueError("a header line would exceed 998 octets")
    return head.encode("ascii"), boundary
