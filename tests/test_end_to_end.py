"""End to end through the real Dagster job: generated exports → DuckDB → dbt → render → outbox or the
local SendGrid-compatible server → ledger. Re-running the same inputs sends nothing new."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from rfc8058 import one_click_uri

from dagster_project.resources import parse_as_of
from nachfass.cli.main import run_job
from nachfass.devtools.datagen.generate import generate_exports
from nachfass.devtools.sendgrid_server import run_sandbox

AS_OF = "2026-11-24T10:00:00Z"
pytestmark = pytest.mark.slow


def ledger(warehouse: Path) -> list[dict]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = conn.execute("select * from mail.sends order by send_id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


def test_definitions_load_with_every_stage(dbt_manifest) -> None:
    from dagster_project.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for expected in (
        "raw/customers",
        "raw/session_events",
        "staging/stg_customers",
        "segments/abandoned_cart",
        "eligibility/mail_candidates",
        "mail/rendered_mails",
        "mail/sent_mails",
        "events/sendgrid_events",
        "analytics/ab_results",
    ):
        assert expected in keys
    assert {job.name for job in defs.jobs} >= {"nachfass_job", "frequent_mails_job", "daily_mails_job"}


def check_real_outbox(outbox: Path, sent: list[dict], guests: set[str]) -> None:
    """What the real mails of a run contain (issue 13), not only the gallery's samples: products in every
    sales mail, star links in review requests, no account link for guests, one-click unsubscribe in every
    marketing .eml."""
    by_campaign: dict[str, list[tuple[dict, str, bytes]]] = {}
    for row in sent:
        payload = json.loads((outbox / f"{row['send_id']}.json").read_text(encoding="utf-8"))
        html = payload["content"][1]["value"]
        eml = (outbox / f"{row['send_id']}.eml").read_bytes()
        by_campaign.setdefault(row["campaign"], []).append((row, html, eml))
        if row["email"].lower() in guests:
            assert "/konto/" not in html and "/konto/" not in payload["content"][0]["value"], row
        if "headers" in payload:
            assert one_click_uri(eml).startswith("https://"), row["send_id"]
    for campaign in ("abandoned_cart", "cross_sell", "reactivation"):
        for row, html, _ in by_campaign.get(campaign, []):
            assert html.count('class="card-name"') >= 2, (campaign, row["step"])
    for _row, html, _ in by_campaign.get("review_request", []):
        assert html.count('class="star-link"') >= 5 and 'class="item-name"' in html
    # the run has at least cart reminders, cross-sell and review requests to look at
    assert {"abandoned_cart", "cross_sell", "review_request"} <= set(by_campaign), set(by_campaign)
    guest_mails = [r for rows in by_campaign.values() for r, _, _ in rows if r["email"].lower() in guests]
    assert guest_mails, "the sample should mail some guests (order and shipping mails)"


def test_outbox_run_records_every_mail_and_a_rerun_sends_nothing_new(workspace, dbt_manifest) -> None:
    generate_exports(workspace["landing"], customers=300, seed=7, as_of=parse_as_of(AS_OF))
    assert run_job(AS_OF)
    rows = ledger(workspace["warehouse"])
    sent = [r for r in rows if r["status"] == "sent"]
    assert sent, "the generated data must yield mails to send"
    assert all(r["transport"] == "outbox" and r["sg_message_id"] is None for r in sent)
    payloads = {p.stem: json.loads(p.read_text()) for p in workspace["outbox"].glob("*.json")}
    assert set(payloads) == {r["send_id"] for r in sent}
    assert {p.stem for p in workspace["outbox"].glob("*.eml")} == set(payloads)
    for row in sent:  # the payload is what SendGrid would get: opaque ids, no personal data in custom_args
        payload = payloads[row["send_id"]]
        assert payload["personalizations"][0]["to"][0]["email"] == row["email"]
        assert payload["custom_args"]["send_id"] == row["send_id"]
        assert row["email"] not in json.dumps(payload["custom_args"])

    conn = duckdb.connect(str(workspace["warehouse"]), read_only=True)
    guest_rows = conn.execute("select lower(email) from staging.stg_customers where is_guest").fetchall()
    guests = {row[0] for row in guest_rows}
    decided = conn.execute(
        "select count(*) from eligibility.mail_candidates where decision = 'send'"
    ).fetchone()[0]
    # the payloads, the largest column the build writes, are stored zstd-compressed (column_compression
    # in dbt_project.yml): in the segments and in mail_candidates, with the mails rendered from them above
    tables = conn.execute(
        "select schema_name || '.' || table_name from duckdb_columns() "
        "where schema_name in ('segments', 'eligibility') and column_name = 'payload'"
    ).fetchall()
    payload_storage = {
        table: {
            row[0]
            for row in conn.execute(
                f"select compression from pragma_storage_info('{table}') "
                "where column_name = 'payload' and segment_type <> 'VALIDITY'"
            ).fetchall()
        }
        for (table,) in tables
    }
    conn.close()
    assert {"segments.cross_sell", "segments.review_request", "eligibility.mail_candidates"} <= set(
        payload_storage
    )
    assert all(methods <= {"ZSTD", "Constant"} for methods in payload_storage.values()), payload_storage
    assert "ZSTD" in payload_storage["eligibility.mail_candidates"]
    assert decided == len(sent)
    check_real_outbox(workspace["outbox"], sent, guests)

    assert run_job(AS_OF)  # same exports, same as_of
    assert ledger(workspace["warehouse"]) == rows
    assert len(list(workspace["outbox"].glob("*.json"))) == len(payloads)
    conn = duckdb.connect(str(workspace["warehouse"]), read_only=True)
    second = dict(
        conn.execute("select reason, count(*) from eligibility.mail_candidates group by reason").fetchall()
    )
    conn.close()
    assert "due" not in second and second["already_sent"] >= len(sent)


def test_sendgrid_run_has_the_same_ledger_semantics(workspace, dbt_manifest, monkeypatch) -> None:
    generate_exports(workspace["landing"], customers=300, seed=7, as_of=parse_as_of(AS_OF))
    key = "SG.test-key-for-the-local-server"
    with run_sandbox(api_key=key) as sandbox:
        monkeypatch.setenv("SENDGRID_API_KEY", key)
        monkeypatch.setenv("SENDGRID_API_HOST", sandbox.url)
        assert run_job(AS_OF)
        accepted = sandbox.messages()
        rows = [r for r in ledger(workspace["warehouse"]) if r["status"] != "holdout"]
        assert rows and all(r["status"] == "sent" and r["transport"] == "sendgrid" for r in rows)
        assert sorted(m["message_id"] for m in accepted) == sorted(r["sg_message_id"] for r in rows)
        assert run_job(AS_OF)
        assert len(sandbox.messages()) == len(accepted)  # nothing reached the server twice
    assert not list(workspace["outbox"].glob("*.json"))


def test_a_broken_template_stops_the_run_before_anything_is_sent(
    workspace, dbt_manifest, monkeypatch, capsys
) -> None:
    """A marketer's typo in one template: the run fails in the render step, the ledger and the outbox
    stay empty (the rest of the batch is not sent either), and the error names the template."""
    import shutil

    from nachfass.core.paths import TEMPLATES_DIR

    templates = workspace["landing"].parent / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    broken = templates / "de" / "order_thanks" / "1.html"
    broken.write_text(broken.read_text(encoding="utf-8").replace("{{", "{{ undefined_variable ~ ", 1))
    monkeypatch.setenv("NACHFASS_TEMPLATES", str(templates))
    generate_exports(workspace["landing"], customers=300, seed=7, as_of=parse_as_of(AS_OF))
    assert not run_job(AS_OF)
    error = capsys.readouterr().err
    assert "step mail__rendered_mails failed" in error and "de/order_thanks/1.html line" in error
    assert ledger(workspace["warehouse"]) == []
    assert not workspace["outbox"].exists() or not any(workspace["outbox"].iterdir())
