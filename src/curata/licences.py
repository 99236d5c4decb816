"""Licences: SPDX expressions parsed and normalised, their obligations, and an allow/deny policy.

Parsing uses the ``license-expression`` library's SPDX licence list (which also knows the
ScanCode ``LicenseRef-scancode-*`` keys). Before a value is given up as unknown, curata tries the
spellings people write in metadata: ``Apache 2.0``, ``MIT License``, ``CC BY-SA 4.0``, ``Creative
Commons Attribution 4.0 International``, ``GPLv3``, ``GNU GPL v3 or later``, ``CC0``, ``ODbL``...
Each operand of an expression is matched separately, so ``MIT or Apache 2.0`` works too.

Normalisation rules (applied in this order):

1. Null, empty and placeholder values (``unknown``, ``n/a``, ``none``, ``null``, ``nan``, ``-``,
   ``?``, ``NOASSERTION``) mean *missing*: no licence was stated.
2. ``public domain`` (any spelling) becomes ``LicenseRef-Public-Domain``. It is not turned into
   ``CC0-1.0``: CC0 is one legal instrument (a waiver with a fallback licence), while a public
   domain statement depends on the jurisdiction. Both carry no obligations here.
3. A valid SPDX expression (any case, deprecated ids such as ``GPL-3.0`` and the ``+`` suffix
   included) is normalised by ``license-expression``: ``apache-2.0 and mit`` -> ``Apache-2.0 AND MIT``.
4. Otherwise each operand is rewritten to a canonical key (lower case; ``licence``/``license``,
   ``version``, ``the``, ``international``... dropped; ``creative commons`` -> ``cc``,
   ``attribution`` -> ``by``, ``share-alike`` -> ``sa``, ``non-commercial`` -> ``nc``,
   ``no derivatives`` -> ``nd``, ``GNU General Public`` -> ``gpl``; ``v3`` -> ``3``; a bare major
   version gets ``.0``) and looked up among the SPDX ids canonicalised the same way, plus a few
   short names (``CC0``, ``ODbL``, ``ODC-By``, ``PDDL``, ``BSD-2``, ``BSD-3``). ``or later``
   becomes the SPDX ``+``.
5. Anything else is *unknown*, including an ambiguous name without a version (``CC BY``, ``BSD``;
   a bare ``GPL`` is ``GPL-1.0-or-later``, as the GPL itself reads it) and a custom
   ``LicenseRef-...`` that curata cannot know the terms of.

Obligations of an expression: ``AND`` takes the union (every licence applies); ``OR`` takes the
least restrictive alternative, since the user may choose: the one with known obligations whose
summed weight is lowest (attribution 1, share-alike 3, copyleft 3, non-commercial 5,
no-derivatives 5), the first listed on a tie. ``WITH`` keeps the licence's obligations (exceptions
only relax them).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from curata.errors import ConfigError

Obligation = Literal["attribution", "share-alike", "copyleft", "non-commercial", "no-derivatives"]
#: Obligations in the order reports list them.
OBLIGATIONS: tuple[Obligation, ...] = (
    "attribution",
    "share-alike",
    "copyleft",
    "non-commercial",
    "no-derivatives",
)
#: How much each obligation restricts a user; picks the alternative of an ``OR``.
OBLIGATION_WEIGHT: dict[str, int] = {
    "attribution": 1,
    "share-alike": 3,
    "copyleft": 3,
    "non-commercial": 5,
    "no-derivatives": 5,
}

PUBLIC_DOMAIN = "LicenseRef-Public-Domain"
#: Licence ids curata knows although they are not on the SPDX list.
CUSTOM_IDS: tuple[str, ...] = (PUBLIC_DOMAIN,)

#: Values that mean "no licence stated" (compared lower-cased).
PLACEHOLDERS: frozenset[str] = frozenset(
    {"unknown", "n/a", "na", "none", "null", "nan", "-", "?", "noassertion", "not specified", "unspecified"}
)
_PUBLIC_DOMAIN_RE = re.compile(r"^(the\s+)?public[\s_-]*domain(\s+(dedication|mark))?$|^pd$", re.IGNORECASE)

_NO_OBLIGATIONS = frozenset(
    {
        "CC0-1.0",
        "Unlicense",
        "0BSD",
        "PDDL-1.0",
        "WTFPL",
        "MIT-0",
        "CC-PDDC",
        PUBLIC_DOMAIN,
        "LicenseRef-scancode-public-domain",
    }
)
_ATTRIBUTION_ONLY = frozenset(
    {
        "MIT",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "BSD-3-Clause-Clear",
        "Apache-2.0",
        "Apache-1.1",
        "ISC",
        "Zlib",
        "BSL-1.0",
        "X11",
        "NCSA",
        "PostgreSQL",
        "Python-2.0",
        "AFL-3.0",
        "ECL-2.0",
        "ODC-By-1.0",
        "CDLA-Permissive-1.0",
        "CDLA-Permissive-2.0",
        "Unicode-3.0",
        "OFL-1.1",
    }
)
_SHARE_ALIKE = frozenset({"ODbL-1.0", "CDLA-Sharing-1.0"})
_CC_RE = re.compile(r"^CC-BY((?:-NC)?)((?:-SA|-ND)?)-\d")
_COPYLEFT_RE = re.compile(r"^(AGPL|GPL|LGPL|MPL|EPL|EUPL|CDDL|OSL|GFDL|CECILL)-")

#: Short names that canonical keys alone do not reach.
_SHORT_NAMES: dict[str, str] = {
    "CC0": "CC0-1.0",
    "ODbL": "ODbL-1.0",
    "ODC-By": "ODC-By-1.0",
    "ODC By": "ODC-By-1.0",
    "PDDL": "PDDL-1.0",
    "BSD-2": "BSD-2-Clause",
    "BSD-3": "BSD-3-Clause",
    "Simplified BSD": "BSD-2-Clause",
    "New BSD": "BSD-3-Clause",
    "Modified BSD": "BSD-3-Clause",
    "Boost": "BSL-1.0",
}

#: (pattern, replacement) applied to a lower-cased operand before it is canonicalised.
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"creative\s+commons", "cc"),
        (r"\battribution\b", "by"),
        (r"share[\s-]*alike", "sa"),
        (r"non[\s-]*commercial", "nc"),
        (r"no[\s-]*deriv(ative)?s", "nd"),
        (r"gnu\s+affero\s+general\s+public", "agpl"),
        (r"gnu\s+(lesser|library)\s+general\s+public", "lgpl"),
        (r"(gnu\s+)?general\s+public", "gpl"),
        (r"\bgnu\s+", ""),
        (r"mozilla\s+public", "mpl"),
        (r"eclipse\s+public", "epl"),
        (r"open\s+data\s+commons\s+open\s+database", "odbl"),
        (r"open\s+data\s+commons\s+attribution", "odc-by"),
        (r"\blicen[cs]e[sd]?\b", " "),
        (r"\b(the|version|international|unported|generic)\b", " "),
    )
)
_OR_LATER_RE = re.compile(r"[\s,-]+or[\s-]+(any[\s-]+)?later([\s-]+version)?", re.IGNORECASE)
_OPERATOR_RE = re.compile(r"(\(|\)|\s+(?:and|or|with)\s+)", re.IGNORECASE)


def _canon(text: str) -> str:
    """A canonical key: lower case, filler words dropped, one dash between parts, ``3`` -> ``3.0``."""
    s = text.lower().replace("_", "-")
    for pattern, replacement in _PHRASES:
        s = pattern.sub(replacement, s)
    s = re.sub(r"(?<=[a-z])\s*v(?=\d)|\bv(?=\d)", "-", s)
    s = re.sub(r"(?<=[a-z]{3})(?=\d)", "-", s)
    parts = [p for p in re.split(r"[^a-z0-9.+]+", s) if p]
    # A bare major version after a name gets ".0" ("gpl 3" -> "gpl-3.0"); both sides get the same.
    parts = [
        p + ".0" if p.isdigit() and i > 0 and not parts[i - 1].isdigit() else p for i, p in enumerate(parts)
    ]
    return "-".join(parts)


@cache
def _licensing() -> Any:
    """The SPDX ``Licensing`` of ``license-expression`` (loading its licence index takes ~0.3 s)."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


@cache
def _spdx_ids() -> dict[str, str]:
    """SPDX licence ids (no exceptions, no ScanCode refs) by lower-cased id."""
    out: dict[str, str] = {}
    for key, symbol in _licensing().known_symbols.items():
        if not symbol.is_exception and not key.startswith("LicenseRef-"):
            out[key.lower()] = key
    return out


@cache
def _canonical_index() -> dict[str, str]:
    """Canonical key -> SPDX id, for every listed id, its aliases and the short names."""
    index: dict[str, str] = {}
    for key, symbol in _licensing().known_symbols.items():
        if symbol.is_exception or key.startswith("LicenseRef-"):
            continue
        for name in (key, *[a for a in symbol.aliases if not a.startswith("LicenseRef-")]):
            index.setdefault(_canon(name), key)
    for name, key in _SHORT_NAMES.items():
        index[_canon(name)] = key
    return index


_CUSTOM_LOWER = frozenset(c.lower() for c in CUSTOM_IDS)


def _is_known_id(key: str) -> bool:
    return key in _licensing().known_symbols or key.lower() in _CUSTOM_LOWER


def licence_obligations(licence_id: str) -> tuple[Obligation, ...] | None:
    """The obligations of one licence id (in ``OBLIGATIONS`` order); None when curata does not know them."""
    found: set[str]
    if licence_id in _NO_OBLIGATIONS:
        found = set()
    elif licence_id in _ATTRIBUTION_ONLY:
        found = {"attribution"}
    elif licence_id in _SHARE_ALIKE:
        found = {"attribution", "share-alike"}
    elif (m := _CC_RE.match(licence_id)) is not None:
        found = {"attribution"}
        if m.group(1):
            found.add("non-commercial")
        if m.group(2) == "-SA":
            found.add("share-alike")
        elif m.group(2) == "-ND":
            found.add("no-derivatives")
    elif _COPYLEFT_RE.match(licence_id):
        found = {"attribution", "copyleft"}
    else:
        return None
    return tuple(o for o in OBLIGATIONS if o in found)


def _weight(obligations: Iterable[str]) -> int:
    return sum(OBLIGATION_WEIGHT[o] for o in obligations)


def _node_obligations(node: Any) -> tuple[frozenset[str], bool]:
    """Obligations of a parsed expression node and whether every licence in it is known."""
    from license_expression import AND, OR, LicenseWithExceptionSymbol

    if isinstance(node, LicenseWithExceptionSymbol):
        node = node.license_symbol
    if isinstance(node, AND):
        parts = [_node_obligations(a) for a in node.args]
        return frozenset().union(*(p[0] for p in parts)), all(p[1] for p in parts)
    if isinstance(node, OR):
        parts = [_node_obligations(a) for a in node.args]
        # The least restrictive alternative the user may pick; an unknown one is never preferred.
        return min(parts, key=lambda p: (not p[1], _weight(p[0])))
    known = licence_obligations(str(node.key))
    return (frozenset(), False) if known is None else (frozenset(known), True)


@dataclass(frozen=True)
class ParsedLicence:
    """One licence value, normalised.

    ``status``: ``ok`` (a valid expression of licences curata recognises), ``missing`` (nothing
    stated) or ``unknown`` (not parsable, or naming licences curata does not recognise; then
    ``problem`` says which). ``expression`` is the normalised SPDX expression when the syntax was
    valid; ``licences`` the licence ids in it (exceptions left out).
    """

    raw: str | None
    status: Literal["ok", "missing", "unknown"]
    expression: str | None = None
    licences: tuple[str, ...] = ()
    unknown_ids: tuple[str, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    obligations_known: bool = False
    problem: str | None = None

    @property
    def label(self) -> str:
        """What reports show: the normalised expression, else the raw value, else ``(missing)``."""
        if self.status == "missing":
            return "(missing)"
        if self.status == "ok" and self.expression:
            return self.expression
        return self.raw or "(missing)"


def _try_parse(text: str) -> Any | None:
    """Parse ``text`` as an SPDX expression (unknown ids allowed); None when the syntax is invalid."""
    try:
        return _licensing().parse(text, validate=False)
    except Exception:  # license-expression raises several unrelated types on bad syntax
        return None


def _rewrite_operands(text: str) -> str:
    """Replace each operand of ``text`` with the SPDX id its canonical key names, where one does."""
    text = _OR_LATER_RE.sub("+", text)
    index = _canonical_index()
    pieces = _OPERATOR_RE.split(text)
    out: list[str] = []
    for piece in pieces:
        stripped = piece.strip()
        if not stripped or _OPERATOR_RE.fullmatch(piece) or stripped in "()":
            out.append(f" {stripped.upper()} " if stripped.lower() in ("and", "or", "with") else stripped)
            continue
        plus = stripped.endswith("+")
        base = stripped.rstrip("+").strip()
        key = PUBLIC_DOMAIN if _PUBLIC_DOMAIN_RE.match(base) else index.get(_canon(base))
        if key and plus:
            later = _spdx_ids().get(key.removesuffix("-only").lower() + "-or-later")
            key = later or key + "+"
        out.append(key or stripped)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _symbols(parsed: Any) -> list[str]:
    """Licence ids in a parsed expression, in order, without exceptions or repeats."""
    keys: list[str] = []
    for symbol in _licensing().license_symbols(parsed, unique=True, decompose=True):
        if not getattr(symbol, "is_exception", False) and symbol.key not in keys:
            keys.append(str(symbol.key))
    return keys


def _from_parsed(raw: str, parsed: Any) -> ParsedLicence:
    keys = _symbols(parsed)
    unknown = tuple(k for k in keys if not _is_known_id(k))
    expression = str(parsed)
    if unknown:
        listed = ", ".join(unknown)
        return ParsedLicence(
            raw,
            "unknown",
            expression=expression,
            licences=tuple(keys),
            unknown_ids=unknown,
            problem=f"unknown licence id: {listed}",
        )
    obligations, known = _node_obligations(parsed)
    return ParsedLicence(
        raw,
        "ok",
        expression=expression,
        licences=tuple(keys),
        obligations=tuple(o for o in OBLIGATIONS if o in obligations),
        obligations_known=known,
    )


@lru_cache(maxsize=65536)
def _parse_text(raw: str) -> ParsedLicence:
    text = re.sub(r"\s+", " ", raw).strip()
    if not text or text.lower() in PLACEHOLDERS:
        return ParsedLicence(raw or None, "missing")
    if _PUBLIC_DOMAIN_RE.match(text):
        text = PUBLIC_DOMAIN
    first = _try_parse(text)
    if first is not None and not any(not _is_known_id(k) for k in _symbols(first)):
        return _from_parsed(raw, first)
    rewritten = _rewrite_operands(text)
    second = _try_parse(rewritten) if rewritten != text else None
    if second is not None and not any(not _is_known_id(k) for k in _symbols(second)):
        return _from_parsed(raw, second)
    if first is not None:
        # Valid syntax naming something curata does not recognise (e.g. a custom LicenseRef).
        return _from_parsed(raw, first)
    return ParsedLicence(raw, "unknown", problem="not a valid SPDX licence expression")


def parse_licence(value: object) -> ParsedLicence:
    """Parse and normalise one licence value (any type; None and NaN are missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ParsedLicence(None, "missing")
    return _parse_text(str(value))


def normalise_licence_id(text: str) -> str | None:
    """The SPDX id (or ``LicenseRef-...``) one licence name stands for, or None when unknown.

    ``LicenseRef-`` ids are custom licences and returned as given.
    """
    parsed = parse_licence(text)
    if parsed.status == "ok" and len(parsed.licences) == 1 and parsed.expression == parsed.licences[0]:
        return parsed.licences[0]
    stripped = text.strip()
    if re.fullmatch(r"LicenseRef-[A-Za-z0-9.\-]+", stripped):
        return stripped
    return None


# --- policy --------------------------------------------------------------------------------------


def _as_entries(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"licence {name} must be a list of SPDX licence ids, got {type(value).__name__} {value!r}; "
            f"write e.g. {name}: [MIT, Apache-2.0]"
        )
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class LicenceSettings:
    """The licence policy: ``allow`` (None: any licence) and ``deny`` lists of licence ids.

    Entries are normalised on construction (``apache 2.0`` -> ``Apache-2.0``); ``deny`` may also
    name an obligation (``non-commercial``, ``no-derivatives``, ``share-alike``, ``copyleft``,
    ``attribution``) to deny every licence that carries it. Unknown entries raise ConfigError.
    """

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown: list[str] = []
        allow: tuple[str, ...] | None = None
        if self.allow is not None:
            allow_ids = []
            for entry in _as_entries(self.allow, "allow"):
                key = normalise_licence_id(entry)
                if key is None:
                    unknown.append(entry)
                elif key not in allow_ids:
                    allow_ids.append(key)
            allow = tuple(allow_ids)
        deny_ids: list[str] = []
        for entry in _as_entries(self.deny, "deny"):
            lowered = entry.strip().lower()
            denied = lowered if lowered in OBLIGATIONS else normalise_licence_id(entry)
            if denied is None:
                unknown.append(entry)
            elif denied not in deny_ids:
                deny_ids.append(denied)
        if unknown:
            raise ConfigError(
                f"licence policy names unknown licence id(s) or expressions: "
                f"{', '.join(repr(u) for u in unknown)}; give one licence id per entry: "
                "an SPDX id (https://spdx.org/licenses/, e.g. MIT, Apache-2.0, CC-BY-4.0), "
                f"LicenseRef-<name> for a custom licence, or an obligation in deny ({', '.join(OBLIGATIONS)})"
            )
        both = sorted(set(allow or ()) & set(deny_ids))
        if both:
            raise ConfigError(
                f"licence(s) {', '.join(both)} are on both the allow and the deny list; keep one"
            )
        object.__setattr__(self, "allow", allow)
        object.__setattr__(self, "deny", tuple(deny_ids))

    @classmethod
    def from_value(cls, value: object) -> LicenceSettings:
        """Settings from None (no lists), a LicenceSettings, or a mapping with ``allow``/``deny``."""
        if value is None:
            return cls()
        if isinstance(value, LicenceSettings):
            return value
        if isinstance(value, Mapping):
            extra = sorted(set(map(str, value)) - {"allow", "deny"})
            if extra:
                raise ConfigError(f"unknown licence setting(s) {', '.join(extra)}: expected allow and deny")
            allow = value.get("allow")
            return cls(
                allow=None if allow is None else _as_entries(allow, "allow"),
                deny=_as_entries(value.get("deny") or (), "deny"),
            )
        raise ConfigError(f"licence settings must be a mapping with allow/deny, got {type(value).__name__}")

    @property
    def has_policy(self) -> bool:
        """Whether any list is set."""
        return self.allow is not None or bool(self.deny)


@dataclass(frozen=True)
class PolicyVerdict:
    """Why a licence breaks the policy: ``rule`` (``deny`` or ``allow``) and the licences at fault."""

    rule: Literal["deny", "allow"]
    licences: tuple[str, ...]
    reasons: tuple[str, ...]


def _symbol_faults(key: str, settings: LicenceSettings) -> tuple[list[str], list[str]]:
    """The deny-list entries ``key`` hits, and whether it misses the allow list (``["allow"]``)."""
    denied = [key] if key in settings.deny else []
    obligations = licence_obligations(key) or ()
    denied += [o for o in obligations if o in settings.deny]
    unlisted = ["allow"] if settings.allow is not None and key not in settings.allow else []
    return denied, unlisted


def _node_verdict(node: Any, settings: LicenceSettings) -> list[tuple[str, str]] | None:
    """None when the expression is acceptable, else (licence, reason) pairs that make it fail."""
    from license_expression import AND, OR, LicenseWithExceptionSymbol

    if isinstance(node, LicenseWithExceptionSymbol):
        node = node.license_symbol
    if isinstance(node, AND | OR):
        results = [_node_verdict(a, settings) for a in node.args]
        failures = [r for r in results if r is not None]
        if isinstance(node, OR) and len(failures) < len(results):
            return None  # the user may choose an acceptable alternative
        return [pair for r in failures for pair in r] or None
    key = str(node.key)
    denied, unlisted = _symbol_faults(key, settings)
    if denied:
        return [(key, "deny:" + d) for d in denied]
    if unlisted:
        return [(key, "allow")]
    return None


def policy_verdict(parsed: ParsedLicence, settings: LicenceSettings) -> PolicyVerdict | None:
    """None when ``parsed`` passes the policy, else which rule it breaks and the licences at fault.

    Only for parsable licences (``parsed.expression`` set). ``AND``: every licence must pass;
    ``OR``: one alternative passing is enough.
    """
    if not settings.has_policy or parsed.expression is None:
        return None
    faults = _node_verdict(_licensing().parse(parsed.expression, validate=False), settings)
    if not faults:
        return None
    rule: Literal["deny", "allow"] = "deny" if any(r.startswith("deny:") for _, r in faults) else "allow"
    licences = tuple(dict.fromkeys(k for k, _ in faults))
    reasons = tuple(dict.fromkeys(r for _, r in faults))
    return PolicyVerdict(rule, licences, reasons)


# --- summaries -----------------------------------------------------------------------------------


#: scheme://[user@][www.]HOST, run by Arrow over the whole column (``urlsplit`` per value is far
#: slower on millions of URLs).
_HOST_PATTERN = r"^(?i:[a-z][a-z0-9+.-]*)://(?:[^@/?#]*@)?(?i:www\.)?(?P<host>[^/:?#@]+)"
#: Most frequent sources and hosts listed in a summary.
TOP_SOURCES = 10

ValueCounts = Mapping[Any, int]


def _value_counts(values: Iterable[object] | ValueCounts) -> Counter[str | None]:
    """Counts per value (as a string; None for null) of a sequence or an existing value -> count map."""
    counts: Counter[str | None] = Counter()
    items = values.items() if isinstance(values, Mapping) else ((v, 1) for v in values)
    for value, n in items:
        counts[None if value is None else str(value)] += int(n)
    return counts


def _top(counts: pa.StructArray, k: int) -> dict[str, int]:
    """The ``k`` most frequent values of a ``value_counts`` result, most frequent first."""
    order = pc.array_sort_indices(counts.field("counts"), order="descending")[:k]
    top = counts.take(order)
    return dict(zip(top.field("values").to_pylist(), top.field("counts").to_pylist(), strict=True))


def summarise_sources(
    sources: Iterable[object] | pa.Array | pa.ChunkedArray, exclude: str | None = None
) -> dict[str, Any]:
    """Counts of distinct provenance values, the most frequent ones, and (for URLs) their hosts.

    ``sources`` holds one value per record; null, blank and ``exclude`` values name no source.
    Counted in Arrow, so a column of millions of distinct URLs stays cheap.
    """
    if isinstance(sources, pa.Array | pa.ChunkedArray):
        col = sources if pa.types.is_string(sources.type) else pc.cast(sources, pa.string())
    else:
        col = pa.array([None if v is None else str(v) for v in sources], pa.string())
    col = pc.utf8_trim_whitespace(col)
    keep = pc.fill_null(pc.not_equal(col, ""), False)
    if exclude:
        keep = pc.and_(keep, pc.not_equal(col, exclude))
    named = col.filter(keep)
    counts = pc.value_counts(named)
    out: dict[str, Any] = {
        "records_with_source": len(named),
        "distinct": len(counts),
        "top": _top(counts, TOP_SOURCES),
    }
    hosts = pc.utf8_lower(pc.struct_field(pc.extract_regex(named, _HOST_PATTERN), [0])).drop_null()
    if len(hosts):
        host_counts = pc.value_counts(hosts)
        out["hosts"] = _top(host_counts, TOP_SOURCES)
        out["distinct_hosts"] = len(host_counts)
    return out


def summarise_licences(
    licences: Iterable[object] | ValueCounts,
    sources: Iterable[object] | pa.Array | pa.ChunkedArray | None = None,
) -> dict[str, Any]:
    """The dataset-level licence summary: records per licence, obligations, problems, sources.

    ``licences`` holds one value per record, or maps each value to its number of records;
    ``sources`` one value per record (see ``summarise_sources``). ``dataset_obligations`` is the
    union over every record's obligations: what a user of the whole dataset must honour.
    ``unknown_obligations`` lists recognised licences whose terms curata has no table entry for
    (check them by hand).
    """
    counts: Counter[str] = Counter()
    parsed_by_label: dict[str, ParsedLicence] = {}
    for raw, n in _value_counts(licences).items():
        parsed = parse_licence(raw)
        counts[parsed.label] += n
        parsed_by_label.setdefault(parsed.label, parsed)
    ok = {label: p for label, p in parsed_by_label.items() if p.status == "ok"}
    dataset_obligations = {o for p in ok.values() for o in p.obligations}
    by_obligation = {o: sum(counts[lbl] for lbl, p in ok.items() if o in p.obligations) for o in OBLIGATIONS}
    ids = sorted({k for p in ok.values() for k in p.licences})
    out: dict[str, Any] = {
        "records": sum(counts.values()),
        "licences": dict(counts.most_common()),
        "missing": sum(n for lbl, n in counts.items() if parsed_by_label[lbl].status == "missing"),
        "unknown": sum(n for lbl, n in counts.items() if parsed_by_label[lbl].status == "unknown"),
        "unknown_values": {
            lbl: n for lbl, n in counts.most_common() if parsed_by_label[lbl].status == "unknown"
        },
        "obligations": {lbl: (list(p.obligations) if p.obligations_known else None) for lbl, p in ok.items()},
        "dataset_obligations": [o for o in OBLIGATIONS if o in dataset_obligations],
        "records_by_obligation": {o: n for o, n in by_obligation.items() if n},
        "unknown_obligations": sorted(k for k in ids if licence_obligations(k) is None),
        "spdx_ids": ids,
    }
    if sources is not None:
        out["sources"] = summarise_sources(sources)
    return out


# --- identifiers for other vocabularies -------------------------------------------------------------

#: Licence ids the Hugging Face Hub accepts in a dataset card's ``license`` field.
# fmt: off
HF_LICENCES: frozenset[str] = frozenset({
    "apache-2.0", "mit", "openrail", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause",
    "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5",
    "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0",
    "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0",
    "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc",
    "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl",
})
# fmt: on
_HF_RENAMES: dict[str, str] = {"odbl-1.0": "odbl", "odc-by-1.0": "odc-by", "pddl-1.0": "pddl"}


def hf_licence_id(licence_id: str) -> str:
    """The Hugging Face card id for an SPDX id (lower case, ``-only`` dropped), else ``other``."""
    key = licence_id.lower()
    key = _HF_RENAMES.get(key, key)
    if key.startswith("gfdl-"):
        key = "gfdl"
    key = key.removesuffix("-only")
    return key if key in HF_LICENCES else "other"


def spdx_url(licence_id: str) -> str | None:
    """The SPDX page of a listed licence id (None for custom ``LicenseRef-`` ids)."""
    if licence_id.startswith("LicenseRef-") or licence_id.lower() not in _spdx_ids():
        return None
    return f"https://spdx.org/licenses/{licence_id}.html"
