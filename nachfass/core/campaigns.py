"""The campaign registry: every campaign exists in exactly one place, its segment's YAML.

A campaign is a dbt model in ``dbt/models/segments/`` whose YAML carries ``config.meta.campaign`` (the
settings below). Nothing else lists campaigns: this module finds them (folder + meta), validates them into
typed models (pydantic, unknown keys refused, errors naming file and key), and everything else derives
from it: the campaign list dbt's ``mail_candidates`` unions (passed as the dbt var ``campaigns``, see
``nachfass.core.dbt``), the Dagster jobs and schedules (``cadence``), rendering (``steps.*.template``,
``languages``), the sample data of previews and the preflight check, the docs table and the tests.
``campaign_json_schema()`` is the JSON Schema of the settings (``dbt/models/segments/campaign.schema.json``,
which editors use to check the YAML while a marketer types).

``assign_variant`` is the Python twin of the dbt macro ``assign_variant`` (``dbt/macros/campaigns.sql``):
md5("<customer_id>:<experiment_id>") → bucket in [0, 10000) → holdout first, then variants by cumulative
integer weight. Tests check that both give the same variant for random ids and weights.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from nachfass.core import paths

CONSENT_POLICIES = ("none", "required", "existing_customer")
MARKETING_POLICIES = ("required", "existing_customer")
# Template languages the project has copy for (mail_templates/<lang>/); the first of a campaign's
# `languages` is its fallback for customers whose language has no templates.
TEMPLATE_LANGUAGES = ("de", "en")
DEFAULT_TEMPLATE_LANGUAGE = "de"
# 0–50 %: a holdout above half the audience is almost certainly a typo (5 instead of 0.5 is fine, 500 not).
MAX_HOLDOUT_PERCENT = 50
N_BUCKETS = 10_000
# What an experiment may vary: the subject line (and preheader), the body (its own templates), or the
# send time (a variant-specific delay added to every step's due time).
VARIED_ASPECTS = ("subject", "body", "send_delay")
CONTROL = "control"
# Named cadences (shop timezone); any five-field cron works too.
CADENCES = {"every_15_minutes": "*/15 * * * *", "daily": "0 9 * * *"}
_CRON = re.compile(r"^\s*\S+(\s+\S+){4}\s*$")

Minutes = Annotated[StrictInt, Field(ge=0)]


class CampaignSettingsError(ValueError):
    """A campaign setting is missing, unknown or of the wrong type. The message names file and key."""


class _KeyedError(ValueError):
    """A validator's complaint about a key below the field it validates (e.g. one variant's weight)."""

    def __init__(self, loc: str | tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.message = message


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSettings(_Settings):
    """One mail of a campaign (a reminder step, a shipping event …)."""

    delay_minutes: Minutes = Field(
        description="due this long after the trigger (step 2: after step 1 was sent)"
    )
    expire_after_minutes: Annotated[StrictInt, Field(ge=1)] = Field(
        description="skipped as `expired` this long after due (cart reminders: the cart's maximum age)"
    )
    template: str = Field(
        pattern=r"^[a-z0-9_]+/[A-Za-z0-9_-]+$",
        description="mail_templates/<lang>/<template>.html and .txt, e.g. abandoned_cart/1",
    )


class VariantSettings(_Settings):
    weight: Annotated[StrictInt, Field(ge=1)] = Field(description="whole-number share of the split")
    extra_delay_minutes: Minutes = Field(
        default=0, description="send-time experiments: minutes added to every step's due time"
    )


class Experiment(_Settings):
    """An A/B test over every step of the campaign. ``variants`` are the weights by name."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="unique across campaigns")
    varies: tuple[Literal["subject", "body", "send_delay"], ...] = Field(
        min_length=1, description="what the variants change: subject, body and/or send_delay"
    )
    variants: dict[str, int] = Field(description="name: weight, or name: {weight, extra_delay_minutes}")
    holdout_percent: float = Field(default=0, ge=0, le=MAX_HOLDOUT_PERCENT)
    extra_delay_minutes: dict[str, int] = Field(default_factory=dict, json_schema_extra={"readOnly": True})

    @model_validator(mode="before")
    @classmethod
    def _split_variants(cls, data: Any) -> Any:
        """`b: 50` or `b: {weight: 50, extra_delay_minutes: 480}` → weights and delays."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if isinstance(data.get("varies"), str):
            data["varies"] = [data["varies"]]
        if "extra_delay_minutes" in data:
            raise _KeyedError(
                "extra_delay_minutes", "belongs to a variant: variants: {b: {weight, extra_delay_minutes}}"
            )
        variants = data.get("variants")
        if isinstance(variants, Mapping):
            weights, delays = {}, {}
            for name, spec in variants.items():
                if isinstance(spec, Mapping):
                    try:
                        parsed = VariantSettings.model_validate(spec)
                    except ValidationError as exc:
                        loc, message = _describe(exc.errors()[0])
                        raise _KeyedError(("variants", str(name), *loc), message) from None
                    weights[name], delays[name] = parsed.weight, parsed.extra_delay_minutes
                else:
                    weights[name] = spec
            data["variants"] = weights
            data["extra_delay_minutes"] = {n: d for n, d in delays.items() if d}
        return data

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: dict[str, int]) -> dict[str, int]:
        if not variants:
            raise ValueError("expected a mapping name: weight")
        for name, weight in variants.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)) or name == "holdout":
                raise _KeyedError(name, "variant names are letters, digits and _ ('holdout' is reserved)")
            if isinstance(weight, bool) or not isinstance(weight, int) or weight <= 0:
                raise _KeyedError(name, f"expected a positive whole-number weight, got {weight!r}")
        if CONTROL not in variants:
            raise ValueError(f"needs a {CONTROL!r} variant to compare against")
        return variants

    @field_validator("holdout_percent", mode="before")
    @classmethod
    def _holdout_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number from 0 to {MAX_HOLDOUT_PERCENT}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _send_delay_declared(self) -> Experiment:
        if self.extra_delay_minutes.get(CONTROL):
            raise _KeyedError(
                ("variants", CONTROL, "extra_delay_minutes"), "the control keeps the campaign's timing"
            )
        if ("send_delay" in self.varies) != bool(self.extra_delay_minutes):
            raise _KeyedError(
                "varies",
                "send_delay needs a variant with extra_delay_minutes, and extra_delay_minutes needs "
                "send_delay in varies",
            )
        return self


BACKLOG_MODES = ("skip", "all", "drip")
DRIP_ORDERS = ("oldest", "most_valuable")


class RolloutSettings(_Settings):
    """How a campaign (or a changed rule) goes live: from when it sends, and what happens to the backlog,
    the triggers that were already due before ``live_from``."""

    live_from: AwareDatetime = Field(
        description="when the campaign or rule goes live, with its UTC offset, e.g. "
        "'2026-12-01T09:00:00+01:00'; before it nothing is sent (reason not_live_yet)"
    )
    backlog: Literal["skip", "all", "drip"] = Field(
        default="all",
        description="triggers due before live_from: skip them (backlog_skipped), send all at once, or drip "
        "them out at drip_per_day (backlog_drip)",
    )
    drip_per_day: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="backlog: drip only: at most this many backlog mails in any 24 h"
    )
    drip_order: Literal["oldest", "most_valuable"] = Field(
        default="oldest",
        description="backlog: drip only: oldest due first, or the highest value first (the cart or order "
        "total, else the customer's revenue so far)",
    )

    @model_validator(mode="after")
    def _drip_settings(self) -> RolloutSettings:
        if self.backlog == "drip" and self.drip_per_day is None:
            raise _KeyedError("drip_per_day", "backlog: drip needs drip_per_day (mails per 24 h)")
        if self.backlog != "drip" and self.drip_per_day is not None:
            raise _KeyedError("drip_per_day", f"only with backlog: drip (backlog is {self.backlog!r})")
        return self


class CampaignSettings(_Settings):
    """One campaign's settings (``config.meta.campaign`` of its segment YAML), plus where they came from."""

    _name: str = PrivateAttr("")
    _file: Path = PrivateAttr(Path())

    consent_policy: Literal["none", "required", "existing_customer"] = Field(
        description="none (transactional), required (double opt-in), existing_customer (§ 7 Abs. 3 UWG)"
    )
    priority: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="marketing only: 1 wins first when mails compete for one address"
    )
    exit_on_order: StrictBool = Field(default=False, description="not sent once the customer ordered since")
    cadence: str = Field(
        description="when the campaign's mails go out: every_15_minutes, daily (09:00) or a cron "
        "(shop timezone), e.g. '0 18 * * 1-5'"
    )
    languages: tuple[Literal["de", "en"], ...] = Field(
        default=(DEFAULT_TEMPLATE_LANGUAGE,),
        min_length=1,
        description="template languages; customers in another language get the first one",
    )
    steps: dict[str, StepSettings] = Field(min_length=1, description='the mails, by step name ("1", "2" …)')
    experiment: Experiment | None = None
    inactive_after_days: Annotated[StrictInt, Field(ge=1)] | None = None
    n_recommendations: Annotated[StrictInt, Field(ge=1)] | None = None
    skip_if_reminded_by: tuple[str, ...] = Field(
        default=(), description="campaigns whose mail for the same trigger key ends this series"
    )
    rollout: RolloutSettings | None = Field(
        default=None, description="going live: from when, and what happens to triggers already due then"
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _quoted_step_names(cls, steps: Any) -> Any:
        if isinstance(steps, Mapping):
            for name in steps:
                if not isinstance(name, str):
                    raise _KeyedError(str(name), 'step names must be quoted strings, e.g. "1"')
        return steps

    @field_validator("cadence")
    @classmethod
    def _known_cadence(cls, cadence: str) -> str:
        if cadence not in CADENCES and not _CRON.match(cadence):
            raise ValueError(f"expected {', '.join(CADENCES)} or a five-field cron, got {cadence!r}")
        return cadence

    @model_validator(mode="after")
    def _rules(self) -> CampaignSettings:
        if self.priority is None and self.consent_policy in MARKETING_POLICIES:
            raise _KeyedError("priority", "a marketing campaign needs a priority (1 wins first)")
        for variant, delay in (self.experiment.extra_delay_minutes if self.experiment else {}).items():
            # The delay moves the due time, not the expiry: it must leave time to send in every step.
            for step_name, step in self.steps.items():
                window = step.expire_after_minutes - step.delay_minutes
                if delay >= window:
                    raise _KeyedError(
                        ("experiment", "variants", variant, "extra_delay_minutes"),
                        f"{delay} minutes would push step {step_name!r} close to or past its expiry (must "
                        f"be below expire_after_minutes - delay_minutes = {window})",
                    )
        return self

    @property
    def name(self) -> str:
        """The campaign's name: its segment model's name."""
        return self._name

    @property
    def file(self) -> Path:
        """The segment YAML the settings come from."""
        return self._file

    @property
    def is_marketing(self) -> bool:
        return self.consent_policy in MARKETING_POLICIES

    @property
    def cron(self) -> str:
        """The cadence as a cron (shop timezone)."""
        return CADENCES.get(self.cadence, self.cadence)

    @property
    def fallback_language(self) -> str:
        return self.languages[0]

    def template_language(self, lang: str) -> str:
        """The language of the templates a customer in ``lang`` gets."""
        return lang if lang in self.languages else self.fallback_language


# ---- errors in the house style: file, campaign, key, what was expected ------------------------------------

_MINUTE_KEYS = {"delay_minutes": 0, "expire_after_minutes": 1, "extra_delay_minutes": 0}


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    """The keys allowed at the mapping that holds ``loc`` (for "unknown setting" messages)."""
    parent = loc[:-1]
    if not parent:
        model: type[BaseModel] = CampaignSettings
    elif parent[0] == "steps":
        model = StepSettings
    elif parent[:2] == ("experiment", "variants"):
        model = VariantSettings
    elif parent[0] == "experiment":
        model = Experiment
    elif parent[0] == "rollout":
        model = RolloutSettings
    else:
        return []
    # Experiment.extra_delay_minutes is filled from the variants, never written at the experiment itself
    derived = {"extra_delay_minutes"} if model is Experiment else set()
    return sorted(k for k in model.model_fields if k not in derived)


def _describe(error: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """(key path, message) of one pydantic error, worded for a marketer."""
    loc = tuple(str(part) for part in error["loc"])
    kind, value = error["type"], error.get("input")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyedError):
        return loc + cause.loc, cause.message
    last = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        if last == "extra_delay_minutes" and loc[:1] == ("experiment",) and len(loc) == 2:
            return loc, "belongs to a variant: variants: {b: {weight, extra_delay_minutes}}"
        return loc, f"unknown setting (allowed: {', '.join(allowed)})"
    if "varies" in loc:
        return loc[: loc.index("varies") + 1], (
            f"say what the variants vary: one or more of {', '.join(VARIED_ASPECTS)}, got {value!r}"
        )
    if last == "live_from":
        return loc, f"expected a time with its UTC offset, e.g. '2026-12-01T09:00:00+01:00', got {value!r}"
    if last == "holdout_percent":
        return loc, f"expected a number from 0 to {MAX_HOLDOUT_PERCENT}, got {value!r}"
    if kind == "missing":
        return loc, "missing"
    if last in _MINUTE_KEYS:
        return loc, f"expected a whole number of minutes ≥ {_MINUTE_KEYS[last]}, got {value!r}"
    if kind.startswith(("int_", "greater_than")):
        hint = " (1 wins first)" if last == "priority" else ""
        return loc, f"expected a whole number ≥ 1{hint}, got {value!r}"
    if kind.startswith("bool"):
        return loc, f"expected true or false, got {value!r}"
    if last == "consent_policy":
        return loc, f"expected one of {', '.join(CONSENT_POLICIES)}, got {value!r}"
    if last == "template":
        return loc, f"expected <campaign folder>/<template name>, e.g. abandoned_cart/1, got {value!r}"
    if last == "languages" or (len(loc) > 1 and loc[-2] == "languages"):
        return loc[: loc.index("languages") + 1], (
            f"expected a list of {', '.join(TEMPLATE_LANGUAGES)} (first = fallback), got {value!r}"
        )
    message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    return loc, message


def _fail(path: Path, campaign: str, key: str, problem: str) -> CampaignSettingsError:
    try:
        shown = path.relative_to(paths.dbt_project_dir().parent)
    except ValueError:
        shown = path
    return CampaignSettingsError(f"{shown}: campaign {campaign!r}, setting {key!r}: {problem}")


# ---- A/B assignment (mirror of the dbt macros stable_bucket / assign_variant) ----------------------------


def stable_bucket(text: str) -> int:
    """Bucket in [0, 10000): the first 32 bits of md5(text) modulo 10000, as the dbt macro computes it."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) % N_BUCKETS


def assign_variant(customer_id: str, experiment: Experiment | Mapping[str, Any] | None) -> str:
    """The variant a customer gets in an experiment: 'holdout', a variant name, or 'control' without one."""
    if not experiment:
        return CONTROL
    if isinstance(experiment, Mapping):  # the raw YAML form: only what the split needs
        experiment = Experiment.model_construct(
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


# ---- loading --------------------------------------------------------------------------------------------


def segments_dir() -> Path:
    """Where the campaigns live: the dbt project's models/segments/ folder."""
    return paths.dbt_project_dir() / "models" / "segments"


def parse_campaign(
    name: str, raw: Any, path: Path, *, templates_dir: Path | None = None, check_templates: bool = True
) -> CampaignSettings:
    """Validate one campaign's ``config.meta.campaign`` mapping; raise CampaignSettingsError if wrong."""
    if not isinstance(raw, Mapping):
        raise _fail(path, name, "campaign", f"expected a mapping of settings, got {raw!r}")
    try:
        settings = CampaignSettings.model_validate(raw)
    except ValidationError as exc:
        loc, message = _describe(exc.errors()[0])
        raise _fail(path, name, ".".join(loc) or "campaign", message) from None
    settings._name, settings._file = name, path
    if name == "reactivation" and settings.inactive_after_days is None:
        raise _fail(
            path, name, "inactive_after_days", "missing (days without an order before a customer is inactive)"
        )
    folder = Path(templates_dir) if templates_dir is not None else paths.templates_dir()
    for step_name, step in settings.steps.items() if check_templates else ():
        for lang in settings.languages:
            missing = [
                ext for ext in ("html", "txt") if not (folder / lang / f"{step.template}.{ext}").is_file()
            ]
            if missing:
                raise _fail(
                    path,
                    name,
                    f"steps.{step_name}.template",
                    f"unknown template {step.template!r} (expected mail_templates/{lang}/"
                    f"{step.template}.html and .txt for the language {lang!r})",
                )
    return settings


def load_campaigns(
    segments: Path | None = None, *, templates_dir: Path | None = None, check_templates: bool = True
) -> dict[str, CampaignSettings]:
    """Every campaign of the segment YAML files, validated; CampaignSettingsError on the first problem.

    A campaign is a model in the segments folder whose YAML has ``config.meta.campaign``; the order is by
    priority (marketing first, 1 wins), then by name, so lists derived from it are stable."""
    folder = Path(segments) if segments is not None else segments_dir()
    campaigns: dict[str, CampaignSettings] = {}
    experiments: dict[str, str] = {}
    for path in sorted(folder.glob("*.yml")):
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
            if not (folder / f"{name}.sql").is_file():
                raise _fail(path, name, "name", f"no segment model {name}.sql beside its YAML")
            settings = parse_campaign(
                name, raw, path, templates_dir=templates_dir, check_templates=check_templates
            )
            if name in campaigns:
                raise _fail(path, name, "name", f"defined twice (also in {campaigns[name].file})")
            if settings.experiment:
                other = experiments.setdefault(settings.experiment.id, name)
                if other != name:
                    raise _fail(path, name, "experiment.id", f"already used by campaign {other!r}")
            campaigns[name] = settings
    for name, settings in campaigns.items():
        for other in settings.skip_if_reminded_by:
            if other not in campaigns or other == name:
                raise _fail(settings.file, name, "skip_if_reminded_by", f"unknown campaign {other!r}")
    return dict(sorted(campaigns.items(), key=lambda item: (item[1].priority or 99, item[0])))


def validate_campaigns(
    segments: Path | None = None, *, check_experiments: bool = True, templates_dir: Path | None = None
) -> dict[str, CampaignSettings]:
    """Validate every campaign's settings (call when the Dagster definitions load); returns them.

    With ``check_experiments``, every experiment's variants are also rendered next to the control with
    sample data: a variant that changes nothing in a step, or something its ``varies`` does not declare,
    stops the project here (``MailRenderer.check_experiments``).
    """
    campaigns = load_campaigns(segments, templates_dir=templates_dir)
    if not campaigns:
        raise CampaignSettingsError(
            f"{segments or segments_dir()}: no campaign settings found (config.meta.campaign)"
        )
    if check_experiments and any(c.experiment for c in campaigns.values()):
        _check_experiment_rendering(
            campaigns, Path(templates_dir) if templates_dir else paths.templates_dir()
        )
    return campaigns


def _check_experiment_rendering(campaigns: dict[str, CampaignSettings], templates_dir: Path) -> None:
    # Imported here: rendering needs the registry, not the other way round.
    from nachfass.core.links import PREVIEW_SIGNING_KEY, LinkSigner
    from nachfass.core.mail.render import MailRenderer, RenderError
    from nachfass.core.shop import load_shop_settings

    renderer = MailRenderer(
        load_shop_settings(),
        LinkSigner(PREVIEW_SIGNING_KEY),
        templates_dir=templates_dir,
        campaigns=campaigns,
    )
    try:
        renderer.check_experiments(campaigns)
    except RenderError as exc:
        settings = campaigns.get(exc.campaign or "")
        where = settings.file if settings else templates_dir
        raise CampaignSettingsError(f"{where}: {exc}") from exc


def campaigns_by_cron(campaigns: Mapping[str, CampaignSettings]) -> dict[str, list[str]]:
    """Campaign names grouped by their cadence's cron, in registry order."""
    groups: dict[str, list[str]] = {}
    for name, settings in campaigns.items():
        groups.setdefault(settings.cron, []).append(name)
    return groups


# ---- JSON Schema for editors ------------------------------------------------------------------------------


def campaign_json_schema() -> dict[str, Any]:
    """The JSON Schema of a segment YAML file's campaign settings (dbt/models/segments/campaign.schema.json).

    A segment YAML starts with ``# yaml-language-server: $schema=campaign.schema.json``: editors with the
    YAML language server then check ``config.meta.campaign`` while a marketer types."""
    settings = CampaignSettings.model_json_schema(ref_template="#/$defs/{model}")
    defs = settings.pop("$defs", {})
    experiment = defs["Experiment"]["properties"]
    experiment.pop("extra_delay_minutes", None)
    experiment["variants"] = {
        "type": "object",
        "description": experiment["variants"].get("description", ""),
        "additionalProperties": {
            "anyOf": [{"type": "integer", "minimum": 1}, {"$ref": "#/$defs/VariantSettings"}]
        },
    }
    defs["CampaignSettings"] = settings
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Nachfass segment model YAML (dbt properties file with the campaign settings)",
        "type": "object",
        "properties": {
            "version": {"type": "integer"},
            "models": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "config": {
                            "type": "object",
                            "properties": {
                                "meta": {
                                    "type": "object",
                                    "properties": {"campaign": {"$ref": "#/$defs/CampaignSettings"}},
                                }
                            },
                        }
                    },
                },
            },
        },
        "$defs": defs,
    }


if __name__ == "__main__":  # python -m nachfass.core.campaigns schema  (regenerates the editors' schema)
    import json
    import sys

    if sys.argv[1:] != ["schema"]:
        raise SystemExit(
            "usage: python -m nachfass.core.campaigns schema > dbt/models/segments/campaign.schema.json"
        )
    print(json.dumps(campaign_json_schema(), indent=2, ensure_ascii=False))
