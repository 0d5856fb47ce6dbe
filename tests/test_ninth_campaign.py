"""A marketer adds a ninth campaign following docs/marketers.md "Add a campaign": one YAML, one SQL file and
its templates, in a shop's own copy of the dbt project and templates (NACHFASS_DBT_PROJECT,
NACHFASS_TEMPLATES). Nothing else is edited, and the campaign is listed, decided, rendered, sent, reported
and scheduled, while the eight others keep sending.

Everything runs as a user would: `nachfass` in a subprocess, the real Dagster job, dbt and DuckDB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from tests_support import REPO_ROOT

from nachfass.devtools.datagen.generate import generate_exports

pytestmark = pytest.mark.slow

AS_OF = "2026-11-24T10:00:00Z"
NEXT_DAY = "2026-11-25T10:00:00Z"
NACHFASS = str(Path(sys.executable).parent / "nachfass")

WELCOME_YML = """\
# yaml-language-server: $schema=campaign.schema.json
version: 2

models:
  - name: welcome
    description: One row per registered customer whose first order was placed in the recent past.
    config:
      meta:
        campaign:
          cadence: "0 18 * * 1-5"
          languages: [de]
          consent_policy: required
          priority: 70
          exit_on_order: false
          steps:
            "1":
              delay_minutes: 60
              expire_after_minutes: 10080
              template: welcome/1
    data_tests:
      - unique_combination:
          arguments:
            columns: ["step", "trigger_key"]
"""

WELCOME_SQL = """\
{%- set campaign = segment_settings('welcome') -%}
{%- set step_1 = campaign['steps']['1'] -%}
with first_orders as (
    select customer_id, min(placed_at) as first_order_at
    from {{ ref('int_orders') }}
    group by customer_id
),

customers as (
    select * from {{ ref('stg_customers') }}
    where not is_guest
)

select
    'welcome' as campaign,
    '1' as step,
    customers.customer_id as trigger_key,
    customers.customer_id,
    customers.email,
    first_orders.first_order_at as trigger_at,
    first_orders.first_order_at + {{ minutes(step_1["delay_minutes"]) }} as due_at,
    first_orders.first_order_at
        + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }} as expires_at,
    cast(null as varchar) as exit_reason,
    to_json({'customer_id': customers.customer_id}) as payload
from first_orders
inner join customers on first_orders.customer_id = customers.customer_id
where first_orders.first_order_at
    > {{ as_of() }} - {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }}
"""


WELCOME_HTML = """\
{% extends "de/base.html" %}
{% block content %}
<p>willkommen bei {{ shop.name }}! Schön, dass Sie sich für uns entschieden haben.</p>
<p><a href="{{ shop_link('/neuheiten') }}">Unsere Neuheiten ansehen</a></p>
{% endblock %}
{% block reason %}Sie erhalten diese E-Mail, weil Sie bei uns bestellt und dem Erhalt von E-Mails
zugestimmt haben.{% endblock %}
"""

WELCOME_TXT = """\
{% extends "de/base.txt" %}
{% block content %}
willkommen bei {{ shop.name }}! Schön, dass Sie sich für uns entschieden haben.

Unsere Neuheiten ansehen:
{{ shop_link("/neuheiten") }}
{% endblock %}
{% block reason %}Sie erhalten diese E-Mail, weil Sie bei uns bestellt und dem Erhalt von E-Mails
zugestimmt haben.{% endblock %}
"""

WELCOME_SUBJECT = """
welcome:
  "1":
    subject:
      default: "Willkommen bei {{ shop.name }}"
    preheader:
      default: "Schön, dass Sie da sind."
"""


@pytest.fixture(scope="module")
def shop_copy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The shop's own dbt project and templates with the new campaign added, exports and an env."""
    root = tmp_path_factory.mktemp("ninth")
    shutil.copytree(
        REPO_ROOT / "dbt", root / "dbt", ignore=shutil.ignore_patterns("target", "logs", "dbt_packages")
    )
    shutil.copytree(REPO_ROOT / "mail_templates", root / "mail_templates")
    segments = root / "dbt" / "models" / "segments"
    (segments / "welcome.yml").write_text(WELCOME_YML, encoding="utf-8")
    (segments / "welcome.sql").write_text(WELCOME_SQL, encoding="utf-8")
    folder = root / "mail_templates" / "de" / "welcome"
    folder.mkdir()
    (folder / "1.html").write_text(WELCOME_HTML, encoding="utf-8")
    (folder / "1.txt").write_text(WELCOME_TXT, encoding="utf-8")
    with (root / "mail_templates" / "de" / "subjects.yaml").open("a", encoding="utf-8") as subjects:
        subjects.write(WELCOME_SUBJECT)

    generate_exports(root / "landing", customers=600, seed=7, as_of=datetime.fromisoformat(AS_OF))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SENDGRID_", "NACHFASS_", "DAGSTER_"))
    }
    env.update(
        NACHFASS_DBT_PROJECT=str(root / "dbt"),
        NACHFASS_TEMPLATES=str(root / "mail_templates"),
        NACHFASS_WAREHOUSE=str(root / "warehouse.duckdb"),
        NACHFASS_LANDING=str(root / "landing"),
        NACHFASS_OUTBOX=str(root / "outbox"),
        NACHFASS_DATA=str(root / "data"),
    )
    return {"root": str(root), **env}


def nachfass(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in env.items() if key != "root"}
    return subprocess.run(
        [NACHFASS, *args],
        env=clean,
        cwd=env["root"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def test_the_registry_lists_it(shop_copy: dict[str, str]) -> None:
    result = nachfass(shop_copy, "campaigns")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "welcome" in names and len(names) == 9, result.stdout


def test_it_is_decided_rendered_sent_and_reported(shop_copy: dict[str, str]) -> None:
    result = nachfass(shop_copy, "run", "--as-of", AS_OF, "--no-summary")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    conn = duckdb.connect(str(Path(shop_copy["root"]) / "warehouse.duckdb"), read_only=True)
    try:
        decided = dict(
            conn.execute(
                "select decision, count(*) from eligibility.mail_candidates "
                "where campaign = 'welcome' group by 1"
            ).fetchall()
        )
        sent = conn.execute(
            "select send_id, email, status from mail.sends where campaign = 'welcome' order by send_id"
        ).fetchall()
        no_consent_sent = conn.execute(
            """
            select count(*) from mail.sends as sends
            inner join eligibility.mail_candidates as candidates using (campaign, step, trigger_key)
            where sends.campaign = 'welcome' and not candidates.has_marketing_consent
            """
        ).fetchone()[0]
        campaigns_sent = {
            row[0] for row in conn.execute("select distinct campaign from mail.sends").fetchall()
        }
    finally:
        conn.close()

    assert decided.get("send", 0) >= 1, decided
    assert sum(decided.values()) > decided["send"], decided  # some without consent: not sent
    assert len(sent) == decided["send"], (sent, decided)
    assert no_consent_sent == 0
    assert len(campaigns_sent) >= 5, campaigns_sent  # the others still send in the same batch

    # the next day's run reports them (analytics are built before a run sends) and sends none twice
    result = nachfass(shop_copy, "run", "--as-of", NEXT_DAY, "--no-summary")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    conn = duckdb.connect(str(Path(shop_copy["root"]) / "warehouse.duckdb"), read_only=True)
    try:
        reported = conn.execute(
            "select sum(n_sent) from analytics.campaign_performance where campaign = 'welcome'"
        ).fetchone()[0]
        twice = conn.execute(
            "select count(*) from (select trigger_key from mail.sends where campaign = 'welcome' "
            "group by trigger_key having count(*) > 1)"
        ).fetchone()[0]
    finally:
        conn.close()
    assert reported >= len(sent)
    assert twice == 0

    outbox = Path(shop_copy["root"]) / "outbox"
    send_id = sent[0][0]
    payload = json.loads((outbox / f"{send_id}.json").read_text(encoding="utf-8"))
    assert payload["subject"] == "Willkommen bei Gartenglück Versand"
    html = payload["content"][1]["value"]
    assert "Schön, dass Sie sich für uns entschieden haben" in html
    # a marketing mail: the unsubscribe path is there, in the body and as RFC 8058 headers
    assert "List-Unsubscribe" in payload["headers"], payload["headers"]
    assert "abmelden" in html.lower() or "abbestellen" in html.lower()


def test_it_is_scheduled_on_its_own_cron(shop_copy: dict[str, str]) -> None:
    script = textwrap.dedent(
        """
        import json
        from nachfass.cli.main import ensure_dbt_manifest
        ensure_dbt_manifest()
        from dagster_project.definitions import defs
        from dagster_project.jobs import MAIL_JOB_SPECS
        print(json.dumps({
            "schedules": {
                s.name: [defs.resolve_schedule_def(s.name).cron_schedule,
                         defs.resolve_schedule_def(s.name).execution_timezone]
                for s in defs.schedules
            },
            "jobs": {spec.job_name: list(spec.campaigns) for spec in MAIL_JOB_SPECS},
        }))
        """
    )
    clean = {key: value for key, value in shop_copy.items() if key != "root"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=clean, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    own = [job for job, names in found["jobs"].items() if names == ["welcome"]]
    assert own == ["mails_0_18_x_x_1_5_job"], found["jobs"]
    assert found["schedules"]["mails_0_18_x_x_1_5_schedule"] == ["0 18 * * 1-5", "Europe/Berlin"]
    assert "welcome" not in found["jobs"]["daily_mails_job"]
    assert "abandoned_cart" in found["jobs"]["frequent_mails_job"]


def test_it_builds_alone_through_eligibility_by_name(shop_copy: dict[str, str]) -> None:
    result = nachfass(shop_copy, "campaigns", "build", "welcome", "--as-of", NEXT_DAY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    conn = duckdb.connect(str(Path(shop_copy["root"]) / "warehouse.duckdb"), read_only=True)
    try:
        campaigns = {
            row[0] for row in conn.execute("select campaign from eligibility.mail_candidates").fetchall()
        }
    finally:
        conn.close()
    assert campaigns == {"welcome"}
    unknown = nachfass(shop_copy, "campaigns", "build", "wellcome")
    assert unknown.returncode == 1 and "no campaign 'wellcome'" in unknown.stderr
