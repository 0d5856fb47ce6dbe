"""Campaign settings validation and the Python mirror of the dbt A/B assignment."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nachfass.core.campaigns import (
    CampaignSettingsError,
    Experiment,
    assign_variant,
    campaign_json_schema,
    load_campaigns,
    stable_bucket,
    validate_campaigns,
)
from nachfass.core.paths import DBT_PROJECT_DIR, TEMPLATES_DIR

SEGMENTS = DBT_PROJECT_DIR / "models" / "segments"
CAMPAIGNS = {
    "abandoned_cart",
    "checkout_recovery",
    "order_thanks",
    "shipping_update",
    "review_request",
    "cross_sell",
    "reactivation",
    "support_followup",
}


# ---- the settings in the repository -----------------------------------------------------------------------


def test_repository_settings_are_valid_and_complete() -> None:
    campaigns = validate_campaigns()
    assert set(campaigns) == CAMPAIGNS
    marketing = sorted((c.priority, c.name) for c in campaigns.values() if c.is_marketing)
    assert [name for _, name in marketing] == [
        "checkout_recovery",
        "abandoned_cart",
        "review_request",
        "cross_sell",
        "reactivation",
    ]
    assert {c.name for c in campaigns.values() if not c.is_marketing} == {
        "order_thanks",
        "shipping_update",
        "support_followup",
    }
    assert campaigns["review_request"].consent_policy == "existing_customer"
    assert set(campaigns["shipping_update"].steps) == {"shipped", "delivered"}
    assert campaigns["reactivation"].inactive_after_days == 120


# ---- validation errors name the file and the key -----------------------------------------------------------


@pytest.fixture
def segments(tmp_path: Path) -> Path:
    folder = tmp_path / "segments"
    shutil.copytree(SEGMENTS, folder)
    return folder


def _edit(folder: Path, campaign: str, change) -> Path:
    path = folder / f"{campaign}.yml"
    document = yaml.safe_load(path.read_text())
    change(document["models"][0]["config"]["meta"]["campaign"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _step(name: str = "1"):
    return lambda campaign: campaign["steps"][name]


BROKEN = [
    ("unknown key", "abandoned_cart", lambda c: c.update(priorty=2), "'priorty'", "unknown setting"),
    (
        "unknown step key",
        "order_thanks",
        lambda c: c["steps"]["1"].update(delay=15),
        "'steps.1.delay'",
        "unknown",
    ),
    (
        "delay as text",
        "order_thanks",
        lambda c: c["steps"]["1"].update(delay_minutes="15m"),
        "'steps.1.delay_minutes'",
        "whole number of minutes",
    ),
    (
        "negative delay",
        "cross_sell",
        lambda c: c["steps"]["1"].update(delay_minutes=-1),
        "'steps.1.delay_minutes'",
        "≥ 0",
    ),
    (
        "missing expiry",
        "support_followup",
        lambda c: c["steps"]["1"].pop("expire_after_minutes"),
        "'steps.1.expire_after_minutes'",
        "missing",
    ),
    (
        "zero weight",
        "abandoned_cart",
        lambda c: c["experiment"]["variants"].update(b=0),
        "'experiment.variants.b'",
        "positive",
    ),
    (
        "negative weight",
        "abandoned_cart",
        lambda c: c["experiment"]["variants"].update(control=-5),
        "'experiment.variants.control'",
        "positive",
    ),
    (
        "holdout above 50",
        "abandoned_cart",
        lambda c: c["experiment"].update(holdout_percent=60),
        "'experiment.holdout_percent'",
        "0 to 50",
    ),
    (
        "holdout negative",
        "abandoned_cart",
        lambda c: c["experiment"].update(holdout_percent=-1),
        "'experiment.holdout_percent'",
        "0 to 50",
    ),
    (
        "holdout as text",
        "abandoned_cart",
        lambda c: c["experiment"].update(holdout_percent="10%"),
        "'experiment.holdout_percent'",
        "0 to 50",
    ),
    (
        "experiment without varies",
        "abandoned_cart",
        lambda c: c["experiment"].pop("varies"),
        "'experiment.varies'",
        "say what the variants vary",
    ),
    (
        "experiment varies something unknown",
        "abandoned_cart",
        lambda c: c["experiment"].update(varies=["colour"]),
        "'experiment.varies'",
        "subject, body, send_delay",
    ),
    (
        "experiment without control",
        "review_request",
        lambda c: c["experiment"].update(variants={"a": 50, "b": 50}),
        "'experiment.variants'",
        "'control'",
    ),
    (
        "delay without send_delay in varies",
        "review_request",
        lambda c: c["experiment"]["variants"].update(b={"weight": 50, "extra_delay_minutes": 120}),
        "'experiment.varies'",
        "send_delay",
    ),
    (
        "send_delay without a delay",
        "review_request",
        lambda c: c["experiment"].update(varies=["send_delay"]),
        "'experiment.varies'",
        "extra_delay_minutes",
    ),
    (
        "delay past the expiry",
        "abandoned_cart",
        lambda c: c["experiment"].update(
            varies=["subject", "send_delay"],
            variants={"control": 50, "b": {"weight": 50, "extra_delay_minutes": 3000}},
        ),
        "'experiment.variants.b.extra_delay_minutes'",
        "past its expiry",
    ),
    (
        "unknown variant key",
        "review_request",
        lambda c: c["experiment"]["variants"].update(b={"weight": 50, "delay": 120}),
        "'experiment.variants.b.delay'",
        "unknown",
    ),
    (
        "unknown policy",
        "review_request",
        lambda c: c.update(consent_policy="existing_customers"),
        "'consent_policy'",
        "none, required, existing_customer",
    ),
    (
        "unknown template",
        "reactivation",
        lambda c: c["steps"]["2"].update(template="reactivation/3"),
        "'steps.2.template'",
        "unknown template",
    ),
    ("priority as text", "cross_sell", lambda c: c.update(priority="high"), "'priority'", "whole number"),
    (
        "marketing without priority",
        "cross_sell",
        lambda c: c.pop("priority"),
        "'priority'",
        "needs a priority",
    ),
    (
        "exit flag as text",
        "abandoned_cart",
        lambda c: c.update(exit_on_order="yes"),
        "'exit_on_order'",
        "true",
    ),
    (
        "inactive days as text",
        "reactivation",
        lambda c: c.update(inactive_after_days="120"),
        "'inactive_after_days'",
        "whole number",
    ),
    (
        "rollout time without its offset",
        "review_request",
        lambda c: c.update(rollout={"live_from": "2026-12-01T09:00:00", "backlog": "skip"}),
        "'rollout.live_from'",
        "UTC offset",
    ),
    (
        "drip without a daily number",
        "review_request",
        lambda c: c.update(rollout={"live_from": "2026-12-01T09:00:00+01:00", "backlog": "drip"}),
        "'rollout.drip_per_day'",
        "needs drip_per_day",
    ),
    (
        "daily number without drip",
        "review_request",
        lambda c: c.update(
            rollout={"live_from": "2026-12-01T09:00:00Z", "backlog": "skip", "drip_per_day": 100}
        ),
        "'rollout.drip_per_day'",
        "only with backlog: drip",
    ),
    (
        "unknown backlog mode",
        "review_request",
        lambda c: c.update(rollout={"live_from": "2026-12-01T09:00:00Z", "backlog": "later"}),
        "'rollout.backlog'",
        "'skip', 'all' or 'drip'",
    ),
    (
        "unknown rollout key",
        "review_request",
        lambda c: c.update(rollout={"live_from": "2026-12-01T09:00:00Z", "per_day": 5}),
        "'rollout.per_day'",
        "allowed: backlog, drip_order, drip_per_day, live_from",
    ),
    (
        "bool as number",
        "order_thanks",
        lambda c: c["steps"]["1"].update(delay_minutes=True),
        "'steps.1.delay_minutes'",
        "whole number",
    ),
]


@pytest.mark.parametrize(
    ("campaign", "change", "key", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_a_typo_is_a_clear_error_naming_file_and_key(
    segments: Path, campaign: str, change, key: str, message: str
) -> None:
    _edit(segments, campaign, change)
    with pytest.raises(CampaignSettingsError) as error:
        load_campaigns(segments)
    text = str(error.value)
    assert f"{campaign}.yml" in text
    assert key in text
    assert message in text


def test_a_campaign_needs_its_segment_model(segments: Path) -> None:
    (segments / "order_thanks.sql").unlink()
    with pytest.raises(CampaignSettingsError, match=r"order_thanks\.yml.*no segment model order_thanks\.sql"):
        load_campaigns(segments)


def test_a_cadence_is_named_or_a_cron(segments: Path) -> None:
    _edit(segments, "order_thanks", lambda c: c.update(cadence="hourly"))
    with pytest.raises(
        CampaignSettingsError, match=r"'cadence'.*every_15_minutes, daily or a five-field cron"
    ):
        load_campaigns(segments)
    _edit(segments, "order_thanks", lambda c: c.update(cadence="30 18 * * 1-5"))
    assert load_campaigns(segments)["order_thanks"].cron == "30 18 * * 1-5"


def test_languages_say_which_templates_exist_and_which_is_the_fallback(
    segments: Path, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    (templates / "en" / "support_followup" / "1.txt").unlink()
    with pytest.raises(CampaignSettingsError, match=r"support_followup.*'steps\.1\.template'.*'en'"):
        load_campaigns(segments, templates_dir=templates)
    _edit(segments, "support_followup", lambda c: c.update(languages=["de"]))
    followup = load_campaigns(segments, templates_dir=templates)["support_followup"]
    assert followup.template_language("en") == "de" and followup.template_language("de") == "de"


def test_the_template_setting_is_what_renders(segments: Path, tmp_path: Path) -> None:
    """steps.*.template names the template: a renamed template with the setting pointing at it renders."""
    from nachfass.core.links import LinkSigner
    from nachfass.core.mail.render import MailRenderer
    from nachfass.core.mail.samples import sample_jobs
    from nachfass.core.shop import load_shop_settings

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    for lang in ("de", "en"):
        for ext in ("html", "txt"):
            source = templates / lang / "support_followup" / f"1.{ext}"
            text = source.read_text().replace("{% block", "{# follow-up v2 #}{% block", 1)
            (templates / lang / "support_followup" / f"nachgefragt.{ext}").write_text(text)
            source.unlink()
    _edit(
        segments,
        "support_followup",
        lambda c: c["steps"]["1"].update(template="support_followup/nachgefragt"),
    )
    campaigns = load_campaigns(segments, templates_dir=templates)
    renderer = MailRenderer(
        load_shop_settings(), LinkSigner("k" * 32), templates_dir=templates, campaigns=campaigns
    )
    job = next(j for j in sample_jobs(campaigns, locales=("de-DE",)) if j.campaign == "support_followup")
    assert renderer.render(job).text


def test_the_json_schema_for_editors_is_current() -> None:
    """dbt/models/segments/campaign.schema.json is generated from the typed settings (regenerate it with
    `python -m nachfass.core.campaigns schema > dbt/models/segments/campaign.schema.json`)."""
    committed = json.loads((SEGMENTS / "campaign.schema.json").read_text())
    assert committed == campaign_json_schema()
    for path in SEGMENTS.glob("*.yml"):
        assert path.read_text().startswith("# yaml-language-server: $schema=campaign.schema.json"), path
    # the schema accepts every campaign in the repository and rejects a typo, as an editor would
    validator = jsonschema.Draft202012Validator(committed)
    for path in SEGMENTS.glob("*.yml"):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path
    document = yaml.safe_load((SEGMENTS / "cross_sell.yml").read_text())
    document["models"][0]["config"]["meta"]["campaign"]["priorty"] = 3
    assert list(validator.iter_errors(document))


def test_settings_in_the_wrong_place_are_an_error(segments: Path) -> None:
    path = segments / "order_thanks.yml"
    document = yaml.safe_load(path.read_text())
    document["models"][0]["meta"] = {"campaign": {"consent_policy": "none"}}
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CampaignSettingsError, match=r"order_thanks\.yml.*config: meta: campaign"):
        load_campaigns(segments)


def test_invalid_yaml_names_the_file(segments: Path) -> None:
    (segments / "cross_sell.yml").write_text("models: [\n")
    with pytest.raises(CampaignSettingsError, match=r"cross_sell\.yml"):
        load_campaigns(segments)


# ---- A/B assignment: Python mirror == dbt macro ---------------------------------------------------------


def _sql_variants(customer_ids: list[str], experiment: Experiment) -> list[str]:
    """The dbt macro's SQL (same arithmetic as dbt/macros/campaigns.sql assign_variant), run in DuckDB."""
    bucket = (
        "(cast(('0x' || substr(md5(cast(customer_id as varchar) || ':' || '{id}'), 1, 8)) as bigint) % 10000)"
    )
    bucket = bucket.format(id=experiment.id)
    holdout = int(experiment.holdout_percent * 100)
    total = sum(experiment.variants.values())
    whens = [f"when {bucket} < {holdout} then 'holdout'"]
    cumulative = 0
    for name, weight in experiment.variants.items():
        cumulative += weight
        whens.append(
            f"when ({bucket} - {holdout}) * {total} < {cumulative} * ({10000 - holdout}) then '{name}'"
        )
    sql = f"select case {' '.join(whens)} end from unnest(?) as t(customer_id)"
    conn = duckdb.connect()
    try:
        # unnest keeps the order of the list
        return [row[0] for row in conn.execute(sql, [customer_ids]).fetchall()]
    finally:
        conn.close()


def test_sql_helper_matches_the_dbt_macro() -> None:
    """The SQL used below is what the macro renders on DuckDB: compare with the macros' text (the
    PostgreSQL spelling of the same bucket is compared with DuckDB's in tests/test_dbt_engines.py)."""
    macro = (DBT_PROJECT_DIR / "macros" / "campaigns.sql").read_text()
    cross_db = (DBT_PROJECT_DIR / "macros" / "cross_db.sql").read_text()
    assert "({{ hex_to_bigint('substr(md5(' ~ expr ~ '), 1, 8)') }} % 10000)" in macro
    duckdb_hex = cross_db[cross_db.index("{% macro duckdb__hex_to_bigint") :]
    assert "cast(('0x' || {{ hex_digits }}) as bigint)" in duckdb_hex[: duckdb_hex.index("{%- endmacro %}")]
    assert "({{ bucket }} - {{ holdout }}) * {{ total }} < {{ ns.cum }} * ({{ 10000 - holdout }})" in macro


def assignment(id: str, variants: dict[str, int], holdout_percent: float = 0) -> Experiment:
    """An experiment as far as assignment goes (no control or `varies` needed to split customers)."""
    return Experiment.model_construct(id=id, variants=variants, holdout_percent=holdout_percent)


experiments = st.builds(
    assignment,
    id=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    variants=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "holdout"),
        st.integers(min_value=1, max_value=1000),
        min_size=1,
        max_size=5,
    ),
    holdout_percent=st.one_of(
        st.integers(0, 50), st.floats(0, 50, allow_nan=False).map(lambda x: round(x, 2))
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    experiment=experiments, customer_ids=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40)
)
def test_python_and_sql_assign_the_same_variant(experiment: Experiment, customer_ids: list[str]) -> None:
    python = [assign_variant(c, experiment) for c in customer_ids]
    assert python == _sql_variants(customer_ids, experiment)


@settings(max_examples=30, deadline=None)
@given(experiment=experiments, customer_id=st.text(min_size=1, max_size=30))
def test_assignment_is_stable(experiment: Experiment, customer_id: str) -> None:
    first = assign_variant(customer_id, experiment)
    assert first in {*experiment.variants, "holdout"}
    assert assign_variant(customer_id, experiment) == first
    assert (
        assign_variant(
            customer_id,
            {
                "id": experiment.id,
                "variants": experiment.variants,
                "holdout_percent": experiment.holdout_percent,
            },
        )
        == first
    )


def test_no_experiment_means_control() -> None:
    assert assign_variant("C1", None) == "control"


@settings(max_examples=8, deadline=None)
@given(
    weights=st.lists(st.integers(1, 10), min_size=2, max_size=4),
    holdout=st.integers(0, 30),
)
def test_shares_match_weights_on_large_samples(weights: list[int], holdout: int) -> None:
    experiment = assignment(
        id="share_test", variants={f"v{i}": w for i, w in enumerate(weights)}, holdout_percent=holdout
    )
    n = 40_000
    counts = Counter(assign_variant(f"C{i:07d}", experiment) for i in range(n))
    assert abs(counts["holdout"] / n - holdout / 100) < 0.01
    total = sum(weights)
    for i, weight in enumerate(weights):
        expected = (1 - holdout / 100) * weight / total
        assert abs(counts[f"v{i}"] / n - expected) < 0.015


def test_bucket_is_uniform_enough() -> None:
    counts = Counter(stable_bucket(f"C{i}:x") // 1000 for i in range(50_000))
    assert all(4500 < c < 5500 for c in counts.values())


# ---- experiments say what they vary (rendered when the project loads) ----


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    from nachfass.core.paths import TEMPLATES_DIR

    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, folder)
    return folder


def _experiment(segments: Path, campaign: str, **experiment) -> None:
    _edit(segments, campaign, lambda c: c.update(experiment=experiment))


def test_repository_experiments_vary_what_they_declare() -> None:
    campaigns = validate_campaigns()
    assert campaigns["abandoned_cart"].experiment.varies == ("subject",)
    assert campaigns["review_request"].experiment.varies == ("subject",)


def test_variant_identical_to_control_is_refused(segments: Path, templates: Path) -> None:
    """Variant "c" has no subject, template or delay of its own: it would be control under another name."""
    _experiment(segments, "cross_sell", id="x_1", varies=["subject"], variants={"control": 1, "c": 1})
    with pytest.raises(CampaignSettingsError, match=r"cross_sell\.yml.*'c' renders exactly like the control"):
        validate_campaigns(segments, templates_dir=templates)


def test_variant_identical_in_one_step_is_refused(segments: Path, templates: Path) -> None:
    """Reactivation has two steps; a subject for step 1 only leaves step 2 of variant b equal to control."""
    for lang in ("de", "en"):
        path = templates / lang / "subjects.yaml"
        lines = yaml.safe_load(path.read_text(encoding="utf-8"))
        lines["reactivation"]["1"]["subject"]["b"] = "Neu für Sie: {{ shop.name }}"
        path.write_text(yaml.safe_dump(lines, allow_unicode=True), encoding="utf-8")
    _experiment(segments, "reactivation", id="r_1", varies=["subject"], variants={"control": 1, "b": 1})
    with pytest.raises(CampaignSettingsError, match=r"reactivation/2 variant 'b'.*exactly like the control"):
        validate_campaigns(segments, templates_dir=templates)


def test_body_change_in_a_subject_test_is_refused(segments: Path, templates: Path) -> None:
    for ext in ("html", "txt"):
        source = (templates / "de" / "abandoned_cart" / f"1.{ext}").read_text(encoding="utf-8")
        changed = source.replace("Wir haben Ihren Warenkorb", "Ihr Warenkorb ist")
        (templates / "de" / "abandoned_cart" / f"1.b.{ext}").write_text(changed, encoding="utf-8")
    with pytest.raises(CampaignSettingsError, match=r"changes the body although the experiment declares"):
        validate_campaigns(segments, templates_dir=templates)
    # declared, the same variant is fine
    _edit(segments, "abandoned_cart", lambda c: c["experiment"].update(varies=["subject", "body"]))
    assert validate_campaigns(segments, templates_dir=templates)["abandoned_cart"].experiment.varies == (
        "subject",
        "body",
    )


def test_body_variant_needs_its_text_part(segments: Path, templates: Path) -> None:
    """A variant with its own HTML but the control's text: text-only readers would get the control."""
    source = (templates / "de" / "abandoned_cart" / "1.html").read_text(encoding="utf-8")
    (templates / "de" / "abandoned_cart" / "1.b.html").write_text(source.replace("gespeichert", "gemerkt"))
    _edit(segments, "abandoned_cart", lambda c: c["experiment"].update(varies=["subject", "body"]))
    with pytest.raises(CampaignSettingsError, match=r"1\.b\.html but no \.txt"):
        validate_campaigns(segments, templates_dir=templates)


def test_declared_aspect_that_nothing_changes_is_refused(segments: Path, templates: Path) -> None:
    _edit(segments, "review_request", lambda c: c["experiment"].update(varies=["subject", "body"]))
    with pytest.raises(CampaignSettingsError, match=r"declares varies.*no variant changes the body"):
        validate_campaigns(segments, templates_dir=templates)


def test_send_time_experiment_needs_no_other_difference(segments: Path, templates: Path) -> None:
    _experiment(
        segments,
        "cross_sell",
        id="cross_sell_send_time",
        varies=["send_delay"],
        variants={"control": 1, "evening": {"weight": 1, "extra_delay_minutes": 480}},
    )
    experiment = validate_campaigns(segments, templates_dir=templates)["cross_sell"].experiment
    assert experiment.extra_delay_minutes == {"evening": 480}
    assert experiment.variants == {"control": 1, "evening": 1}
    assert assign_variant("C1", {"id": "x", "variants": {"control": 1, "evening": {"weight": 3}}}) in {
        "control",
        "evening",
    }
