"""The ``pii`` check: personal data and secrets in texts, identifying columns, re-identifiable records.

Three kinds of findings, all under the check name ``pii``:

* **text**: one finding per record whose text holds personal data (detectors in
  ``curata.signals.pii``, run through the engine and cached per content hash like every per-record
  signal). Evidence ``{"field": <text column>, "spans": [{"start", "end", "type", "masked",
  "score"}]}``; ``start``/``end`` are ``str`` indices into the field's value, the contract with the
  redaction step (``curata.signals.pii.redact_text``). Values appear masked only. Severity by
  type: secrets, card numbers, SSNs and IBANs are errors; e-mails, phones, IP and street addresses
  warnings; names and places info. Score: the highest detector confidence.
* **direct identifiers**: columns (other than the text, image, label and split columns) whose
  name says they identify a person (``email``, ``ssn``, ``first_name`` ...) or most of whose
  sampled values are wholly one detected type. One finding per record with a value in them,
  evidence ``{"columns": [...], "types": {column: type}}``.
* **k-anonymity**: the quasi-identifiers (``PiiSettings.quasi_identifiers``, else the columns whose
  name says so: zip, birth date, sex, age ..., when the table is about people: it has direct
  identifiers or a column such as sex, birth date or ethnicity; in a table with direct
  identifiers but no such names, its low/mid-cardinality columns) are combined; a record whose
  combination of values is shared by fewer than ``min_k`` records is flagged with the smallest
  sub-combination that singles it out, evidence ``{"columns": [...], "quasi_identifiers": [...],
  "class_size": n, "k": k}``.

Notes the report should show (NER skipped because spaCy is missing, no quasi-identifiers found)
are left in ``context.cache["check_notes"]["pii"]``.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from curata.checks.base import SEVERITY_RANK, Check, Context, FindingsBuilder, Severity, register
from curata.engine import get_engine
from curata.errors import ConfigError
from curata.signals.pii import NER_TYPES, PiiSettings, detect_batch, ner_status, pii_batch
from curata.signals.pipeline import Signals, SignalSettings, map_records

I64 = npt.NDArray[np.int64]

SEVERITY_BY_TYPE: dict[str, Severity] = {
    "SECRET": "error",
    "CREDIT_CARD": "error",
    "US_SSN": "error",
    "IBAN": "error",
    "EMAIL": "warning",
    "PHONE": "warning",
    "STREET_ADDRESS": "warning",
    "IP_ADDRESS": "warning",  # personal data under the GDPR when it can single out a device
    "PERSON": "info",
    "LOCATION": "info",
    "ID_NUMBER": "error",
}
_NOUNS: dict[str, tuple[str, str]] = {
    "SECRET": ("secret", "secrets"),
    "CREDIT_CARD": ("credit card number", "credit card numbers"),
    "US_SSN": ("US social security number", "US social security numbers"),
    "IBAN": ("IBAN", "IBANs"),
    "EMAIL": ("e-mail", "e-mails"),
    "PHONE": ("phone number", "phone numbers"),
    "STREET_ADDRESS": ("street address", "street addresses"),
    "IP_ADDRESS": ("IP address", "IP addresses"),
    "PERSON": ("person name", "person names"),
    "LOCATION": ("place name", "place names"),
    "ID_NUMBER": ("identity number", "identity numbers"),
}
_TYPE_ORDER = {t: i for i, t in enumerate(_NOUNS)}
#: Spans listed in a message; the evidence has all of them.
_MESSAGE_SPANS = 5

#: Column-name hints of direct identifiers (matched on whole ``_``-separated name tokens).
DIRECT_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "EMAIL": ("email", "e_mail", "mail", "email_address", "mail_address"),
    "PHONE": ("phone", "telephone", "mobile", "cellphone", "phone_number", "tel", "fax", "msisdn"),
    "US_SSN": ("ssn", "social_security", "social_security_number"),
    "CREDIT_CARD": ("credit_card", "card_number", "cc_number", "ccn", "card_no"),
    "IBAN": ("iban", "bank_account", "account_number"),
    "IP_ADDRESS": ("ip", "ip_address", "ipv4", "ipv6", "ip_addr"),
    "STREET_ADDRESS": ("address", "street", "street_address", "home_address", "address_line"),
    "PERSON": (
        "first_name",
        "last_name",
        "full_name",
        "surname",
        "given_name",
        "family_name",
        "firstname",
        "lastname",
        "fullname",
        "patient_name",
        "customer_name",
        "user_name",
        "username",
    ),
    "SECRET": ("password", "passwd", "api_key", "apikey", "secret", "access_token", "auth_token"),
    "ID_NUMBER": (
        "passport",
        "passport_number",
        "national_id",
        "tax_id",
        "driver_license",
        "drivers_license",
        "licence_number",
        "license_number",
        "medical_record_number",
        "mrn",
        "nhs_number",
    ),
}
#: Column-name hints of quasi-identifiers.
QUASI_NAME_HINTS: tuple[str, ...] = (
    "zip",
    "zipcode",
    "zip_code",
    "postcode",
    "postal_code",
    "postal",
    "birth",
    "birthdate",
    "birth_date",
    "birthday",
    "birth_year",
    "dob",
    "date_of_birth",
    "age",
    "sex",
    "gender",
    "race",
    "ethnicity",
    "ethnic",
    "nationality",
    "native_country",
    "country",
    "city",
    "state",
    "county",
    "region",
    "marital",
    "marital_status",
    "occupation",
    "job",
    "job_title",
    "profession",
    "education",
    "religion",
    "employer",
)
#: Hints that a table describes people (a "zip" or "age" column alone may describe houses or shops).
PERSONAL_NAME_HINTS: tuple[str, ...] = (
    "sex",
    "gender",
    "birth",
    "birthdate",
    "birth_date",
    "birthday",
    "birth_year",
    "dob",
    "date_of_birth",
    "race",
    "ethnicity",
    "ethnic",
    "marital",
    "marital_status",
    "religion",
    "nationality",
    "native_country",
)
#: Most quasi-identifier columns combined (the first found, in column order).
MAX_QUASI_COLUMNS = 10
#: A column has "low/mid" cardinality when it has at most this share of distinct values.
MID_CARDINALITY_SHARE = 0.5
#: A value is "wholly" a detected type when one span covers at least this share of it.
_WHOLE_VALUE_SHARE = 0.9
#: Values sampled per string column for the NER (PERSON) content test.
_NER_SAMPLE = 100
#: Values longer than this are prose rather than identifiers (left to the text detectors).
_MAX_IDENTIFIER_CHARS = 80


def pii_settings(context: Context) -> PiiSettings:
    """The run's settings (``context.settings["pii"]``, else the defaults)."""
    settings = context.settings.get("pii")
    return settings if isinstance(settings, PiiSettings) else PiiSettings()


def _note(context: Context, text: str) -> None:
    notes: list[str] = context.cache.setdefault("check_notes", {}).setdefault("pii", [])
    if text not in notes:
        notes.append(text)


def pii_spans(context: Context) -> Signals:
    """The personal-data spans of every text, computed (or read from the cache) once per run."""

    def compute() -> Signals:
        settings = pii_settings(context)
        signal_settings = context.settings.get("signals")
        if not isinstance(signal_settings, SignalSettings):
            signal_settings = SignalSettings()
        engine = context.settings.get("engine") or get_engine("local", 1)
        return map_records(
            context.dataset,
            engine,
            pii_batch,
            (settings,),
            fingerprint=settings.fingerprint(),
            cache=context.settings.get("cache"),
            batch_size=signal_settings.batch_size,
            description="personal data",
        )

    spans: Signals = context.shared("pii_spans", compute)
    return spans


def _rank(severity: Severity) -> int:
    return SEVERITY_RANK[severity]


def _worst(types: list[str]) -> Severity:
    return max((SEVERITY_BY_TYPE[t] for t in types), key=_rank)


def _counts_phrase(types: list[str]) -> str:
    counts = Counter(types)
    ordered = sorted(counts, key=lambda t: (-SEVERITY_RANK[SEVERITY_BY_TYPE[t]], _TYPE_ORDER[t]))
    return ", ".join(f"{counts[t]} {_NOUNS[t][0] if counts[t] == 1 else _NOUNS[t][1]}" for t in ordered)


def _text_findings(context: Context, out: FindingsBuilder) -> None:
    field = context.dataset.roles.text
    assert field is not None
    signals = pii_spans(context)
    ids = context.record_ids
    column = signals.column("spans").combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    for row in np.flatnonzero(np.nan_to_num(lengths.astype(np.float64)) > 0):
        spans: list[dict[str, Any]] = column[int(row)].as_py()
        types = [s["type"] for s in spans]
        where = ", ".join(f"{s['start']}-{s['end']}" for s in spans[:_MESSAGE_SPANS])
        if len(spans) > _MESSAGE_SPANS:
            where += f", and {len(spans) - _MESSAGE_SPANS} more"
        shown = ", ".join(s["masked"] for s in spans[:3])
        evidence_spans = [
            {
                "start": s["start"],
                "end": s["end"],
                "type": s["type"],
                "masked": s["masked"],
                "score": round(float(s["score"]), 3),
            }
            for s in spans
        ]
        out.add(
            ids[int(row)],
            score=max(float(s["score"]) for s in spans),
            severity=_worst(types),
            message=f"personal data: {_counts_phrase(types)} (chars {where}; {shown})",
            evidence={"field": field, "spans": evidence_spans},
        )


# --------------------------------------------------------------------------- tabular


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _name_matches(name: str, hints: tuple[str, ...]) -> bool:
    tokens = _tokens(name)
    joined = "_".join(tokens)
    for hint in hints:
        parts = hint.split("_")
        if joined == hint:
            return True
        for i in range(len(tokens) - len(parts) + 1):
            if tokens[i : i + len(parts)] == parts:
                return True
    return False


def _tabular_columns(context: Context) -> list[str]:
    """Flat columns that may hold identifiers: every column but the text, image, label and split ones."""
    roles = context.dataset.roles
    skip = {roles.text, roles.image, roles.label, roles.split}
    out = []
    for name in context.dataset.table.column_names:
        if name in skip:
            continue
        typ = context.dataset.table.schema.field(name).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if pa.types.is_nested(typ) or pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            continue
        if pa.types.is_null(typ):
            continue
        out.append(name)
    return out


def _as_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def _sample(col: pa.ChunkedArray, n: int) -> list[str]:
    """Up to ``n`` distinct non-null values spread over the column (every k-th row)."""
    values = _as_strings(col).drop_null()
    step = max(1, len(values) // (n * 2))
    picked = values.take(pa.array(np.arange(0, len(values), step, dtype=np.int64)))
    seen = dict.fromkeys(v.strip() for v in picked.to_pylist() if v and v.strip())
    return list(seen)[:n]


def _content_type(values: list[str], settings: PiiSettings) -> tuple[str | None, float]:
    """The type most sampled values wholly are, and that share (regex detectors; NER for names)."""
    if not values:
        return None, 0.0
    short = [v for v in values if len(v) <= _MAX_IDENTIFIER_CHARS]
    if len(short) < 0.5 * len(values):
        return None, 0.0
    regex_settings = PiiSettings(
        entity_types=tuple(t for t in settings.entity_types if t not in NER_TYPES),
        ner=False,
        phone_regions=settings.phone_regions,
        min_score=settings.min_score,
    )
    counts: Counter[str] = Counter()
    for value, spans in zip(short, detect_batch(short, regex_settings), strict=True):
        for s in spans:
            if s.end - s.start >= _WHOLE_VALUE_SHARE * len(value):
                counts[s.type] += 1
                break
    best, hits = counts.most_common(1)[0] if counts else (None, 0)
    share = hits / len(values)
    ner_on = ner_status(settings)[0] and "PERSON" in settings.entity_types
    if share >= settings.identifier_share or not ner_on:
        return best, share
    names = short[:_NER_SAMPLE]
    if sum(v.replace(" ", "").replace("-", "").replace("'", "").isalpha() for v in names) < 0.8 * len(names):
        return best, share
    ner_settings = PiiSettings(entity_types=("PERSON",), ner_model=settings.ner_model, min_score=0.0)
    person = 0
    for value, spans in zip(names, detect_batch(names, ner_settings), strict=True):
        if any(s.end - s.start >= _WHOLE_VALUE_SHARE * len(value) for s in spans):
            person += 1
    if person / len(names) > share:
        return "PERSON", person / len(names)
    return best, share


def direct_identifier_columns(context: Context, settings: PiiSettings) -> dict[str, tuple[str, float]]:
    """Columns that identify a person: name -> (type, confidence)."""
    table = context.dataset.table
    found: dict[str, tuple[str, float]] = {}
    for name in _tabular_columns(context):
        by_name = next(
            (t for t, hints in DIRECT_NAME_HINTS.items() if _name_matches(name, hints)),
            None,
        )
        if by_name is not None and by_name != "ID_NUMBER" and by_name not in settings.entity_types:
            by_name = None
        kind, share = _content_type(_sample(table.column(name), settings.sample_values), settings)
        if kind is not None and share >= settings.identifier_share:
            found[name] = (kind, min(1.0, 0.5 + 0.5 * share) if by_name is None else 0.95)
        elif by_name is not None and (share > 0 or kind is None or _is_text_like(table.column(name))):
            found[name] = (by_name, 0.7)
    return found


def _is_text_like(col: pa.ChunkedArray) -> bool:
    typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ))


def _identifier_findings(context: Context, settings: PiiSettings, out: FindingsBuilder) -> list[str]:
    columns = direct_identifier_columns(context, settings)
    if not columns:
        return []
    table = context.dataset.table
    names = list(columns)
    present = np.stack([~np.asarray(table.column(c).is_null().to_numpy(zero_copy_only=False)) for c in names])
    ids = context.record_ids
    for row in np.flatnonzero(present.any(axis=0)):
        cols = [c for c, p in zip(names, present[:, row], strict=True) if p]
        types = {c: columns[c][0] for c in cols}
        described = ", ".join(f"{c} ({_NOUNS[types[c]][0]})" for c in cols)
        out.add(
            ids[int(row)],
            score=max(columns[c][1] for c in cols),
            # A column that identifies people is at least a warning, whatever its values' type.
            severity=max([*(SEVERITY_BY_TYPE[t] for t in types.values()), "warning"], key=_rank),
            message=f"record holds direct identifiers in column{'s' if len(cols) > 1 else ''} {described}",
            evidence={"columns": cols, "types": types},
        )
    return names


def _codes(col: pa.ChunkedArray) -> I64:
    """Integer codes of a column's values (null is a value of its own)."""
    encoded = pc.dictionary_encode(_as_strings(col)).combine_chunks()
    indices = encoded.indices.fill_null(len(encoded.dictionary))
    codes: I64 = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes


def _class_sizes(codes: list[I64]) -> tuple[I64, I64]:
    """For a combination of coded columns: each row's class index and the size of its class."""
    combined = codes[0]
    for c in codes[1:]:
        combined = combined * (int(c.max()) + 1) + c
        # Re-number so the product of cardinalities cannot overflow in wide combinations.
        _, combined = np.unique(combined, return_inverse=True)
    classes, inverse = np.unique(combined, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes))
    inv: I64 = inverse.astype(np.int64)
    return inv, sizes[inverse].astype(np.int64)


def quasi_identifier_columns(context: Context, settings: PiiSettings, direct: list[str]) -> list[str]:
    """The columns combined for k-anonymity (see the module docstring)."""
    table = context.dataset.table
    available = _tabular_columns(context)
    if settings.quasi_identifiers is not None:
        missing = [c for c in settings.quasi_identifiers if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"PiiSettings.quasi_identifiers names column(s) {', '.join(missing)} that "
                f"{context.dataset.source} lacks; available: {', '.join(table.column_names)}"
            )
        return list(settings.quasi_identifiers)
    roles = context.dataset.roles
    candidates = [c for c in available if c not in direct and c != roles.id]
    n = max(1, table.num_rows)

    def distinct(c: str) -> int:
        return int(pc.count_distinct(table.column(c), mode="all").as_py())

    hinted = [c for c in candidates if _name_matches(c, QUASI_NAME_HINTS) and distinct(c) >= 2]
    about_people = bool(direct) or any(_name_matches(c, PERSONAL_NAME_HINTS) for c in hinted)
    if hinted and about_people:
        return hinted[:MAX_QUASI_COLUMNS]
    if hinted:
        _note(
            context,
            f"k-anonymity not measured: {', '.join(hinted)} may be quasi-identifiers, but nothing says the "
            "rows are people (name them in PiiSettings.quasi_identifiers to measure it)",
        )
        return []
    if not direct:
        _note(context, "k-anonymity not measured: no quasi-identifier columns (name them in PiiSettings)")
        return []
    mid = [c for c in candidates if 2 <= distinct(c) <= MID_CARDINALITY_SHARE * n]
    return mid[:MAX_QUASI_COLUMNS]


def _k_anonymity_findings(
    context: Context, settings: PiiSettings, direct: list[str], out: FindingsBuilder
) -> None:
    quasi = quasi_identifier_columns(context, settings, direct)
    if not quasi:
        return
    k = settings.min_k
    table = context.dataset.table
    codes = {c: _codes(table.column(c)) for c in quasi}
    _, full_sizes = _class_sizes([codes[c] for c in quasi])
    rare = np.flatnonzero(full_sizes < k)
    if len(rare) == 0:
        return
    # The smallest sub-combination that puts each rare record in a class under k (subsets of the
    # quasi-identifiers form coarser classes, so a record rare in one is rare in the whole set).
    best_combo: dict[int, tuple[str, ...]] = {}
    best_size: dict[int, int] = {}
    best_class: dict[int, int] = {}
    pending = set(rare.tolist())
    max_size = min(settings.max_qi_combination, len(quasi))
    for size in range(1, max_size + 1):
        if not pending:
            break
        for combo in itertools.combinations(quasi, size):
            classes, sizes = _class_sizes([codes[c] for c in combo])
            hit = [r for r in pending if sizes[r] < k]
            for r in hit:
                best_combo[r], best_size[r], best_class[r] = combo, int(sizes[r]), int(classes[r])
            pending.difference_update(hit)
    if pending:
        classes, sizes = _class_sizes([codes[c] for c in quasi])
        for r in pending:
            best_combo[r], best_size[r], best_class[r] = tuple(quasi), int(sizes[r]), int(classes[r])
    ids = context.record_ids
    for r in sorted(best_combo):
        combo, size = best_combo[r], best_size[r]
        shown = ", ".join(combo)
        others = "no other record shares" if size == 1 else f"only {size} records share"
        out.add(
            ids[r],
            score=1.0 - (size - 1) / k,
            severity="warning",
            message=f"re-identifiable: {others} its values of {shown} (k-anonymity below {k})",
            group_id=f"k_anonymity:{'+'.join(combo)}:{best_class[r]}",
            evidence={"columns": list(combo), "quasi_identifiers": quasi, "class_size": size, "k": k},
        )


@register
class PiiCheck(Check):
    """Personal data in texts, direct-identifier columns and records below k-anonymity."""

    name = "pii"
    description = (
        "Personal data and secrets in texts (e-mails, phones, cards, IBANs, SSNs, IPs, addresses, "
        "keys, names, places; shown masked), identifying columns and re-identifiable records "
        "(k-anonymity of quasi-identifiers)."
    )

    def applies(self, context: Context) -> str | None:
        """Needs a text column or other flat columns."""
        if context.dataset.roles.text is not None or _tabular_columns(context):
            return None
        return "no text or tabular columns"

    def run(self, context: Context) -> pa.Table:
        """Report texts with personal data, identifier columns, then rare quasi-identifier values."""
        settings = pii_settings(context)
        out = FindingsBuilder(self.name)
        # (Image data with a caption column streams its images, not the captions, through the engine.)
        if context.dataset.modality == "text":
            ner_on, why = ner_status(settings)
            if not ner_on and settings.ner and NER_TYPES & set(settings.entity_types):
                _note(context, f"PERSON and LOCATION not looked for: {why}")
            _text_findings(context, out)
        direct = _identifier_findings(context, settings, out)
        _k_anonymity_findings(context, settings, direct, out)
        return out.table()
