"""Word lists and small pure helpers for the sample shop "Gartenglück".

The lists are tiny; the bulk generator indexes into them from SQL with hash-based positions, so everything
here must stay deterministic (plain tuples, no sets).
"""

from __future__ import annotations

import re
import unicodedata

SHOP_BASE_URL = "https://www.gartenglueck.example"

# Only reserved domains (RFC 2606 / RFC 6761): generated addresses can never reach a real person.
EMAIL_DOMAINS: tuple[str, ...] = ("example.de", "example.com", "example.org", "example.net")

MALE_FIRST_NAMES: tuple[str, ...] = (
    "Jürgen",
    "Thomas",
    "Michael",
    "Andreas",
    "Stefan",
    "Frank",
    "Klaus",
    "Uwe",
    "Jörg",
    "Günter",
    "Matthias",
    "Sebastian",
    "Lukas",
    "Jonas",
    "Leon",
    "Felix",
    "Maximilian",
    "Paul",
    "Tobias",
    "Björn",
    "Sören",
    "Ömer",
    "Dieter",
    "Wolfgang",
    "Hans-Peter",
    "Karl-Heinz",
    "René",
    "André",
    "Niklas",
    "Moritz",
)
FEMALE_FIRST_NAMES: tuple[str, ...] = (
    "Sabine",
    "Petra",
    "Monika",
    "Ursula",
    "Claudia",
    "Andrea",
    "Birgit",
    "Dörte",
    "Käthe",
    "Anja",
    "Julia",
    "Laura",
    "Lea",
    "Hannah",
    "Sophie",
    "Marie",
    "Anna",
    "Katharina",
    "Jana",
    "Bärbel",
    "Jutta",
    "Renée",
    "Zoë",
    "Annegret",
    "Elisabeth",
    "Gisela",
    "Mia",
    "Emilia",
    "Lena",
    "Charlotte",
)

LAST_NAMES: tuple[str, ...] = (
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Schäfer",
    "Koch",
    "Bauer",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Schmitz",
    "Krause",
    "Meier",
    "Lehmann",
    "Schmid",
    "Schulze",
    "Maier",
    "Köhler",
    "Herrmann",
    "König",
    "Weiß",
    "Walter",
    "Mayer",
    "Huber",
    "Kaiser",
    "Fuchs",
    "Peters",
    "Lang",
    "Scholz",
    "Möller",
    "Haas",
    "Jäger",
    "Groß",
    "Günther",
    "Vogel",
    "Friedrich",
    "Keller",
    "Große-Brömer",
    "von Bülow",
    "Öztürk",
    "Nowak",
    "Roth",
    "Beck",
)

# (category, product noun, base price in cents). Prices are typical for a German garden/home shop.
CATALOGUE: tuple[tuple[str, str, int], ...] = (
    ("Gartenwerkzeug", "Spaten", 3490),
    ("Gartenwerkzeug", "Rosenschere", 2490),
    ("Gartenwerkzeug", "Heckenschere", 3990),
    ("Gartenwerkzeug", "Grabegabel", 3290),
    ("Gartenwerkzeug", "Laubrechen", 1990),
    ("Gartenwerkzeug", "Handschaufel", 990),
    ("Gartenwerkzeug", "Astschere", 4490),
    ("Gartenwerkzeug", "Unkrautstecher", 1290),
    ("Bewässerung", "Gartenschlauch", 2990),
    ("Bewässerung", "Schlauchwagen", 5990),
    ("Bewässerung", "Gießkanne", 1490),
    ("Bewässerung", "Regentonne", 7990),
    ("Bewässerung", "Tropfbewässerungs-Set", 4990),
    ("Bewässerung", "Rasensprenger", 2490),
    ("Pflanzen & Samen", "Tomatensamen", 349),
    ("Pflanzen & Samen", "Lavendel", 699),
    ("Pflanzen & Samen", "Hortensie", 1990),
    ("Pflanzen & Samen", "Säulenapfel", 4990),
    ("Pflanzen & Samen", "Blumenzwiebel-Mix", 1290),
    ("Pflanzen & Samen", "Kräutertopf", 899),
    ("Erde & Dünger", "Bio-Blumenerde 40 L", 999),
    ("Erde & Dünger", "Rasendünger", 2490),
    ("Erde & Dünger", "Hornspäne", 799),
    ("Erde & Dünger", "Kompostbeschleuniger", 1190),
    ("Gartenmöbel", "Gartenbank", 18900),
    ("Gartenmöbel", "Liegestuhl", 8990),
    ("Gartenmöbel", "Sonnenschirm", 12900),
    ("Gartenmöbel", "Bistroset", 24900),
    ("Gartenmöbel", "Sitzauflage", 3990),
    ("Grill & Outdoor-Küche", "Holzkohlegrill", 11900),
    ("Grill & Outdoor-Küche", "Gasgrill", 44900),
    ("Grill & Outdoor-Küche", "Grillbesteck-Set", 2990),
    ("Grill & Outdoor-Küche", "Feuerschale", 7990),
    ("Pflanzgefäße", "Pflanzkübel", 3490),
    ("Pflanzgefäße", "Hochbeet", 15900),
    ("Pflanzgefäße", "Balkonkasten", 1990),
    ("Pflanzgefäße", "Blumenampel", 1490),
    ("Licht & Deko", "Solarleuchte", 1990),
    ("Licht & Deko", "Lichterkette", 2490),
    ("Licht & Deko", "Vogelhaus", 2990),
    ("Licht & Deko", "Insektenhotel", 3490),
    ("Wohnen", "Duftkerze", 1290),
    ("Wohnen", "Leinenkissen", 2990),
    ("Wohnen", "Wolldecke", 4990),
)

# Shopping themes: nouns that customers buy together (a raised bed with soil and herbs, a grill with
# tools). Every customer has a main and a second theme; most lines of an order come from the order's
# theme, the rest from overall popularity. That gives the sample data the co-purchase and category
# structure real shops have, so recommendations can be measured on it (bench/bench_recommendations.py).
THEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Hochbeet & Kräuter", ("Hochbeet", "Bio-Blumenerde 40 L", "Kräutertopf", "Tomatensamen", "Hornspäne",
                            "Handschaufel")),
    ("Bewässerung", ("Gartenschlauch", "Schlauchwagen", "Rasensprenger", "Tropfbewässerungs-Set",
                     "Gießkanne", "Regentonne")),
    ("Grillabend", ("Holzkohlegrill", "Gasgrill", "Grillbesteck-Set", "Feuerschale", "Lichterkette",
                    "Solarleuchte")),
    ("Balkon", ("Balkonkasten", "Blumenampel", "Lavendel", "Bio-Blumenerde 40 L", "Pflanzkübel",
                "Gießkanne")),
    ("Terrasse", ("Gartenbank", "Sitzauflage", "Sonnenschirm", "Bistroset", "Liegestuhl", "Leinenkissen")),
    ("Rasenpflege", ("Rasendünger", "Rasensprenger", "Laubrechen", "Spaten", "Kompostbeschleuniger")),
    ("Obst & Gehölze", ("Säulenapfel", "Pflanzkübel", "Astschere", "Rosenschere", "Hornspäne", "Hortensie")),
    ("Naturgarten", ("Vogelhaus", "Insektenhotel", "Blumenzwiebel-Mix", "Lavendel", "Solarleuchte")),
    ("Heckenschnitt & Beet", ("Heckenschere", "Grabegabel", "Unkrautstecher", "Laubrechen",
                              "Kompostbeschleuniger", "Spaten")),
    ("Gemütliches Zuhause", ("Duftkerze", "Leinenkissen", "Wolldecke", "Lichterkette", "Sitzauflage")),
)  # fmt: skip

# Net content of goods sold by weight or volume (PAngV: such products need a unit price, "Grundpreis").
# noun -> (amount, unit as in the export contract's content_unit).
CONTENTS: dict[str, tuple[str, str]] = {
    "Bio-Blumenerde 40 L": ("40", "l"),
    "Rasendünger": ("5", "kg"),
    "Hornspäne": ("2.5", "kg"),
    "Kompostbeschleuniger": ("1.5", "kg"),
    "Blumenzwiebel-Mix": ("500", "g"),
}

# (product line, price factor in percent). Some names carry ASCII double quotes and commas on purpose so
# that the CSV files exercise RFC 4180 quoting.
PRODUCT_LINES: tuple[tuple[str, int], ...] = (
    ("Classic", 100),
    ("Premium", 150),
    ("Eco", 110),
    ("Profi", 140),
    ("Kompakt", 85),
    ("XL", 130),
    ('"Sommerwind"', 120),
    ("„Nordsee“", 115),
    ("Basic", 75),
    ('"Terra", frostfest', 125),
)
PRODUCT_COLOURS: tuple[str, ...] = ("anthrazit", "salbeigrün", "terrakotta", "natur", "weiß", "schwarz")

CARRIERS: tuple[str, ...] = ("DHL", "DPD", "Hermes", "GLS")
# The carriers' public tracking pages (as in config/shop.yaml carrier_tracking_urls).
CARRIER_TRACKING_URLS: dict[str, str] = {
    "DHL": "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode={tracking_number}",
    "DPD": "https://tracking.dpd.de/status/de_DE/parcel/{tracking_number}",
    "Hermes": "https://www.myhermes.de/empfangen/sendungsverfolgung/sendungsinformation#{tracking_number}",
    "GLS": "https://gls-group.com/DE/de/paketverfolgung?match={tracking_number}",
}
# Digits of a tracking number per carrier (DHL parcels carry 20, DPD 14, Hermes 16, GLS 11).
TRACKING_DIGITS: dict[str, int] = {"DHL": 20, "DPD": 14, "Hermes": 16, "GLS": 11}
TICKET_TOPICS: tuple[str, ...] = (
    "Lieferung",
    "Rücksendung",
    "Rechnung",
    "Produktfrage",
    "Reklamation",
    "Kundenkonto",
    "Zahlung",
)

_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue"})
_EMAIL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]*[a-z0-9])?@[a-z0-9-]+(?:\.[a-z0-9-]+)+$")


def slug(text: str) -> str:
    """ASCII slug for mail local parts and URLs: umlauts transliterated German-style (ü→ue), rest dropped.

    Returns only ``[a-z0-9-]`` with no leading, trailing or doubled hyphen; may be empty.
    """
    text = text.translate(_TRANSLIT)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text)
    return text.strip("-")


def email_address(first_name: str | None, last_name: str | None, number: int, domain: str) -> str:
    """Address derived from a name, e.g. ``juergen.mueller42@example.de``; falls back to ``kunde42@...``.

    ``number`` keeps addresses unique across customers who share a name.
    """
    parts = [p for p in (slug(first_name or ""), slug(last_name or "")) if p]
    local = ".".join(parts) if parts else "kunde"
    return f"{local}{number}@{domain}"


def is_valid_email(address: str) -> bool:
    """Conservative syntax check used by the tests (the loader has its own, stricter rules)."""
    return len(address) <= 254 and bool(_EMAIL_RE.match(address)) and ".." not in address
