"""An RFC 8058 one-click check for .eml files, as a mailbox provider applies it (shared by the tests;
importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import email
import email.policy
import re


def one_click_uri(raw: bytes) -> str:
    """The HTTPS URI a mail client POSTs ``List-Unsubscribe=One-Click`` to (RFC 8058 section 3), read with
    the standard library's parser from the raw header, as a mailbox provider reads it: a header that is
    RFC 2047-encoded, lacks the POST header or has no HTTPS URI gives no one-click unsubscribe at all."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    values = message.get_all("List-Unsubscribe") or []
    posts = message.get_all("List-Unsubscribe-Post") or []
    assert len(values) == 1 and len(posts) == 1, "exactly one List-Unsubscribe and -Post header"
    assert str(posts[0]).strip() == "List-Unsubscribe=One-Click"
    value = re.sub(r"\r?\n[ \t]+", " ", str(values[0]))  # unfold (RFC 5322 2.2.3)
    assert "=?" not in value, f"RFC 2047 encoded word in List-Unsubscribe: {value[:80]}"
    # RFC 2369: a comma-separated list of <URI>s and nothing else
    assert re.fullmatch(r"\s*<[^<>\s]+>(\s*,\s*<[^<>\s]+>)*\s*", value), value
    uris = re.findall(r"<([^<>]+)>", value)
    https = [uri for uri in uris if uri.startswith("https://")]
    assert https, f"no HTTPS URI in {value}"
    return https[0]
