"""Shop-wide settings (sender, Impressum, base URLs, brand, legal links) loaded from ``config/shop.yaml``.

Validated when loaded: a missing or misspelt key is an error naming the file and the key. Keys with a
default in the dataclasses below may be left out (older settings files keep loading); ``legal`` may not,
because every mail links the privacy policy and the Impressum (docs/templates.md).
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nachfass.core.paths import CONFIG_DIR


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
    hours: str  # in the shop's default language; the unsubscribe pages show it too
    # The hours in other template languages ("en": "Mon–Fri 9 am–5 pm"); missing ones fall back to `hours`.
    hours_by_language: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Legal:
    """Pages every mail links in its footer, and the shipping-costs page the price note links to."""

    privacy_url: str
    imprint_url: str
    shipping_costs_url: str | None = None


@dataclass(frozen=True)
class Brand:
    """The logo in the mail header. ``logo_dark_url`` is the variant for dark backgrounds, shown by mail
    clients in dark mode; without a logo the header shows the shop name as text."""

    logo_url: str | None = None
    logo_dark_url: str | None = None
    logo_width: int = 180
    logo_height: int = 40


@dataclass(frozen=True)
class ShopPaths:
    """Shop pages the signed links open (the shop verifies the token, docs/templates.md)."""

    order_status: str = "/bestellstatus"
    returns: str = "/ruecksendung"
    review: str = "/bewertung"


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
    legal: Legal | None = None
    brand: Brand = field(default_factory=Brand)
    shop_paths: ShopPaths = field(default_factory=ShopPaths)
    # Short facts under the header, per template language, e.g. {"de": ["Versandkostenfrei ab 50 €"]}.
    service_bar: dict[str, list[str]] = field(default_factory=dict)
    # Carrier name → tracking page with "{tracking_number}", used when a shipment has a number but no URL.
    carrier_tracking_urls: dict[str, str] = field(default_factory=dict)


# Sections that must be present in the file even though the dataclass allows None (for tests that build
# settings in code and never render a mail).
_REQUIRED_IN_FILE = {"legal"}
_NESTED: tuple[type, ...] = (Address, Impressum, Contact, Legal, Brand, ShopPaths)


def _check_value(value: Any, annotation: Any, path: Path, key: str) -> Any:
    """Validate ``value`` against a field annotation (the few shapes the settings use)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _check_value(value, options[0], path, key)
    if annotation in _NESTED:
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: key {key!r} must be a mapping")
        return _take(value, annotation, path, prefix=f"{key}.")
    if annotation is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingsError(f"{path}: key {key!r} must be an integer, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{path}: key {key!r} must be a non-empty string")
        return value
    if origin is dict:
        _, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: key {key!r} must be a mapping")
        return {str(k): _check_value(v, value_type, path, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise SettingsError(f"{path}: key {key!r} must be a list")
        return [_check_value(v, item_type, path, f"{key}[{i}]") for i, v in enumerate(value)]
    raise SettingsError(f"{path}: key {key!r} has an unsupported type")  # pragma: no cover


def _take(data: dict[str, Any], cls: type, path: Path, prefix: str = "") -> Any:
    fields = cls.__dataclass_fields__
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SettingsError(
            f"{path}: unknown key {prefix}{unknown[0]!r} (allowed: {', '.join(sorted(fields))})"
        )
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        has_default = spec.default is not MISSING or spec.default_factory is not MISSING
        if name not in data:
            if has_default and not (cls is ShopSettings and name in _REQUIRED_IN_FILE):
                continue
            raise SettingsError(f"{path}: missing key {prefix}{name!r}")
        values[name] = _check_value(data[name], hints[name], path, f"{prefix}{name}")
    return cls(**values)


def load_shop_settings(path: Path | None = None) -> ShopSettings:
    path = Path(path or os.environ.get("NACHFASS_SHOP_CONFIG", CONFIG_DIR / "shop.yaml"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    settings: ShopSettings = _take(data, ShopSettings, path)
    for key, template in settings.carrier_tracking_urls.items():
        if "{tracking_number}" not in template:
            raise SettingsError(f"{path}: key 'carrier_tracking_urls.{key}' must contain {{tracking_number}}")
    return settings
