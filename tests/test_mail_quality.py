"""What a mailbox provider and a reader see: spam score, one-click unsubscribe in the .eml, contrast.

* SpamAssassin (Debian package, local rules only) scores one rendered .eml per campaign/step/variant and
  language: no rule with a score that counts.
* Every marketing .eml written by the outbox passes an RFC 8058 one-click check made with the standard
  library's parser, and its List-Unsubscribe header says exactly what the SendGrid payload says.
* Text and button colours in styles.css (light and dark) reach WCAG AA contrast (4.5:1).
"""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from rfc8058 import one_click_uri

from nachfass.core.links import LinkSigner
from nachfass.core.mail.message import MailJob
from nachfass.core.mail.render import MailRenderer, sample_jobs
from nachfass.core.mail.transport import OutboxTransport
from nachfass.core.paths import TEMPLATES_DIR
from nachfass.core.shop import ShopSettings, load_shop_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEY = "test-signing-key-0123456789abcdef"
SPAMASSASSIN = shutil.which("spamassassin")
# SpamAssassin's informational rules score 0.001 (HTML_MESSAGE: "the mail has an HTML part", image-ratio
# notes) and its testing rules (T_…) 0.01; its own report shows both as 0.0 points. Anything above counts.
INFORMATIONAL_SCORE = 0.01


@pytest.fixture(scope="module")
def shop() -> ShopSettings:
    return load_shop_settings()


@pytest.fixture(scope="module")
def signer() -> LinkSigner:
    return LinkSigner(KEY)


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory, shop: ShopSettings, signer: LinkSigner) -> dict:
    """Every sample mail (campaign/step/variant × de-DE, en-GB) through the real outbox transport:
    name → (job, .eml bytes, payload)."""
    renderer = MailRenderer(shop, signer, now=NOW)
    written: dict[str, tuple[MailJob, bytes, dict]] = {}
    for job in sample_jobs():
        folder = tmp_path_factory.mktemp("outbox")
        mail = renderer.render(job)
        assert OutboxTransport(folder, shop=shop).send(mail).status == "sent"
        name = f"{job.campaign}/{job.step}/{job.variant}/{job.locale}"
        payload = json.loads((folder / f"{mail.send_id}.json").read_text(encoding="utf-8"))
        written[name] = (job, (folder / f"{mail.send_id}.eml").read_bytes(), payload)
    return written


# ---- SpamAssassin --------


def _scores(header: str) -> dict[str, float]:
    """'HTML_MESSAGE=0.001,NO_RELAYS=-0.001' → {rule: score}."""
    pairs = (item.split("=") for item in re.sub(r"\s+", "", header).split(",") if "=" in item)
    return {rule: float(score) for rule, score in pairs}


@pytest.mark.skipif(SPAMASSASSIN is None, reason="spamassassin not installed (apt-get install spamassassin)")
def test_no_spamassassin_rule_scores_on_any_template(outbox: dict, tmp_path: Path) -> None:
    box_path = tmp_path / "all.mbox"
    box = mailbox.mbox(box_path)
    names = sorted(outbox)
    for name in names:
        message = mailbox.mboxMessage(outbox[name][1])
        message["X-Test-Name"] = name
        box.add(message)
    box.close()
    result = subprocess.run(
        [SPAMASSASSIN, "-L", "-t", "--mbox", "--cf=add_header all TestScores _TESTSSCORES(,)_"],
        stdin=box_path.open("rb"),
        capture_output=True,
        timeout=600,
        check=True,
    )
    (tmp_path / "scored.mbox").write_bytes(result.stdout)
    scored = {str(m["X-Test-Name"]): m for m in mailbox.mbox(tmp_path / "scored.mbox")}
    assert sorted(scored) == names
    counted = {}
    for name, message in scored.items():
        scores = _scores(str(message["X-Spam-TestScores"]))
        assert scores, name  # the header is there, so SpamAssassin did score the mail
        counted[name] = {rule: score for rule, score in scores.items() if score > INFORMATIONAL_SCORE}
        status = str(message["X-Spam-Status"])
        assert re.search(r"score=-?0\.0\b", status), (name, status)
    assert {name: rules for name, rules in counted.items() if rules} == {}


# ---- RFC 8058 one-click unsubscribe in the .eml --------


def test_every_marketing_eml_offers_rfc8058_one_click(outbox: dict, shop: ShopSettings, signer) -> None:
    marketing = {name: value for name, value in outbox.items() if value[0].is_marketing}
    assert len(marketing) >= 16
    for name, (job, raw, payload) in marketing.items():
        uri = one_click_uri(raw)
        # the header means exactly what the SendGrid payload means
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        unfolded = re.sub(r"\r?\n[ \t]+", " ", str(message["List-Unsubscribe"]))
        assert unfolded == payload["headers"]["List-Unsubscribe"], name
        assert uri.startswith(shop.service_base_url.rstrip("/") + "/u/"), name
        data = signer.verify(uri.rsplit("/", 1)[1], "unsubscribe", NOW)
        assert data["email"] == job.email and data["send_id"] == payload["custom_args"]["send_id"], name
        mailto = re.findall(r"<mailto:([^>]+)>", unfolded)
        assert mailto and unquote(parse_qs(urlsplit("x:?" + mailto[0].split("?", 1)[1]).query)["subject"][0])


def test_transactional_eml_has_no_unsubscribe_headers(outbox: dict) -> None:
    for name, (job, raw, _) in outbox.items():
        if not job.is_marketing:
            message = email.message_from_bytes(raw, policy=email.policy.compat32)
            assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None, name


def test_one_click_check_rejects_the_encoded_word_form() -> None:
    """The check is not a tautology: the header as Python's SMTP policy used to fold it fails."""
    from email.message import EmailMessage
    from email.policy import SMTP

    message = EmailMessage(policy=SMTP)
    message["List-Unsubscribe"] = f"<https://mail.example.org/u/{'A' * 200}>, <mailto:u@example.org>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content("x")
    with pytest.raises(AssertionError, match="encoded word"):
        one_click_uri(message.as_bytes())


# ---- colour contrast --------


def _css_rules(css: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(light rules, dark rules): selector → declarations, from styles.css (the subset of CSS it uses)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    dark_match = re.search(r"@media\s*\(prefers-color-scheme:\s*dark\)\s*\{(.*)\}\s*$", css, flags=re.S)
    assert dark_match, "styles.css has no dark-mode block"
    dark_css = dark_match.group(1)
    light_css = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", css)

    def parse(text: str) -> dict[str, dict[str, str]]:
        rules: dict[str, dict[str, str]] = {}
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
            declarations = {
                name.strip(): value.replace("!important", "").strip()
                for name, _, value in (d.partition(":") for d in body.split(";") if ":" in d)
            }
            for selector in selectors.split(","):
                rules.setdefault(selector.strip(), {}).update(declarations)
        return rules

    return parse(light_css), parse(dark_css)


def _luminance(colour: str) -> float:
    colour = colour.lstrip("#")
    if len(colour) == 3:
        colour = "".join(c * 2 for c in colour)
    channels = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_contrast_formula() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


# (text selector, background selector): text on its background, as the layout nests them
PAIRS = [
    (".btn-link", ".btn-cell"),
    (".content", ".container"),
    ("p", ".container"),
    (".small", ".container"),
    (".muted", ".container"),
    (".price-note", ".container"),
    (".base-price", ".container"),
    (".card-reason", ".container"),
    ("a", ".container"),
    (".service-bar", ".service-bar"),
    (".wordmark", ".header"),
    (".contact", ".container"),
    (".fine", ".footer"),
    ("a.fine-link", ".footer"),
]


def _colour(rules: dict[str, dict[str, str]], selector: str, prop: str, fallback: dict) -> str:
    for source in (rules, fallback):
        value = source.get(selector, {}).get(prop) or source.get(selector, {}).get(
            "background" if prop == "background-color" else prop
        )
        if value:
            return value
    raise AssertionError(f"{selector} has no {prop}")


@pytest.mark.parametrize("mode", ["light", "dark"])
def test_text_and_button_contrast_at_least_4_5(mode: str) -> None:
    light, dark = _css_rules((TEMPLATES_DIR / "styles.css").read_text(encoding="utf-8"))
    rules, fallback = (light, {}) if mode == "light" else (dark, light)
    failing = {}
    for text, background in PAIRS:
        ratio = contrast(
            _colour(rules, text, "color", fallback), _colour(rules, background, "background-color", fallback)
        )
        if ratio < 4.5:
            failing[(text, background)] = round(ratio, 2)
    assert failing == {}


def test_outlook_button_has_the_css_button_colour() -> None:
    light, dark = _css_rules((TEMPLATES_DIR / "styles.css").read_text(encoding="utf-8"))
    components = (TEMPLATES_DIR / "components.html").read_text(encoding="utf-8")
    colour = light[".btn-cell"]["background-color"].lower()
    assert f'fillcolor="{colour}"' in components  # the VML button (Outlook for Windows)
    assert f'bgcolor="{colour}"' in components  # the table cell (clients that drop CSS)
    assert dark[".btn-cell"]["background-color"].lower() == colour
    assert contrast(light[".btn-link"]["color"], colour) >= 4.5
