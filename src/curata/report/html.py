"""Render ``report.json`` and each check's worst examples as one self-contained HTML page.

The page makes no external requests: CSS and a few lines of JavaScript are inline, charts are
inline SVG and images are embedded only as ``data:image/...`` URIs (anything else is dropped).
All user data goes through Jinja2 autoescaping or ``markupsafe.escape``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from markupsafe import Markup, escape

from curata.report import charts
from curata.report.embedding_map import OTHER_LABEL_COLOUR, label_colours, map_view, order_labels

#: Longest text shown for one record; longer texts are cut and say how much was left out.
TEXT_LIMIT = 1000
#: Longest ``data:`` URI embedded for one image (about 300 KB of PNG); larger ones are left out.
IMAGE_URI_LIMIT = 400_000
#: Labels drawn individually in the label charts before the rest is summed into "other".
TOP_LABELS = 30
#: Distinct duplicate-cluster sizes drawn before larger sizes are summed into one column.
MAX_CLUSTER_COLUMNS = 15

SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
_SEVERITY_COLOURS = {"error": "#d93025", "warning": "#e8a200", "info": "#1a73e8"}
_IMAGE_URI = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp|bmp);base64,[A-Za-z0-9+/=\s]*$")
_TOKEN = re.compile(r"\w+|[^\w\s]|\s+")
#: Longest text shown in a small card (label issues, cluster members).
CARD_TEXT_LIMIT = 360
#: Colour of rare classes in the label charts.
RARE_COLOUR = "#e15759"
#: Column headings of the two records of a pair finding, per check.
_PAIR_ROLES: dict[str, tuple[str, str]] = {
    "exact_duplicate": ("record", "copy of"),
    "near_duplicate": ("record", "near duplicate of"),
    "semantic_duplicate": ("record", "same meaning as"),
    "split_leakage": ("record", "also in another split"),
    "conflicting_labels": ("record", "same content, other label"),
    "contamination": ("record", "in the reference set"),
    "outlier": ("outlier", "its nearest record"),
}
#: Checks whose two records are not copies of each other: their shared words are not marked.
_UNRELATED_PAIRS = ("outlier",)
#: How the examples of a check are laid out (default: a list of single records and pairs).
_LAYOUTS = {
    "label_issue": "gallery",
    "low_quality": "gallery",
    "underrepresented": "clusters",
    "class_imbalance": "classes",
}
#: Heading above a gallery of examples, per check.
_GALLERY_TITLES = {"label_issue": "Likely wrong labels", "low_quality": "Lowest quality"}
#: The metric behind each low-quality reason (reasons whose limit names its metric need none).
_QUALITY_METRIC: dict[str, str] = {
    "too_short": "n_words",
    "non_alphabetic": "alpha_words",
    "symbols": "symbol_ratio",
    "word_length": "mean_word_length",
    "repeated_lines": "dup_line_frac",
    "gibberish": "gibberish",
    "tiny": "width",
    "aspect": "aspect",
    "flat": "colour_std",
    "dark": "brightness",
    "bright": "brightness",
    "low_contrast": "contrast",
    "low_information": "entropy",
    "blurry": "blur",
}


def _licence_view(raw: Any) -> dict[str, Any] | None:
    """Rows of licence, records and obligations, and what the whole dataset obliges its users to."""
    summary = _mapping(raw)
    if not summary:
        return None
    obligations = _mapping(summary.get("obligations"))
    counts = _mapping(summary.get("licences"))
    rows = [
        {"licence": str(name), "records": n, "obligations": ", ".join(map(str, obligations.get(name) or []))}
        for name, n in sorted(counts.items(), key=lambda kv: -int(kv[1] or 0))
    ]
    sources = _mapping(summary.get("sources"))
    return {
        "rows": rows,
        "records": summary.get("records"),
        "missing": summary.get("missing", 0),
        "unknown": summary.get("unknown", 0),
        "dataset_obligations": [str(o) for o in summary.get("dataset_obligations") or []],
        "hosts": sources.get("distinct_hosts"),
        "with_source": sources.get("records_with_source"),
    }


def render_html(report: dict[str, Any], examples: dict[str, list[dict[str, Any]]]) -> str:
    """Return the whole report page as an HTML string.

    ``report`` is the content of ``report.json``; ``examples`` maps a check name to its worst
    findings (already sorted), each with ``record`` and optional ``related`` record details.
    """
    context = build_context(report, examples)
    return _environment().get_template("report.html.j2").render(**context)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The Jinja2 environment reading templates from the package data (autoescape on)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("curata.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _fmt_num
    env.filters["secs"] = _fmt_seconds
    return env


# --------------------------------------------------------------------------- formatting


def _fmt_num(value: Any) -> str:
    """Format a number with thousands separators; other values are shown as they are."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.3g}"
    return str(value)


def _fmt_seconds(value: Any) -> str:
    """Format a duration in seconds compactly (``0.04 s``, ``3.2 s``, ``2 min 5 s``)."""
    try:
        s = float(value)
    except (TypeError, ValueError):
        return "—"
    if s < 0.01:
        return "<0.01 s"
    if s < 10:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"


def _as_int(value: Any) -> int:
    """Coerce a count to int (``None`` and junk count as 0)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _mapping(value: Any) -> Mapping[str, Any]:
    """Return ``value`` when it is a mapping, else an empty one (report sections may be missing)."""
    return value if isinstance(value, Mapping) else {}


def _counts(mapping: Any) -> dict[str, int]:
    """Turn a ``{name: count}`` mapping (maybe missing) into ``dict[str, int]``."""
    if not isinstance(mapping, Mapping):
        return {}
    return {str(k): _as_int(v) for k, v in mapping.items()}


# --------------------------------------------------------------------------- texts


def truncate(text: str, limit: int = TEXT_LIMIT) -> tuple[str, int]:
    """Cut ``text`` to about ``limit`` characters (at a space when one is near).

    Returns the kept text and how many characters were left out.
    """
    if len(text) <= limit:
        return text, 0
    cut = text.rfind(" ", limit - 80, limit)
    cut = cut if cut > 0 else limit
    return text[:cut], len(text) - cut


def _token_key(token: str) -> str:
    """Comparison key of a token: whitespace runs are equal, words compare case-insensitively."""
    return " " if token.isspace() else token.lower()


def highlight_shared(a: str, b: str) -> tuple[Markup, Markup]:
    """Escape two texts and wrap the word runs they share in ``<mark>``.

    Uses ``difflib.SequenceMatcher`` on word/punctuation/space tokens; a matching run is marked
    from its first to its last word, so runs of only spaces or punctuation stay unmarked.
    """
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    shared_a, shared_b = [False] * len(ta), [False] * len(tb)
    matcher = difflib.SequenceMatcher(None, [_token_key(t) for t in ta], [_token_key(t) for t in tb], False)
    for block in matcher.get_matching_blocks():
        lo, hi = 0, block.size
        while lo < hi and not _is_word(ta[block.a + lo]):
            lo += 1
        while hi > lo and not _is_word(ta[block.a + hi - 1]):
            hi -= 1
        for k in range(lo, hi):
            shared_a[block.a + k] = True
            shared_b[block.b + k] = True
    return _marked(ta, shared_a), _marked(tb, shared_b)


def _is_word(token: str) -> bool:
    """Whether a token holds a letter or digit."""
    return any(ch.isalnum() for ch in token)


def _marked(tokens: list[str], shared: list[bool]) -> Markup:
    """Join escaped tokens, wrapping each run of shared tokens in one ``<mark>``."""
    out: list[str] = []
    open_ = False
    for token, on in zip(tokens, shared, strict=True):
        if on and not open_:
            out.append("<mark>")
            open_ = True
        elif not on and open_:
            out.append("</mark>")
            open_ = False
        out.append(str(escape(token)))
    if open_:
        out.append("</mark>")
    return Markup("".join(out))


# --------------------------------------------------------------------------- examples


def safe_image_uri(value: Any) -> str | None:
    """Return ``value`` when it is an embeddable ``data:image/...;base64`` URI, else None."""
    if not isinstance(value, str) or len(value) > IMAGE_URI_LIMIT:
        return None
    return value if _IMAGE_URI.match(value) else None


def _side(record: Any, fallback_id: Any) -> dict[str, Any]:
    """View model of one record shown in an example (ids, label, split, image, text)."""
    rec: Mapping[str, Any] = record if isinstance(record, Mapping) else {}
    image = rec.get("image")
    uri = safe_image_uri(image)
    text = rec.get("text")
    return {
        "id": str(rec.get("record_id") or fallback_id or "?"),
        "label": None if rec.get("label") is None else str(rec.get("label")),
        "split": None if rec.get("split") is None else str(rec.get("split")),
        "dataset": str(rec.get("dataset") or "data"),
        "image": uri,
        "image_dropped": image is not None and uri is None,
        "has_text": text is not None,
        "text": None if text is None else str(text),
        "text_html": Markup(""),
        "text_cut": 0,
        "text_blank": None
        if text is None or str(text).strip()
        else ("empty text" if not text else "whitespace-only text"),
    }


def _evidence(finding: Mapping[str, Any]) -> Mapping[str, Any]:
    """A finding's evidence as a mapping (it is stored as a JSON string; junk gives {})."""
    raw = finding.get("evidence")
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str) and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, Mapping) else {}
    return {}


def _fmt_metric(value: Any) -> str:
    """A metric value, short: integers as they are, other numbers to three significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return f"{int(value):,}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{_fmt_metric(value[0])}–{_fmt_metric(value[1])}"  # a range
    return str(value)


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN is no value


def _relabel(evidence: Mapping[str, Any], colours: Mapping[str, str]) -> dict[str, Any] | None:
    """Given and suggested label of a label issue, with their probabilities and label colours."""
    if "given_label" not in evidence or "suggested_label" not in evidence:
        return None
    given, suggested = str(evidence["given_label"]), str(evidence["suggested_label"])
    p_s = _as_float(evidence.get("suggested_probability"))
    p_g = _as_float(evidence.get("given_label_probability"))
    return {
        "given": given,
        "suggested": suggested,
        "p_suggested": None if p_s is None else f"{p_s:.2f}",
        "p_given": None if p_g is None else f"{p_g:.2f}",
        "bar": 0.0 if p_s is None else round(100 * max(0.0, min(1.0, p_s)), 1),
        "given_colour": colours.get(given, OTHER_LABEL_COLOUR),
        "suggested_colour": colours.get(suggested, OTHER_LABEL_COLOUR),
        "source": str(evidence.get("pred_probs") or ""),
    }


def _metric(name: str, value: str, note: str | None = None, trigger: bool = True) -> dict[str, Any]:
    """One metric chip: ``name`` (bold), ``value``, an optional ``note`` (limit or typical value)."""
    return {"name": name, "value": value, "note": note, "trigger": trigger}


def _outlier_metrics(evidence: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Distance to the nearest records against the typical one, the isolation ratio, the z-score."""
    out: list[dict[str, Any]] = []
    d, med = evidence.get("mean_neighbour_distance"), evidence.get("median_distance")
    if d is not None:
        typical = None if med is None else f"typical {_fmt_metric(med)}"
        out.append(_metric("neighbour distance", _fmt_metric(d), typical, trigger=False))
    if evidence.get("isolation_ratio") is not None:
        out.append(_metric("isolation", f"{_fmt_metric(evidence['isolation_ratio'])}×", "vs. its neighbours"))
    if evidence.get("robust_z") is not None:
        out.append(_metric("robust z", _fmt_metric(evidence["robust_z"]), trigger=False))
    return out


def _quality_metrics(evidence: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per low-quality reason: the metric behind it, its value and the limit it broke."""
    out: list[dict[str, Any]] = []
    limits = evidence.get("limits")
    limits = limits if isinstance(limits, Mapping) else {}
    reasons = evidence.get("reasons")
    for reason in (str(r) for r in (reasons if isinstance(reasons, list) else [])):
        name, limit = reason.replace("_", " "), limits.get(reason)
        if reason == "tiny":
            size = f"{_fmt_metric(evidence.get('width'))}×{_fmt_metric(evidence.get('height'))} px"
            out.append(_metric(name, size, None if limit is None else f"min side {_fmt_metric(limit)}"))
            continue
        if isinstance(limit, Mapping):  # the limit names its metric
            pairs = [(str(k), v) for k, v in limit.items()]
        elif reason in _QUALITY_METRIC:
            pairs = [(_QUALITY_METRIC[reason], limit)]
        else:
            pairs = []
        if not pairs:
            out.append(_metric(name, ""))
        for metric, lim in pairs:
            value = evidence.get(metric)
            shown = "" if value is None else f"{metric.replace('_', ' ')} {_fmt_metric(value)}"
            out.append(_metric(name, shown, None if lim is None else f"limit {_fmt_metric(lim)}"))
    return out


def _metrics(check: str, evidence: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The numbers that made a check flag a record, as metric chips."""
    if check == "outlier":
        return _outlier_metrics(evidence)
    if check == "low_quality":
        return _quality_metrics(evidence)
    cosine = _as_float(evidence.get("cosine"))
    if check in ("semantic_duplicate", "near_duplicate") and cosine is not None:
        return [_metric("cosine similarity", f"{cosine:.3f}")]
    return []


def _example(
    finding: Mapping[str, Any], check: str = "", colours: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """View model of one finding: severity, score, message, one or two record sides, and what the
    check's evidence adds (the relabelling of a label issue, the metrics that triggered it, leakage)."""
    severity = str(finding.get("severity") or "info")
    if severity not in SEVERITIES:
        severity = "info"
    evidence = _evidence(finding)
    sides = [_side(finding.get("record"), finding.get("record_id"))]
    related = finding.get("related")
    if related is not None or finding.get("related_id"):
        sides.append(_side(related, finding.get("related_id")))
    texts = [s for s in sides if s["text"] is not None]
    limit = CARD_TEXT_LIMIT if check in _LAYOUTS else TEXT_LIMIT
    for s in texts:
        s["text"], s["text_cut"] = truncate(s["text"], limit)
    marked = len(sides) == 2 and len(texts) == 2 and check not in _UNRELATED_PAIRS
    if marked:
        sides[0]["text_html"], sides[1]["text_html"] = highlight_shared(sides[0]["text"], sides[1]["text"])
    else:
        for s in texts:
            s["text_html"] = escape(s["text"])
    try:
        score = float(finding.get("score") or 0.0)
    except (TypeError, ValueError):
        score = 0.0
    leak = None
    if len(sides) == 2 and (evidence.get("cross_split") or check == "split_leakage"):
        a, b = sides[0]["split"], sides[1]["split"]
        leak = f"{b} → {a}" if a and b and a != b else "across splits"
    return {
        "severity": severity,
        "score": score,
        "message": str(finding.get("message") or ""),
        "group_id": finding.get("group_id"),
        "pair": len(sides) == 2,
        "marked": marked,
        "sides": sides,
        "roles": _PAIR_ROLES.get(check, ("record", "related")),
        "any_image": any(s["image"] or s["image_dropped"] for s in sides),
        "any_text": any(s["has_text"] for s in sides),
        "relabel": _relabel(evidence, colours or {}) if check == "label_issue" else None,
        "metrics": _metrics(check, evidence),
        "leak": leak,
        "evidence": evidence,
    }


# --------------------------------------------------------------------------- charts


def _cluster_bars(sizes: Mapping[str, int]) -> list[tuple[str, int]]:
    """Duplicate cluster sizes as columns in numeric order, the largest sizes summed into one."""
    parsed: list[tuple[int, int]] = []
    for key, count in sizes.items():
        try:
            parsed.append((int(key), count))
        except ValueError:
            continue
    parsed.sort()
    if len(parsed) <= MAX_CLUSTER_COLUMNS:
        return [(str(size), count) for size, count in parsed]
    head = parsed[: MAX_CLUSTER_COLUMNS - 1]
    rest = parsed[MAX_CLUSTER_COLUMNS - 1 :]
    return [(str(size), count) for size, count in head] + [(f"≥{rest[0][0]}", sum(c for _, c in rest))]


def _charts(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset charts: splits, duplicate cluster sizes, labels and labels by split."""
    out: list[dict[str, Any]] = []
    splits = _counts(stats.get("splits"))
    labels = _counts(stats.get("labels"))
    if splits:
        rows = [(k, v, False) for k, v in splits.items()]
        out.append(
            {
                "title": "Records per split",
                "note": f"{len(splits)} split{'s' if len(splits) != 1 else ''}",
                "svg": charts.hbar_chart(
                    rows, "Records per split", colours=charts.split_colours(list(splits))
                ),
            }
        )
    clusters = _counts(stats.get("duplicate_cluster_sizes"))
    if clusters and any(clusters.values()):
        out.append(
            {
                "title": "Duplicate cluster sizes",
                "note": f"{sum(clusters.values()):,} clusters",
                "svg": charts.column_chart(
                    _cluster_bars(clusters), "Duplicate cluster sizes", x_title="records per cluster"
                ),
            }
        )
    if labels:
        rare = _counts(stats.get("rare_classes"))
        rows = charts.top_n(labels, TOP_LABELS)
        note = f"{len(labels):,} label{'s' if len(labels) != 1 else ''}"
        if len(labels) > TOP_LABELS:
            note += f", top {TOP_LABELS} shown"
        if rare:
            note += f" · {len(rare)} rare in red"
        out.append(
            {
                "title": "Records per label",
                "note": note,
                "svg": charts.hbar_chart(
                    rows,
                    "Records per label",
                    total=sum(labels.values()),
                    colours={name: RARE_COLOUR for name in rare},
                ),
            }
        )
    by_split = stats.get("label_by_split")
    if splits and labels and isinstance(by_split, Mapping) and by_split:
        table = {str(s): _counts(c) for s, c in by_split.items()}
        seg_names = list(splits) + [s for s in table if s not in splits]
        top = [name for name, _, other in charts.top_n(labels, TOP_LABELS) if not other]
        rows_s: list[tuple[str, Mapping[str, int]]] = [
            (name, {s: table.get(s, {}).get(name, 0) for s in seg_names}) for name in top
        ]
        if len(labels) > TOP_LABELS:
            keep = set(top)
            rest = {s: sum(v for k, v in table.get(s, {}).items() if k not in keep) for s in seg_names}
            rows_s.append((f"other ({len(labels) - TOP_LABELS})", rest))
        out.append(
            {
                "title": "Labels by split",
                "note": "share of each label per split",
                "svg": charts.stacked_hbar_chart(rows_s, seg_names, "Labels by split", normalize=True),
            }
        )
    return out


def class_chart(stats: Mapping[str, Any], settings: Mapping[str, Any]) -> Markup:
    """Class sizes as bars with the rare classes in red and the rarity threshold marked.

    With many classes the largest ones are shown, and every rare class (up to ``TOP_LABELS``).
    """
    labels = {k: v for k, v in _counts(stats.get("labels")).items() if k != "(missing)"}
    rare = _counts(stats.get("rare_classes"))
    if not labels:
        return Markup("")
    ordered = sorted(labels.items(), key=lambda kv: -kv[1])
    rare_rows = [(k, v) for k, v in ordered if k in rare][:TOP_LABELS]
    room = max(TOP_LABELS - len(rare_rows), 0)
    common = [(k, v) for k, v in ordered if k not in rare]
    shown = sorted(common[:room] + rare_rows, key=lambda kv: -kv[1])
    rows = [(k, v, False) for k, v in shown]
    left_out = len(labels) - len(shown)
    if left_out:
        rest = sum(v for k, v in common[room:])
        rows.insert(len(common[:room]), (f"other ({left_out})", rest, True))
    model = _mapping(settings.get("model"))
    ratio = _as_float(model.get("rare_class_ratio"))
    min_records = _as_int(model.get("min_class_records"))
    marker = None
    if ratio is not None and ordered:
        limit = max(ratio * ordered[0][1], float(min_records))
        marker = (limit, f"rare below {limit:,.0f}")
    return charts.hbar_chart(
        rows,
        "Records per class",
        total=sum(labels.values()),
        colours={name: RARE_COLOUR for name in rare},
        marker=marker,
    )


def _groups(check: str, examples: list[dict[str, Any]], stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Examples of a grouped check (rare class, sparse cluster) gathered per group, in order."""
    groups: dict[str, dict[str, Any]] = {}
    clusters = _mapping(stats.get("sparse_clusters"))
    for ex in examples:
        key = str(ex["group_id"] or ex["sides"][0]["id"])
        group = groups.get(key)
        if group is None:
            ev = ex["evidence"]
            if check == "class_imbalance":
                title = f"class {ev.get('class', key.removeprefix('class-'))}"
                size = _as_int(ev.get("class_size"))
                detail = f"{size:,} record{'s' if size != 1 else ''}"
                if ev.get("largest") and ev.get("largest_class") is not None:
                    largest = _as_int(ev["largest"])
                    detail += (
                        f" · {size / largest:.1%} of '{ev['largest_class']}' ({largest:,})" if largest else ""
                    )
            else:
                info = _mapping(clusters.get(key))
                size = _as_int(ev.get("cluster_size") or info.get("size"))
                scope = str(ev.get("scope") or info.get("scope") or "all")
                title = "sparse cluster" + (f" of class {scope}" if scope != "all" else " of the data")
                k = _as_int(ev.get("clusters"))
                detail = f"{size:,} record{'s' if size != 1 else ''}" + (f" · 1 of {k} clusters" if k else "")
            group = {"key": key, "title": title, "detail": detail, "message": ex["message"], "examples": []}
            groups[key] = group
        group["examples"].append(ex)
    return list(groups.values())


# --------------------------------------------------------------------------- page


def _check_rows(
    report: Mapping[str, Any],
    examples: Mapping[str, list[dict[str, Any]]],
    colours: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One view model per check: status, counts, notes, histogram, examples and their layout."""
    checks = _mapping(report.get("checks"))
    stats = _mapping(report.get("statistics"))
    settings = _mapping(report.get("settings"))
    hists = _mapping(stats.get("score_histograms"))
    rows: list[dict[str, Any]] = []
    for name, info in checks.items():
        info = info if isinstance(info, Mapping) else {}
        status = str(info.get("status") or "ok")
        by_sev = _counts(info.get("by_severity"))
        count = _as_int(info.get("count"))
        found = [e for e in examples.get(name, []) if isinstance(e, Mapping)]
        worst = next((s for s in SEVERITIES if by_sev.get(s)), None)
        bins = hists.get(name)
        hist = Markup("")
        if count and isinstance(bins, list) and any(_as_int(b) for b in bins):
            hist = charts.histogram_chart(
                [_as_int(b) for b in bins],
                f"{name} scores",
                _SEVERITY_COLOURS.get(worst or "info", "#1a73e8"),
            )
        shown = [_example(e, str(name), colours) for e in found]
        layout = _LAYOUTS.get(str(name), "list")
        rows.append(
            {
                "layout": layout,
                "gallery_title": _GALLERY_TITLES.get(str(name), "Worst examples"),
                "group_noun": ("rare class", "rare classes")
                if layout == "classes"
                else ("sparse cluster", "sparse clusters"),
                "groups": _groups(str(name), shown, stats) if layout in ("clusters", "classes") else [],
                "num_groups": len(
                    _mapping(stats.get("sparse_clusters" if layout == "clusters" else "rare_classes"))
                ),
                "class_chart": class_chart(stats, settings) if layout == "classes" and count else Markup(""),
                "name": str(name),
                "anchor": "check-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)),
                "status": status if status in ("ok", "failed", "skipped") else "ok",
                "count": count,
                "by_severity": {s: by_sev.get(s, 0) for s in SEVERITIES},
                "worst": worst,
                "error": info.get("error"),
                "reason": info.get("reason"),
                "notes": [str(n) for n in info.get("notes") or []],
                "seconds": info.get("seconds"),
                "description": str(info.get("description") or ""),
                "histogram": hist,
                "examples": shown,
                "has_section": status == "failed" or count > 0 or bool(found),
            }
        )
    return rows


def _label_colours(stats: Mapping[str, Any]) -> dict[str, str]:
    """The label colours of the embedding map (its label order), else of the label counts."""
    emap = _mapping(stats.get("embedding_map"))
    order = emap.get("labels") if emap.get("available") else None
    if not isinstance(order, list):
        order = order_labels({k: v for k, v in _counts(stats.get("labels")).items() if k != "(missing)"})
    return label_colours([str(v) for v in order])


def build_context(report: Mapping[str, Any], examples: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Turn ``report`` and ``examples`` into the plain values the template shows."""
    inp = _mapping(report.get("input"))
    stats = _mapping(report.get("statistics"))
    exit_ = _mapping(report.get("exit"))
    path = str(inp.get("path") or "dataset")
    name = os.path.basename(path.rstrip("/\\")) or path
    emap = map_view(stats.get("embedding_map"))
    colours = _label_colours(stats)
    checks = _check_rows(report, examples, colours)
    totals = {s: sum(c["by_severity"][s] for c in checks) for s in SEVERITIES}
    roles = _mapping(report.get("roles"))
    refs = report.get("references")
    refs = refs if isinstance(refs, list) else []
    timings = _mapping(report.get("timings"))
    num_rows = inp.get("num_rows", stats.get("num_rows"))
    code = _as_int(exit_.get("code"))
    return {
        "title": f"curata report · {name}",
        "dataset_name": name,
        "input": {
            "path": path,
            "kind": inp.get("kind"),
            "format": inp.get("format"),
            "modality": inp.get("modality"),
            "num_rows": num_rows,
        },
        "references": [
            {"path": str(r.get("path", "")), "num_rows": r.get("num_rows")}
            for r in refs
            if isinstance(r, Mapping)
        ],
        "roles": [(str(k), str(v)) for k, v in roles.items() if v is not None],
        "version": report.get("curata_version"),
        "created_at": report.get("created_at"),
        "checks": checks,
        "sections": [c for c in checks if c["has_section"]],
        "num_checks": len(checks),
        "num_failed": sum(c["status"] == "failed" for c in checks),
        "num_skipped": sum(c["status"] == "skipped" for c in checks),
        "num_findings": sum(c["count"] for c in checks),
        "totals": totals,
        "charts": _charts(stats),
        "embedding_map": emap,
        "licences": _licence_view(stats.get("licences")),
        "timings": [(str(k).removesuffix("_s"), v) for k, v in timings.items()],
        "total_s": timings.get("total_s"),
        "exit": {
            "code": code,
            "fail_on": exit_.get("fail_on"),
            "worst": exit_.get("worst_severity"),
            "passed": code == 0,
        },
        "settings_json": json.dumps(report.get("settings") or {}, indent=2, sort_keys=True, default=str),
        "severities": SEVERITIES,
    }
