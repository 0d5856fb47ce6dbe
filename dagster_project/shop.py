"""Shop-wide settings (sender, Impressum, base URLs) loaded from ``config/shop.yaml``.

Validated when loaded: a missing or misspelt key is an error naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dagster_project.paths import CONFIG_DIR


class SettingsError(ValueError):
    """A settings file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Address:
    email: str
    name: str


@dataclass(frozen=True)
class Impressum:
    company: str
    street: str
    postal_code: str
    city: str
    country: str
    managing_directors: str
    register: str
    vat_id: str


@dataclass(frozen=True)
class Contact:
    email: str
    phone: str
    hours: str


@dataclass(frozen=True)
class ShopSettings:
    shop_name: str
    timezone: str
    default_locale: str
    currency: str
    shop_base_url: str
    service_base_url: str
    sender: Address
    reply_to: Address
    unsubscribe_mailto: str
    contact: Contact
    impressum: Impressum
    utm_source: str
    link_ttl_days: int
    # ISO date: the first slot of the scheduled jobs' partitions (the day the shop went live with them)
    schedule_start: str = "2026-11-01"


def _take(data: dict[str, Any], cls: type, path: Path, prefix: str = "") -> Any:
    fields = cls.__dataclass_fields__
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SettingsError(
            f"{path}: unknown key {prefix}{unknown[0]!r} (allowed: {', '.join(sorted(fields))})"
        )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is not dataclasses.MISSING:
                continue
            raise SettingsError(f"{path}: missing key {prefix}{name!r}")
        value = data[name]
        nested = {"sender": Address, "reply_to": Address, "contact": Contact, "impressum": Impressum}
        if name in nested and cls is ShopSettings:
            if not isinstance(value, dict):
                raise SettingsError(f"{path}: key {prefix}{name!r} must be a mapping")
            value = _take(value, nested[name], path, prefix=f"{prefix}{name}.")
        elif field.type in ("int", int):
            if not isinstance(value, int):
                raise SettingsError(f"{path}: key {prefix}{name!r} must be an integer, got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{path}: key {prefix}{name!r} must be a non-empty string")
        values[name] = value
    return cls(**values)


def load_shop_settings(path: Path | None = None) -> ShopSettings:
    path = Path(path or os.environ.get("NACHFASS_SHOP_CONFIG", CONFIG_DIR / "shop.yaml"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    return _take(data, ShopSettings, path)
