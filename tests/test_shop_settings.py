"""config/shop.yaml: the keys the mails need (legal links, brand, service bar, carrier pages) are checked
when loaded, and a template that drops a legal link fails the preflight."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from nachfass.core.links import LinkSigner
from nachfass.core.mail.render import MailRenderer, RenderError
from nachfass.core.paths import CONFIG_DIR, TEMPLATES_DIR
from nachfass.core.shop import SettingsError, load_shop_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _settings(tmp_path: Path, change) -> Path:
    data = yaml.safe_load((CONFIG_DIR / "shop.yaml").read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_repository_settings_have_everything_the_mails_show() -> None:
    shop = load_shop_settings()
    assert shop.legal and shop.legal.privacy_url.startswith("https://") and shop.legal.imprint_url
    assert shop.brand.logo_url and shop.brand.logo_dark_url
    assert shop.service_bar["de"] and shop.service_bar["en"]
    assert "Uhr" not in shop.contact.hours_by_language["en"]
    assert all("{tracking_number}" in url for url in shop.carrier_tracking_urls.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("legal"), "missing key 'legal'"),
        (lambda d: d["legal"].pop("privacy_url"), "missing key legal.'privacy_url'"),
        (lambda d: d["brand"].update(logo_width="180px"), "'brand.logo_width' must be an integer"),
        (lambda d: d["brand"].update(logo="x.png"), "unknown key brand.'logo'"),
        (lambda d: d["service_bar"].update(de="Versandkostenfrei"), "'service_bar.de' must be a list"),
        (lambda d: d["carrier_tracking_urls"].update(DHL="https://dhl.de/?id="), "{tracking_number}"),
    ],
)
def test_wrong_settings_name_the_key(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_shop_settings(_settings(tmp_path, change))
    assert message in str(error.value) and "shop.yaml" in str(error.value)


def test_optional_sections_may_be_left_out(tmp_path: Path) -> None:
    def strip(data: dict) -> None:
        for key in ("brand", "service_bar", "shop_paths", "carrier_tracking_urls"):
            data.pop(key)
        data["contact"].pop("hours_by_language")

    shop = load_shop_settings(_settings(tmp_path, strip))
    assert shop.brand.logo_url is None and shop.service_bar == {} and shop.shop_paths.order_status
    mail = MailRenderer(shop, LinkSigner("k" * 20), now=NOW).check_templates()
    assert mail  # renders with the shop name as wordmark, no service bar


def test_preflight_fails_without_the_privacy_link(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    base = templates / "de" / "base.html"
    base.write_text(base.read_text(encoding="utf-8").replace('href="{{ privacy_url }}"', 'href="#"'))
    renderer = MailRenderer(load_shop_settings(), LinkSigner("k" * 20), templates_dir=templates, now=NOW)
    with pytest.raises(RenderError, match="privacy policy"):
        renderer.check_templates()
