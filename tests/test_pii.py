"""The ``pii`` check and its detectors: true and false cases, masking, audits of text and tables."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curata.audit import AuditSettings, audit
from curata.checks.base import Context
from curata.checks.pii import PiiCheck, direct_identifier_columns, quasi_identifier_columns
from curata.dataset import Dataset, Roles
from curata.errors import ConfigError
from curata.signals.pii import (
    PiiSettings,
    Span,
    detect,
    detect_batch,
    iban_valid,
    luhn_valid,
    mask,
    pii_batch,
    redact_text,
    resolve_overlaps,
    ssn_valid,
)

REGEX_ONLY = PiiSettings(ner=False)
CHECK_FINDINGS = Path("/work/shared/tools/check_findings.py")
HAS_MODEL = (
    importlib.util.find_spec("spacy") is not None
    and importlib.util.find_spec(PiiSettings().ner_model) is not None
)


def found(text: str, settings: PiiSettings = REGEX_ONLY) -> list[tuple[str, str]]:
    """(type, value) of every detection in ``text``."""
    return [(s.type, text[s.start : s.end]) for s in detect(text, settings)]


def types_in(text: str, settings: PiiSettings = REGEX_ONLY) -> set[str]:
    return {t for t, _ in found(text, settings)}


# --------------------------------------------------------------------------- detectors


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("write to john.doe@example.com today", "john.doe@example.com"),
        ("<Jane.Roe+news@mail.example.co.uk>", "Jane.Roe+news@mail.example.co.uk"),
        ("mail jane.doe [at] example [dot] org now", "jane.doe [at] example [dot] org"),
        ("mail jane(at)example.org now", "jane(at)example.org"),
    ],
)
def test_email_found(text: str, value: str) -> None:
    assert found(text) == [("EMAIL", value)]


@pytest.mark.parametrize("text", ["user@localhost", "a..b@example.com", "meet me (at) noon", "@handle on x"])
def test_email_rejected(text: str) -> None:
    assert "EMAIL" not in types_in(text)


@pytest.mark.parametrize(
    "number", ["4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "3782 822463 10005"]
)
def test_card_found(number: str) -> None:
    assert found(f"card {number} please") == [("CREDIT_CARD", number)]


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",  # bad Luhn
        "1234 5678 9012 3456",  # no issuer prefix
        "0000 0000 0000 0000",
    ],
)
def test_card_rejected(number: str) -> None:
    assert "CREDIT_CARD" not in types_in(f"number {number} here")


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("7992739871x")


@pytest.mark.parametrize(
    "iban",
    [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "DE89 3704 0044 0532 0130 00",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "CH93 0076 2011 6238 5295 7",
    ],
)
def test_iban_found(iban: str) -> None:
    assert iban_valid(iban)
    assert found(f"pay into {iban} by Friday") == [("IBAN", iban)]


@pytest.mark.parametrize(
    "iban",
    [
        "GB83 WEST 1234 5698 7654 32",  # check digits off by one
        "DE89 3704 0044 0532 0130 01",  # BBAN changed
        "GB82 WEST 1234 5698 7654",  # too short for GB
        "XX82 WEST 1234 5698 7654 32",  # no such country
    ],
)
def test_iban_rejected(iban: str) -> None:
    assert not iban_valid(iban)
    assert "IBAN" not in types_in(f"pay into {iban} by Friday")


def test_iban_followed_by_a_word_keeps_its_length() -> None:
    text = "IBAN GB82 WEST 1234 5698 7654 32 TO PAY"
    assert found(text) == [("IBAN", "GB82 WEST 1234 5698 7654 32")]


@pytest.mark.parametrize("ssn", ["123-45-6789", "536-22-1234", "001-01-0001"])
def test_ssn_found(ssn: str) -> None:
    assert found(f"his number {ssn} was on file") == [("US_SSN", ssn)]


@pytest.mark.parametrize(
    "ssn",
    ["000-12-3456", "666-12-3456", "912-34-5678", "987-65-4321", "123-00-4567", "123-45-0000", "078-05-1120"],
)
def test_ssn_rejected(ssn: str) -> None:
    assert "US_SSN" not in types_in(f"his number {ssn} was on file")


def test_ssn_rules_and_plain_digits_need_context() -> None:
    assert ssn_valid("123", "45", "6789")
    assert not ssn_valid("666", "45", "6789")
    assert found("SSN: 123456789") == [("US_SSN", "123456789")]
    assert "US_SSN" not in types_in("Order 123456789 shipped.")
    assert "US_SSN" not in types_in("Her SSN is on file. Order 123456789 shipped.")


@pytest.mark.parametrize(
    "phone",
    [
        "(212) 555-0187",
        "212-555-0187",
        "+1 212 555 0187",
        "+44 20 7946 0958",
        "020 7946 0958",
        "030 12345678",
    ],
)
def test_phone_found(phone: str) -> None:
    assert found(f"call {phone} after nine") == [("PHONE", phone)]


@pytest.mark.parametrize(
    "text",
    [
        "call (123) 456-7890 now",  # no such area code
        "pi is 3.14159265358979 or so",
        "it happened on 2023-10-12 at noon",
        "version 12345 67",
        "room 555-01",
    ],
)
def test_phone_rejected(text: str) -> None:
    assert "PHONE" not in types_in(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("login from 192.168.1.20 failed", "192.168.1.20"),
        ("host 8.8.8.8.", "8.8.8.8"),
        ("v6 2001:db8::8a2e:370:7334 up", "2001:db8::8a2e:370:7334"),
        ("loopback ::1 and fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
    ],
)
def test_ip_found(text: str, value: str) -> None:
    assert ("IP_ADDRESS", value) in found(text)


@pytest.mark.parametrize(
    "text",
    ["version 1.2.3.4 is out", "v10.0.0.1", "999.1.1.1 is no address", "at 12:30:45 sharp", "std::sort"],
)
def test_ip_rejected(text: str) -> None:
    assert "IP_ADDRESS" not in types_in(text)


@pytest.mark.parametrize(
    "address",
    [
        "742 Evergreen Terrace, Springfield, IL 62704",
        "1600 Pennsylvania Avenue",
        "221B Baker Street",
        "10 Downing Street, London SW1A 2AA",
        "Hauptstraße 12, 10115 Berlin",
        "12 rue de la Paix",
    ],
)
def test_street_address_found(address: str) -> None:
    assert found(f"She lives at {address}. It is nice.") == [("STREET_ADDRESS", address)]


@pytest.mark.parametrize(
    "text", ["I walked 3 miles down the road.", "We need 12 Street lamps", "Chapter 7 Drive home"]
)
def test_street_address_rejected(text: str) -> None:
    assert "STREET_ADDRESS" not in types_in(text)


@pytest.mark.parametrize(
    "secret",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3",
        "github_pat_" + "A1b2C3d4E5" * 8 + "xy",
        "xoxb-12345678901-123456789012-abcdefABCDEF123456789012",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_known_secret_found(secret: str) -> None:
    assert found(f"use {secret} for the deploy") == [("SECRET", secret)]


def test_private_key_block_and_context_secrets() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbC123\n-----END RSA PRIVATE KEY-----"
    assert found(f"key file:\n{key}\ndone") == [("SECRET", key)]
    token = "f3a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5"
    assert found(f'api_key = "{token}"') == [("SECRET", token)]
    assert found(f"auth token {token}") == [("SECRET", token)]


@pytest.mark.parametrize(
    "text",
    [
        "the token was lost in the mail",
        "commit 3f2a9c1e8b7d6f5a4e3d2c1b0a9f8e7d6c5b4a3f fixed it",  # a hash is no secret without context
        "my password is secret",
        "api_key = aaaaaaaaaaaaaaaaaaaaaaaa",  # no entropy
    ],
)
def test_secret_rejected(text: str) -> None:
    assert "SECRET" not in types_in(text)


def test_overlaps_resolved_structured_first() -> None:
    spans = [Span(0, 20, "PERSON", 0.9), Span(5, 10, "EMAIL", 0.95), Span(30, 40, "LOCATION", 0.8)]
    assert resolve_overlaps(spans) == [Span(5, 10, "EMAIL", 0.95), Span(30, 40, "LOCATION", 0.8)]
    # A card number is not also a phone number.
    assert found("card 4111 1111 1111 1111") == [("CREDIT_CARD", "4111 1111 1111 1111")]


def test_entity_types_can_be_turned_off() -> None:
    text = "mail john.doe@example.com or call (212) 555-0187"
    only_phone = PiiSettings(entity_types=("PHONE",), ner=False)
    assert found(text, only_phone) == [("PHONE", "(212) 555-0187")]


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown type"):
        PiiSettings(entity_types=("EMAIL", "SHOE_SIZE"))
    with pytest.raises(ConfigError, match="min_k"):
        PiiSettings(min_k=1)
    with pytest.raises(ConfigError, match="phone_regions"):
        PiiSettings(phone_regions=("uk",))
    assert PiiSettings(ner=False).fingerprint() != PiiSettings(ner=False, min_score=0.7).fingerprint()


# --------------------------------------------------------------------------- masking

PLANTED: list[tuple[str, str]] = [
    ("EMAIL", "john.doe@example.com"),
    ("EMAIL", "jane.doe [at] example [dot] org"),
    ("PHONE", "+44 20 7946 0958"),
    ("PHONE", "(212) 555-0187"),
    ("CREDIT_CARD", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "378282246310005"),
    ("IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "DE89370400440532013000"),
    ("US_SSN", "123-45-6789"),
    ("IP_ADDRESS", "192.168.1.20"),
    ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("STREET_ADDRESS", "742 Evergreen Terrace, Springfield, IL 62704"),
    ("SECRET", "AKIAIOSFODNN7EXAMPLE"),
    ("SECRET", "ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3"),
    ("SECRET", "f3a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5"),
    ("PERSON", "Angela Merkel"),
    ("LOCATION", "Copenhagen"),
]


def _alnum_runs(value: str, n: int) -> set[str]:
    compact = "".join(c for c in value if c.isalnum())
    return {compact[i : i + n] for i in range(len(compact) - n + 1)}


@pytest.mark.parametrize(("kind", "value"), PLANTED)
def test_mask_never_shows_the_value(kind: str, value: str) -> None:
    masked = mask(value, kind)
    assert value not in masked
    assert "*" in masked
    # At most 4 characters of the value survive in a row (a last-4 of a card, a top-level domain).
    compact_mask = "".join(c for c in masked if c.isalnum())
    # (A street address keeps its suffix word, "Terrace", which names no one.)
    runs = _alnum_runs(value, 5)
    assert not any(run in compact_mask for run in runs if not run.isalpha() or kind != "STREET_ADDRESS")
    assert sum(c.isdigit() for c in masked) <= 4


def test_mask_examples() -> None:
    assert mask("john.doe@example.com", "EMAIL") == "j***@e***.com"
    assert mask("4111 1111 1111 1234", "CREDIT_CARD") == "**** **** **** 1234"
    assert mask("123-45-6789", "US_SSN") == "***-**-****"


def test_redact_text_replaces_spans() -> None:
    text = "mail john.doe@example.com or call (212) 555-0187."
    spans = detect(text, REGEX_ONLY)
    assert redact_text(text, spans) == "mail [EMAIL] or call [PHONE]."
    evidence = [{"start": s.start, "end": s.end, "type": s.type} for s in spans]
    assert redact_text(text, evidence, style="mask") == "mail j***@e***.com or call (***) ***-**87."
    with pytest.raises(ConfigError):
        redact_text(text, spans, style="blur")


def test_pii_batch_stores_masked_values_only() -> None:
    texts = [f"value {v} here" for _, v in PLANTED[:15]] + [None, ""]
    batch = pii_batch(texts, REGEX_ONLY)
    assert batch.num_rows == len(texts)
    dumped = json.dumps(batch.to_pylist())
    for _, value in PLANTED[:15]:
        assert value not in dumped
    assert batch.column(0)[15].as_py() == []


# --------------------------------------------------------------------------- NER


@pytest.mark.skipif(not HAS_MODEL, reason="needs the [pii] extra (spaCy and its English model)")
def test_ner_finds_people_and_places() -> None:
    settings = PiiSettings()
    text = "Yesterday Angela Merkel flew from Berlin to Copenhagen with Barack Obama."
    got = found(text, settings)
    assert ("PERSON", "Angela Merkel") in got
    assert ("PERSON", "Barack Obama") in got
    assert ("LOCATION", "Berlin") in got
    # The gate skips sentences without names; results do not depend on the batch around a text.
    plain = "the cat sat on the mat. The dog did not."
    batch = detect_batch([text, plain, text.upper(), None], settings)
    assert batch[0] == detect(text, settings)
    assert batch[1] == [] and batch[3] == []
    ungated = PiiSettings(ner_gate=False)
    assert {s.type for s in detect(text, ungated)} >= {"PERSON", "LOCATION"}


@pytest.mark.skipif(not HAS_MODEL, reason="needs the [pii] extra (spaCy and its English model)")
def test_ner_filters_implausible_names() -> None:
    settings = PiiSettings()
    assert "PERSON" not in types_in("Rob a museum. Mark with chalk.", settings)
    assert found("Mr. John Smith's car", settings) == [("PERSON", "John Smith")]


def test_without_ner_the_status_says_so(tmp_path: Path) -> None:
    data = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["mail john.doe@example.com please"]}), data)
    context = _context(data, PiiSettings(ner_model="no_such_spacy_model"))
    assert PiiCheck().run(context).num_rows == 1
    notes = context.cache["check_notes"]["pii"]
    assert any("PERSON and LOCATION not looked for" in n and "no_such_spacy_model" in n for n in notes)


# --------------------------------------------------------------------------- the check, text

PLANTED_ROWS = [
    ("p-email", "Write to john.doe@example.com if you disagree with the plan."),
    ("p-phone", "Call me at (212) 555-0187 when the build is green again."),
    ("p-card", "The card number was 4111 1111 1111 1111 and it expired."),
    ("p-iban", "Transfer the money to GB82 WEST 1234 5698 7654 32 by Friday."),
    ("p-ssn", "Her SSN is 123-45-6789 according to the form."),
    ("p-ip", "Traffic came from 192.168.1.20 all night long."),
    ("p-addr", "She lives at 742 Evergreen Terrace, Springfield, IL 62704 now."),
    ("p-secret", "The key AKIAIOSFODNN7EXAMPLE leaked in the logs again."),
]
CLEAN_ROWS = [
    ("c-1", "the weather was fine and the river was calm all afternoon."),
    ("c-2", "Nothing much happened after lunch, so we went home early."),
    ("c-3", "Build 4.19.2.1 is out; it fixes the cache and the progress bar."),
    ("c-4", "Order 482913375 shipped on 2023-10-12 at 12:30:45 as planned."),
]


def _write_texts(path: Path, rows: list[tuple[str, str]]) -> Path:
    pq.write_table(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}), path)
    return path


def _context(data: Path, settings: PiiSettings) -> Context:
    from curata.io import read_dataset

    return Context(dataset=read_dataset(data), signals={}, settings={"pii": settings})


def test_text_audit_finds_planted_pii_and_never_shows_it(tmp_path: Path) -> None:
    data = _write_texts(tmp_path / "data.parquet", PLANTED_ROWS + CLEAN_ROWS)
    out = tmp_path / "out"
    result = audit(data, out, settings=AuditSettings(checks=("pii",)), workers=1)
    rows = result.findings.to_pylist()
    by_id = {r["record_id"]: r for r in rows}
    assert set(by_id) == {rid for rid, _ in PLANTED_ROWS}
    expected = {
        "p-email": ("EMAIL", "warning"),
        "p-phone": ("PHONE", "warning"),
        "p-card": ("CREDIT_CARD", "error"),
        "p-iban": ("IBAN", "error"),
        "p-ssn": ("US_SSN", "error"),
        "p-ip": ("IP_ADDRESS", "warning"),
        "p-addr": ("STREET_ADDRESS", "warning"),
        "p-secret": ("SECRET", "error"),
    }
    texts = dict(PLANTED_ROWS)
    for rid, (kind, severity) in expected.items():
        row = by_id[rid]
        evidence = json.loads(row["evidence"])
        assert evidence["field"] == "text"
        assert [s["type"] for s in evidence["spans"]] == [kind]
        span = evidence["spans"][0]
        assert texts[rid][span["start"] : span["end"]] in {v for _, v in PLANTED}
        assert row["severity"] == severity
        assert 0.5 <= row["score"] <= 1.0
        assert row["message"].startswith("personal data: 1 ")
    # No planted value, in clear, anywhere in the findings or the report JSON.
    planted_values = ["john.doe@example.com", "555-0187", "4111 1111 1111 1111", "GB82 WEST", "123-45-6789"]
    planted_values += ["192.168.1.20", "742 Evergreen", "AKIAIOSFODNN7EXAMPLE"]
    findings_text = json.dumps(rows)
    report_text = (out / "report.json").read_text()
    for value in planted_values:
        assert value not in findings_text
        assert value not in report_text
    assert result.report["checks"]["pii"]["status"] == "ok"


def test_report_html_does_not_show_planted_values(tmp_path: Path) -> None:
    """Previews are masked for every check that shows the record, not only for ``pii``."""
    copies = [(f"{rid}-copy", text) for rid, text in PLANTED_ROWS]  # exact duplicates show them too
    data = _write_texts(tmp_path / "data.parquet", PLANTED_ROWS + copies)
    out = tmp_path / "out"
    result = audit(data, out, settings=AuditSettings(checks=("pii", "exact_duplicate")), workers=1)
    assert result.report["checks"]["exact_duplicate"]["count"] >= 3
    html = (out / "report.html").read_text()
    assert "Write to j" in html  # the text around the e-mail is still shown
    for value in ("john.doe@example.com", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE"):
        assert value not in html


def test_clean_text_gives_no_pii_findings(tmp_path: Path) -> None:
    data = _write_texts(tmp_path / "clean.parquet", CLEAN_ROWS)
    result = audit(data, tmp_path / "out", settings=AuditSettings(checks=("pii",)), workers=1)
    assert result.findings.num_rows == 0
    assert result.report["checks"]["pii"]["status"] == "ok"


def test_spans_are_cached_per_content(tmp_path: Path) -> None:
    data = _write_texts(tmp_path / "data.parquet", PLANTED_ROWS)
    settings = AuditSettings(checks=("pii",))
    first = audit(data, tmp_path / "out1", settings=settings, workers=1, workspace=tmp_path / "ws")
    second = audit(data, tmp_path / "out2", settings=settings, workers=1, workspace=tmp_path / "ws")
    assert first.findings.equals(second.findings)
    cache_files = [p for p in (tmp_path / "ws").rglob("*") if p.is_file()]
    assert cache_files
    for path in cache_files:  # the workspace cache holds masked values only
        assert b"AKIAIOSFODNN7EXAMPLE" not in path.read_bytes()


@pytest.mark.skipif(not CHECK_FINDINGS.exists(), reason="the shared contract tool is not here")
def test_findings_folder_follows_the_contract(tmp_path: Path) -> None:
    data = _write_texts(tmp_path / "data.parquet", PLANTED_ROWS + CLEAN_ROWS)
    out = tmp_path / "out"
    audit(data, out, settings=AuditSettings(checks=("pii",)), workers=1)
    done = subprocess.run([sys.executable, str(CHECK_FINDINGS), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# --------------------------------------------------------------------------- the check, tables


def _people_table(n: int = 60) -> pa.Table:
    rows = []
    for i in range(n):
        rows.append(
            {
                "customer": f"c{i:03d}",
                "contact": f"p{i}@ex.org",  # an e-mail column with a neutral name
                "ssn": None if i % 10 == 0 else f"{100 + i:03d}-{10 + i % 80:02d}-{1000 + i:04d}",
                "zip": "02139" if i < 50 else f"9{i:04d}",
                "birth_year": 1980 + (i % 2),
                "sex": "F" if i % 2 else "M",
                "score": float(i % 7),
                "label": "yes" if i % 3 else "no",
            }
        )
    return pa.Table.from_pylist(rows)


def test_identifier_columns_by_name_and_content(tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(_people_table(), path)
    context = _context(path, PiiSettings(ner=False))
    columns = direct_identifier_columns(context, PiiSettings(ner=False))
    assert {c: t for c, (t, _) in columns.items()} == {"contact": "EMAIL", "ssn": "US_SSN"}
    assert quasi_identifier_columns(context, PiiSettings(ner=False), list(columns)) == [
        "zip",
        "birth_year",
        "sex",
    ]


def test_tabular_audit_flags_identifiers_and_rare_combinations(tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(_people_table(), path)
    out = tmp_path / "out"
    result = audit(path, out, id_column="customer", settings=AuditSettings(checks=("pii",)), workers=1)
    rows = [dict(r, evidence=json.loads(r["evidence"])) for r in result.findings.to_pylist()]
    identifiers = [r for r in rows if "types" in r["evidence"]]
    rare = [r for r in rows if "class_size" in r["evidence"]]
    assert len(identifiers) == 60
    no_ssn = next(r for r in identifiers if r["record_id"] == "c010")
    assert no_ssn["evidence"]["columns"] == ["contact"]
    assert no_ssn["severity"] == "warning"
    without_ssn = {f"c{i:03d}" for i in range(0, 60, 10)}
    assert all(
        r["severity"] == ("warning" if r["record_id"] in without_ssn else "error") for r in identifiers
    )
    # Rows 50..59 have a unique zip: each is alone in its class, named by the zip alone.
    assert sorted(r["record_id"] for r in rare) == [f"c{i:03d}" for i in range(50, 60)]
    for r in rare:
        assert r["evidence"]["columns"] == ["zip"]
        assert r["evidence"]["class_size"] == 1
        assert r["evidence"]["k"] == 5
        assert r["score"] == 1.0
    dumped = json.dumps(rows) + (out / "report.json").read_text()
    assert "p3@ex.org" not in dumped
    assert "103-13-1003" not in dumped


def test_k_anonymity_uses_named_quasi_identifiers(tmp_path: Path) -> None:
    table = pa.table(
        {
            "age": [30, 30, 30, 30, 30, 41, 41, 41, 41, 52],
            "gender": ["f"] * 5 + ["m"] * 4 + ["m"],
            "value": list(range(10)),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    settings = PiiSettings(ner=False, min_k=4)
    context = _context(path, settings)
    findings = PiiCheck().run(context).to_pylist()
    assert [f["record_id"] for f in findings] == ["9"]
    assert json.loads(findings[0]["evidence"])["columns"] == ["age"]
    explicit = _context(path, PiiSettings(ner=False, min_k=4, quasi_identifiers=("gender",)))
    assert PiiCheck().run(explicit).num_rows == 0
    with pytest.raises(ConfigError, match="lacks"):
        PiiCheck().run(_context(path, PiiSettings(ner=False, quasi_identifiers=("zip",))))


def test_table_without_people_gives_no_findings(tmp_path: Path) -> None:
    table = pa.table(
        {"sepal": [1.0, 1.5, 2.0] * 10, "petal": [0.1, 0.2, 0.3] * 10, "label": ["a", "b", "c"] * 10}
    )
    path = tmp_path / "iris.parquet"
    pq.write_table(table, path)
    context = _context(path, PiiSettings(ner=False))
    assert PiiCheck().run(context).num_rows == 0
    assert any("k-anonymity not measured" in n for n in context.cache["check_notes"]["pii"])


def test_quasi_identifier_names_alone_do_not_make_a_table_personal(tmp_path: Path) -> None:
    table = pa.table({"age": list(range(20)), "region": ["n", "s"] * 10, "price": [1.0] * 20})
    path = tmp_path / "houses.parquet"
    pq.write_table(table, path)
    context = _context(path, PiiSettings(ner=False))
    assert PiiCheck().run(context).num_rows == 0
    assert any("nothing says the rows are people" in n for n in context.cache["check_notes"]["pii"])


def test_check_skips_data_with_nothing_to_scan(tmp_path: Path) -> None:
    ds = Dataset(
        table=pa.table({"path": ["a.png"]}),
        roles=Roles(id="path", image="path"),
        record_ids=pa.array(["a.png"]),
        kind="images",
        root=tmp_path,
        source="x",
    )
    context = Context(dataset=ds, signals={})
    assert PiiCheck().applies(context) == "no text or tabular columns"
