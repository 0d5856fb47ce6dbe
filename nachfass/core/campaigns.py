"""Campaign settings: read from the segment YAML files, validated, and the A/B assignment mirrored in Python.

Marketers edit a campaign's settings in one place, its segment model's YAML
(``dbt/models/segments/<campaign>.yml``, key ``config.meta.campaign``); dbt reads them while it compiles the
segment SQL and ``mail_candidates``. dbt itself would accept a typo silently (an unknown key is ignored, a
string delay renders as broken SQL somewhere else), so the Dagster definitions call ``validate_campaigns()``
when they load: a wrong setting stops the project with a message naming the file and the key.

``assign_variant`` is the Python twin of the dbt macro ``assign_variant`` (``dbt/macros/campaigns.sql``):
md5("<customer_id>:<experiment_id>") → bucket in [0, 10000) → holdout first, then variants by cumulative
integer weight. Tests check that both give the same variant for random ids and weights.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nachfass.core.paths import DBT_PROJECT_DIR, TEMPLATES_DIR

SEGMENTS_DIR = DBT_PROJECT_DIR / "models" / "segments"
CAMPAIGN_MACROS = DBT_PROJECT_DIR / "macros" / "campaigns.sql"

CONSENT_POLICIES = ("none", "required", "existing_customer")
MARKETING_POLICIES = ("required", "existing_customer")
# Template language folder every campaign must have (German is the default locale, docs/marketers.md).
DEFAULT_TEMPLATE_LANGUAGE = "de"
# 0–50 %: a holdout above half the audience is almost certainly a typo (5 instead of 0.5 is fine, 500 not).
MAX_HOLDOUT_PERCENT = 50
N_BUCKETS = 10_000

CAMPAIGN_KEYS = {
    "consent_policy",
    "priority",
    "exit_on_order",
    "steps",
    "experiment",
    "inactive_after_days",
    "n_recommendations",
    "skip_if_reminded_by",
}
STEP_KEYS = {"delay_minutes", "expire_after_minutes", "template"}
EXPERIMENT_KEYS = {"id", "varies", "variants", "holdout_percent"}
VARIANT_KEYS = {"weight", "extra_delay_minutes"}
# What an experiment may vary: the subject line (and preheader), the body (its own templates), or the
# send time (a variant-specific delay added to every step's due time).
VARIED_ASPECTS = ("subject", "body", "send_delay")
CONTROL = "control"


class CampaignSettingsError(ValueError):
    """A campaign setting is missing, unknown or of the wrong type. The message names file and key."""


@dataclass(frozen=True)
class StepSettings:
    delay_minutes: int
    expire_after_minutes: int
    template: str


@dataclass(frozen=True)
class Experiment:
    id: str
    variants: dict[str, int]  # name -> weight
    holdout_percent: float = 0
    varies: tuple[str, ...] = ()  # subset of VARIED_ASPECTS, as declared in the YAML
    extra_delay_minutes: dict[str, int] = field(default_factory=dict)  # send-time variants only


@dataclass(frozen=True)
class CampaignSettings:
    name: str
    file: Path
    consent_policy: str
    steps: dict[str, StepSettings]
    priority: int | None = None
    exit_on_order: bool = False
    experiment: Experiment | None = None
    inactive_after_days: int | None = None
    n_recommendations: int | None = None
    # "one cart, one series": skipped (already_reminded) once one of these campaigns mailed the trigger key
    skip_if_reminded_by: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_marketing(self) -> bool:
        return self.consent_policy in MARKETING_POLICIES


# ---- A/B assignment (mirror of the dbt macros stable_bucket / assign_variant) ----------------------------


def stable_bucket(text: str) -> int:
    """Bucket in [0, 10000): the first 32 bits of md5(text) modulo 10000, as the dbt macro computes it."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) % N_BUCKETS


def assign_variant(customer_id: str, experiment: Experiment | Mapping[str, Any] | None) -> str:
    """The variant a customer gets in an experiment: 'holdout', a variant name, or 'control' without one."""
    if not experiment:
        return "control"
    if isinstance(experiment, Mapping):
        experiment = Experiment(
            id=str(experiment["id"]),
            variants={
                name: spec["weight"] if isinstance(spec, Mapping) else spec
                for name, spec in experiment["variants"].items()
            },
            holdout_percent=experiment.get("holdout_percent", 0) or 0,
        )
    bucket = stable_bucket(f"{customer_id}:{experiment.id}")
    holdout = int(experiment.holdout_percent * 100)  # same truncation as Jinja's `| int`
    if bucket < holdout:
        return "holdout"
    total = sum(experiment.variants.values())
    cumulative = 0
    for name, weight in experiment.variants.items():
        cumulative += weight
        if (bucket - holdout) * total < cumulative * (N_BUCKETS - holdout):
            return name
    raise AssertionError("unreachable: the last variant always matches")  # pragma: no cover


# ---- loading and validation -------------------------------------------------------------------------------


def _fail(path: Path, campaign: str, key: str, problem: str) -> CampaignSettingsError:
    try:
        shown = path.relative_to(DBT_PROJECT_DIR.parent)
    except ValueError:
        shown = path
    return CampaignSettingsError(f"{shown}: campaign {campaign!r}, setting {key!r}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unknown(path: Path, campaign: str, prefix: str, got: Mapping, allowed: set[str]) -> None:
    for key in got:
        if key not in allowed:
            raise _fail(
                path, campaign, f"{prefix}{key}", f"unknown setting (allowed: {', '.join(sorted(allowed))})"
            )


def _minutes(path: Path, campaign: str, key: str, value: Any, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise _fail(path, campaign, key, f"expected a whole number of minutes ≥ {minimum}, got {value!r}")
    return value


def _template_exists(template: str, templates_dir: Path) -> bool:
    folder = templates_dir / DEFAULT_TEMPLATE_LANGUAGE
    return (folder / f"{template}.html").is_file() and (folder / f"{template}.txt").is_file()


def parse_campaign(
    name: str, raw: Any, path: Path, *, templates_dir: Path = TEMPLATES_DIR
) -> CampaignSettings:
    """Validate one campaign's ``config.meta.campaign`` mapping; raise CampaignSettingsError if wrong."""
    if not isinstance(raw, Mapping):
        raise _fail(path, name, "campaign", f"expected a mapping of settings, got {raw!r}")
    _unknown(path, name, "", raw, CAMPAIGN_KEYS)

    policy = raw.get("consent_policy")
    if policy not in CONSENT_POLICIES:
        raise _fail(
            path, name, "consent_policy", f"expected one of {', '.join(CONSENT_POLICIES)}, got {policy!r}"
        )

    priority = raw.get("priority")
    if priority is not None and (not _is_int(priority) or priority < 1):
        raise _fail(path, name, "priority", f"expected a whole number ≥ 1 (1 wins first), got {priority!r}")
    if priority is None and policy in MARKETING_POLICIES:
        raise _fail(path, name, "priority", "a marketing campaign needs a priority (1 wins first)")

    exit_on_order = raw.get("exit_on_order", False)
    if not isinstance(exit_on_order, bool):
        raise _fail(path, name, "exit_on_order", f"expected true or false, got {exit_on_order!r}")

    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, Mapping) or not steps_raw:
        raise _fail(path, name, "steps", f"expected a mapping of steps ('1': {{...}}), got {steps_raw!r}")
    steps: dict[str, StepSettings] = {}
    for step_name, step in steps_raw.items():
        prefix = f"steps.{step_name}."
        if not isinstance(step_name, str):
            raise _fail(path, name, f"steps.{step_name}", 'step names must be quoted strings, e.g. "1"')
        if not isinstance(step, Mapping):
            raise _fail(path, name, f"steps.{step_name}", f"expected a mapping, got {step!r}")
        _unknown(path, name, prefix, step, STEP_KEYS)
        for key in sorted(STEP_KEYS - set(step)):
            raise _fail(path, name, prefix + key, "missing")
        template = step["template"]
        if not isinstance(template, str) or not _template_exists(template, templates_dir):
            raise _fail(
                path,
                name,
                prefix + "template",
                f"unknown template {template!r} (expected mail_templates/{DEFAULT_TEMPLATE_LANGUAGE}/"
                f"{template}.html and .txt)",
            )
        steps[step_name] = StepSettings(
            delay_minutes=_minutes(path, name, prefix + "delay_minutes", step["delay_minutes"], minimum=0),
            expire_after_minutes=_minutes(
                path, name, prefix + "expire_after_minutes", step["expire_after_minutes"], minimum=1
            ),
            template=template,
        )

    experiment = None
    if raw.get("experiment") is not None:
        experiment = _parse_experiment(name, raw["experiment"], path, steps)

    counts: dict[str, int | None] = {}
    for key in ("inactive_after_days", "n_recommendations"):
        value = raw.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise _fail(path, name, key, f"expected a whole number ≥ 1, got {value!r}")
        counts[key] = value
    if name == "reactivation" and counts["inactive_after_days"] is None:
        raise _fail(
            path, name, "inactive_after_days", "missing (days without an order before a customer is inactive)"
        )

    reminded_by = raw.get("skip_if_reminded_by", [])
    if not isinstance(reminded_by, list) or not all(
        isinstance(c, str) and c and c != name for c in reminded_by
    ):
        raise _fail(
            path,
            name,
            "skip_if_reminded_by",
            f"expected a list of other campaigns' names, got {reminded_by!r}",
        )

    return CampaignSettings(
        name=name,
        file=path,
        consent_policy=policy,
        steps=steps,
        priority=priority,
        exit_on_order=exit_on_order,
        experiment=experiment,
        inactive_after_days=counts["inactive_after_days"],
        n_recommendations=counts["n_recommendations"],
        skip_if_reminded_by=tuple(reminded_by),
    )


def _parse_experiment(
    name: str, raw: Any, path: Path, steps: Mapping[str, StepSettings] | None = None
) -> Experiment:
    if not isinstance(raw, Mapping):
        raise _fail(path, name, "experiment", f"expected a mapping with id and variants, got {raw!r}")
    _unknown(path, name, "experiment.", raw, EXPERIMENT_KEYS)
    experiment_id = raw.get("id")
    if not isinstance(experiment_id, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", experiment_id):
        raise _fail(
            path, name, "experiment.id", f"expected a name of letters, digits, _ . -, got {experiment_id!r}"
        )
    varies = raw.get("varies")
    if isinstance(varies, str):
        varies = [varies]
    if (
        not isinstance(varies, list)
        or not varies
        or any(v not in VARIED_ASPECTS for v in varies)
        or len(set(varies)) != len(varies)
    ):
        raise _fail(
            path,
            name,
            "experiment.varies",
            f"say what the variants vary: one or more of {', '.join(VARIED_ASPECTS)}, got {varies!r}",
        )
    variants = raw.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        raise _fail(path, name, "experiment.variants", f"expected a mapping name: weight, got {variants!r}")
    weights: dict[str, int] = {}
    delays: dict[str, int] = {}
    for variant, spec in variants.items():
        key = f"experiment.variants.{variant}"
        if (
            not isinstance(variant, str)
            or not re.fullmatch(r"[A-Za-z0-9_]+", variant)
            or variant == "holdout"
        ):
            raise _fail(path, name, key, "variant names are letters, digits and _ ('holdout' is reserved)")
        if isinstance(spec, Mapping):
            _unknown(path, name, f"{key}.", spec, VARIANT_KEYS)
            weight, delay = spec.get("weight"), spec.get("extra_delay_minutes", 0)
        else:
            weight, delay = spec, 0
        if not _is_int(weight) or weight <= 0:
            raise _fail(path, name, key, f"expected a positive whole-number weight, got {weight!r}")
        if not _is_int(delay) or delay < 0:
            raise _fail(
                path, name, f"{key}.extra_delay_minutes", f"expected whole minutes ≥ 0, got {delay!r}"
            )
        if delay and variant == CONTROL:
            raise _fail(path, name, f"{key}.extra_delay_minutes", "the control keeps the campaign's timing")
        weights[variant] = weight
        if delay:
            delays[variant] = delay
    if CONTROL not in weights:
        raise _fail(path, name, "experiment.variants", f"needs a {CONTROL!r} variant to compare against")
    if ("send_delay" in varies) != bool(delays):
        raise _fail(
            path,
            name,
            "experiment.varies",
            "send_delay needs a variant with extra_delay_minutes, and extra_delay_minutes needs send_delay "
            "in varies",
        )
    for variant, delay in delays.items():
        # The delay moves the due time, not the expiry: it must leave time to send in every step.
        for step_name, step in (steps or {}).items():
            window = step.expire_after_minutes - step.delay_minutes
            if delay >= window:
                raise _fail(
                    path,
                    name,
                    f"experiment.variants.{variant}.extra_delay_minutes",
                    f"{delay} minutes would push step {step_name!r} close to or past its expiry (must be "
                    f"below expire_after_minutes - delay_minutes = {window})",
                )
    holdout = raw.get("holdout_percent", 0)
    if not _is_number(holdout) or not 0 <= holdout <= MAX_HOLDOUT_PERCENT:
        raise _fail(
            path,
            name,
            "experiment.holdout_percent",
            f"expected a number from 0 to {MAX_HOLDOUT_PERCENT}, got {holdout!r}",
        )
    return Experiment(
        id=experiment_id,
        variants=weights,
        holdout_percent=holdout,
        varies=tuple(varies),
        extra_delay_minutes=delays,
    )


def declared_campaign_models(macros_file: Path = CAMPAIGN_MACROS) -> list[str]:
    """The model names listed in the dbt macro ``campaign_models()``."""
    text = macros_file.read_text(encoding="utf-8")
    match = re.search(r"macro campaign_models\(\).*?return\(\[(.*?)\]\)", text, re.S)
    return re.findall(r"'([^']+)'", match.group(1)) if match else []


def load_campaigns(
    segments_dir: Path = SEGMENTS_DIR,
    *,
    templates_dir: Path = TEMPLATES_DIR,
    macros_file: Path | None = CAMPAIGN_MACROS,
) -> dict[str, CampaignSettings]:
    """Every campaign of the segment YAML files, validated; CampaignSettingsError on the first problem."""
    campaigns: dict[str, CampaignSettings] = {}
    experiments: dict[str, str] = {}
    for path in sorted(segments_dir.glob("*.yml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise CampaignSettingsError(f"{path}: not valid YAML: {exc}") from exc
        for model in document.get("models") or []:
            name = model.get("name")
            config = model.get("config") or {}
            if "campaign" in model or "campaign" in (model.get("meta") or {}):
                raise _fail(path, name, "campaign", "settings belong under config: meta: campaign:")
            raw = (config.get("meta") or {}).get("campaign")
            if raw is None:
                continue
            settings = parse_campaign(name, raw, path, templates_dir=templates_dir)
            if name in campaigns:
                raise _fail(path, name, "name", f"defined twice (also in {campaigns[name].file})")
            if settings.experiment:
                other = experiments.setdefault(settings.experiment.id, name)
                if other != name:
                    raise _fail(path, name, "experiment.id", f"already used by campaign {other!r}")
            campaigns[name] = settings
    for name, settings in campaigns.items():
        for other in settings.skip_if_reminded_by:
            if other not in campaigns:
                raise _fail(settings.file, name, "skip_if_reminded_by", f"unknown campaign {other!r}")
    if macros_file is not None:
        declared = declared_campaign_models(macros_file)
        for name, settings in campaigns.items():
            if name not in declared:
                raise _fail(
                    settings.file,
                    name,
                    "campaign",
                    f"not listed in campaign_models() in {macros_file.name}: mail_candidates would ignore it",
                )
        for name in declared:
            if name not in campaigns:
                raise CampaignSettingsError(
                    f"{macros_file.name}: campaign_models() lists {name!r}, no segment YAML has its settings"
                )
    return campaigns


def validate_campaigns(
    segments_dir: Path = SEGMENTS_DIR, *, check_experiments: bool = True, **kwargs: Any
) -> dict[str, CampaignSettings]:
    """Validate every campaign's settings (call when the Dagster definitions load); returns them.

    With ``check_experiments``, every experiment's variants are also rendered next to the control with
    sample data: a variant that changes nothing in a step, or something its ``varies`` does not declare,
    stops the project here (``MailRenderer.check_experiments``).
    """
    campaigns = load_campaigns(segments_dir, **kwargs)
    if not campaigns:
        raise CampaignSettingsError(f"{segments_dir}: no campaign settings found (config.meta.campaign)")
    if check_experiments and any(c.experiment for c in campaigns.values()):
        _check_experiment_rendering(campaigns, kwargs.get("templates_dir", TEMPLATES_DIR))
    return campaigns


def _check_experiment_rendering(campaigns: dict[str, CampaignSettings], templates_dir: Path) -> None:
    # Imported here: the mail package is heavier than the settings, and needs none of them.
    from nachfass.core.links import PREVIEW_SIGNING_KEY, LinkSigner
    from nachfass.core.mail.render import MailRenderer, RenderError
    from nachfass.core.shop import load_shop_settings

    signer = LinkSigner(PREVIEW_SIGNING_KEY)
    renderer = MailRenderer(load_shop_settings(), signer, templates_dir=templates_dir)
    try:
        renderer.check_experiments(campaigns)
    except RenderError as exc:
        settings = campaigns.get(exc.campaign or "")
        where = settings.file if settings else templates_dir
        raise CampaignSettingsError(f"{where}: {exc}") from exc
