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


def _example(finding: Mapping[str, Any]) -> dict[str, Any]:
    """View model of one finding: severity, score, message and one or two record sides."""
    severity = str(finding.get("severity") or "info")
    if severity not in SEVERITIES:
        severity = "info"
    sides = [_side(finding.get("record"), finding.get("record_id"))]
    related = finding.get("related")
    if related is not None or finding.get("related_id"):
        sides.append(_side(related, finding.get("related_id")))
    texts = [s for s in sides if s["text"] is not None]
    for s in texts:
        s["text"], s["text_cut"] = truncate(s["text"])
    if len(sides) == 2 and len(texts) == 2:
        sides[0]["text_html"], sides[1]["text_html"] = highlight_shared(sides[0]["text"], sides[1]["text"])
    else:
        for s in texts:
            s["text_html"] = escape(s["text"])
    try:
        score = float(finding.get("score") or 0.0)
    except (TypeError, ValueError):
        score = 0.0
    return {
        "severity": severity,
        "score": score,
        "message": str(finding.get("message") or ""),
        "group_id": finding.get("group_id"),
        "pair": len(sides) == 2,
        "sides": sides,
        "any_image": any(s["image"] or s["image_dropped"] for s in sides),
        "any_text": any(s["has_text"] for s in sides),
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
        rows = charts.top_n(labels, TOP_LABELS)
        note = f"{len(labels):,} label{'s' if len(labels) != 1 else ''}"
        if len(labels) > TOP_LABELS:
            note += f", top {TOP_LABELS} shown"
        out.append(
            {
                "title": "Records per label",
                "note": note,
                "svg": charts.hbar_chart(rows, "Records per label", total=sum(labels.values())),
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


# --------------------------------------------------------------------------- page


def _check_rows(
    report: Mapping[str, Any], examples: Mapping[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One view model per check: status, counts, notes, histogram and examples."""
    checks = _mapping(report.get("checks"))
    stats = _mapping(report.get("statistics"))
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
        rows.append(
            {
                "name": str(name),
                "anchor": "check-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)),
                "status": status if status in ("ok", "failed", "skipped") else "ok",
                "count": count,
                "by_severity": {s: by_sev.get(s, 0) for s in SEVERITIES},
                "worst": worst,
                "error": info.get("error"),
                "reason": info.get("reason"),
                "seconds": info.get("seconds"),
                "description": str(info.get("description") or ""),
                "histogram": hist,
                "examples": [_example(e) for e in found],
                "has_section": status == "failed" or count > 0 or bool(found),
            }
        )
    return rows


def build_context(report: Mapping[str, Any], examples: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Turn ``report`` and ``examples`` into the plain values the template shows."""
    inp = _mapping(report.get("input"))
    stats = _mapping(report.get("statistics"))
    exit_ = _mapping(report.get("exit"))
    path = str(inp.get("path") or "dataset")
    name = os.path.basename(path.rstrip("/\\")) or path
    checks = _check_rows(report, examples)
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
