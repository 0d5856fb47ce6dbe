"""The one rule for e-mail addresses, used wherever the project checks one.

Ingest quarantines customer and consent rows whose address breaks it (``ingest/loader.py``, as a DuckDB
function over the distinct addresses of a file), the renderer and the SendGrid payload refuse such a
recipient, and the local SendGrid server validates ``to``/``from`` and erase requests with it. The rule is
the syntax check of the maintained ``email-validator`` package (RFC 5321/5322 as mail systems accept them:
dot rules, label lengths, a domain with a dot, no quoted local parts or IP literals), without DNS look-ups
(checking deliverability is SendGrid's job, and a run must not depend on the network). Addresses with
non-ASCII local parts (SMTPUTF8) are refused: SendGrid does not deliver them; internationalised domains
are accepted.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


@lru_cache(maxsize=200_000)
def address_problem(value: str | None) -> str | None:
    """None when ``value`` is a valid address; otherwise why not, in words (from email-validator)."""
    if value is None or not value.strip():
        return "empty address"
    text = value.strip()
    if len(text) > 254:
        return "longer than 254 characters"
    try:
        validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None


# A shortcut for bulk checks (the ingest checks millions of addresses, ``ingest.address_verdicts_sql``): an
# address of this plain form that is at most 254 characters long and has no Punycode (``xn--``) in its domain
# is valid exactly when ``address_problem("a@" + its domain)`` is None. Its local part is a dot-atom of ASCII
# characters that email-validator accepts as they are (no length limit outside strict mode); its domain is
# lower-case ASCII without Punycode, so the validator's normalised forms have the same length as the input.
# Everything else about it is the domain, which the validator still checks, once per distinct domain.
# Addresses of any other form go through ``address_problem`` itself.
SIMPLE_ADDRESS_PATTERN = r"[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*@[a-z0-9.-]+"


def is_valid_address(value: str | None) -> bool:
    return address_problem(value) is None


def normalize_address(value: str) -> str:
    """The form the warehouse stores and compares: trimmed, lower case (shops treat addresses that way)."""
    return value.strip().lower()
