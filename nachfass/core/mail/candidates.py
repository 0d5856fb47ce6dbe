"""Turn a row of the dbt model ``eligibility.mail_candidates`` into a ``MailJob``.

Used by the preview CLI and by the send asset, so that both read candidates the same way. Rows may come
from DuckDB (``fetchall`` + column names) or pandas (``to_dict("records")``), so NULLs may arrive as
``None``, ``NaN`` or ``pd.NA`` and the JSON payload as text or as an already-parsed mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nachfass.core.mail.message import MARKETING_POLICIES, MailJob

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "campaign",
    "step",
    "variant",
    "trigger_key",
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "salutation",
    "locale",
    "consent_policy",
    "has_marketing_consent",
    "payload",
    "experiment_id",
    "decision",
    "reason",
)
_POLICIES = frozenset({"none"}) | MARKETING_POLICIES


class CandidateRowError(ValueError):
    """A candidate row cannot become a MailJob; the message names the column (never the address)."""


def _value(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    if type(value).__name__ == "NAType":  # pandas.NA without importing pandas
        return None
    return value


def _text(row: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = _value(row, key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a step read through pandas as 1.0
    text = None if value is None else str(value).strip() or None
    if required and text is None:
        raise CandidateRowError(f"mail_candidates row lacks {key!r}")
    return text


def job_from_row(row: Mapping[str, Any]) -> MailJob:
    """A ``MailJob`` from one ``mail_candidates`` row (``decision``/``reason`` are ignored here)."""
    payload = _value(row, "payload")
    if payload is None:
        payload = {}
    elif isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise CandidateRowError(f"mail_candidates.payload is not valid JSON: {exc}") from exc
    if not isinstance(payload, Mapping):
        raise CandidateRowError("mail_candidates.payload must be a JSON object")
    policy = _text(row, "consent_policy", required=True)
    if policy not in _POLICIES:
        raise CandidateRowError(f"unknown consent_policy {policy!r}")
    consent = _value(row, "has_marketing_consent")
    return MailJob(
        campaign=_text(row, "campaign", required=True),  # type: ignore[arg-type]
        step=_text(row, "step", required=True),  # type: ignore[arg-type]
        variant=_text(row, "variant") or "control",
        trigger_key=_text(row, "trigger_key", required=True),  # type: ignore[arg-type]
        customer_id=_text(row, "customer_id", required=True),  # type: ignore[arg-type]
        email=_text(row, "email", required=True),  # type: ignore[arg-type]
        first_name=_text(row, "first_name"),
        last_name=_text(row, "last_name"),
        salutation=_text(row, "salutation"),
        locale=_text(row, "locale") or "de-DE",
        consent_policy=policy,  # type: ignore[arg-type]
        has_marketing_consent=bool(consent) if consent is not None else False,
        payload=dict(payload),
        experiment_id=_text(row, "experiment_id"),
    )
