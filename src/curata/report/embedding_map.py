"""The embedding map: a 2-D projection of the run's embeddings, coloured by label, flagged records marked.

The map reads the embeddings the checks already made (``context.cache["embeddings"]``, filled by
``curata.checks.embedding.shared_embeddings``) and never computes embeddings itself: a run whose
checks needed none gets no map, and the report says why.

The projection is PCA to two components (randomised subspace iteration, seeded, so the same run
gives the same map). At most ``max_points`` records are drawn: the records that checks flagged
first (up to ``max_flagged``, shared fairly between checks, highest scores first), then a seeded
uniform sample of the rest. ``embedding_map`` returns the compact, JSON-ready data stored in
``report.json`` under ``statistics.embedding_map``; ``map_view`` and ``map_svg`` turn it into the
inline SVG of the HTML report (no scripts, no external references; user text is escaped).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from markupsafe import Markup, escape

from curata.checks.base import SEVERITY_RANK, Context

#: Checks that make (and share) the run's embeddings; their skip reasons explain a missing map.
EMBEDDING_CHECKS: tuple[str, ...] = ("outlier", "label_issue", "semantic_duplicate", "underrepresented")
#: Most records drawn on the map.
MAX_POINTS = 4000
#: Most flagged records that are always drawn (the rest may still come in with the uniform sample).
MAX_FLAGGED = 1000
#: Most records the projection is fitted on (a seeded uniform sample beyond that).
FIT_ROWS = 10_000
#: Decimals kept of the coordinates, which are scaled into [-1, 1].
DECIMALS = 3

#: Label colours, by label frequency (most frequent first); distinct and readable on white.
LABEL_PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#edc948",
    "#76b7b2",
    "#ff9da7",
    "#9c755f",
    "#17becf",
    "#1f4e79",
    "#bcbd22",
    "#8c564b",
    "#d62790",
    "#2ca02c",
    "#7f7fff",
)
#: Labels past the palette share one colour; records without a label are light grey.
OTHER_LABEL_COLOUR = "#7a7f87"
UNLABELLED_COLOUR = "#c3c8cf"
#: Ring colour of a flagged record, by the worst severity of its findings.
RING_COLOURS: dict[str, str] = {"error": "#c5221f", "warning": "#d98c00", "info": "#475467"}

# SVG geometry (viewBox units; the SVG scales to its container).
_W, _H = 880, 560
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 16, 16, 14, 30
_DOT_R = 3.2
_FLAG_R = 4.2
_RING_R = 7.5


# --------------------------------------------------------------------------- data


def no_embeddings_reason(check_status: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Why a run has no embeddings, from the status of the checks that would have made them."""
    parts: list[str] = []
    for name in EMBEDDING_CHECKS:
        info = (check_status or {}).get(name)
        if not isinstance(info, Mapping):
            continue
        status = info.get("status")
        if status == "skipped":
            parts.append(f"{name} was skipped ({info.get('reason') or 'no reason given'})")
        elif status == "failed":
            parts.append(f"{name} failed")
        elif name == "label_issue" and status == "ok":
            parts.append("label_issue used the given predicted probabilities")
    text = "no check in this run needed embeddings"
    return text + (": " + "; ".join(parts) if parts else "")


def embedding_map(
    context: Context,
    findings: pa.Table,
    check_status: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    max_points: int = MAX_POINTS,
    max_flagged: int = MAX_FLAGGED,
    seed: int = 0,
) -> dict[str, Any]:
    """The map of this run, from the embeddings its checks left in ``context.cache``.

    Without embeddings the result is ``{"available": False, "reason": ...}``.
    """
    emb = context.cache.get("embeddings")
    if emb is None:
        return {"available": False, "reason": no_embeddings_reason(check_status)}
    return build_map(
        np.asarray(emb.vectors),
        context.record_ids,
        context.dataset.labels() or None,
        findings,
        ok=np.asarray(emb.ok, dtype=bool),
        source=str(emb.source),
        max_points=max_points,
        max_flagged=max_flagged,
        seed=seed,
    )


def build_map(
    vectors: np.ndarray,
    record_ids: Sequence[str],
    labels: Sequence[str | None] | None,
    findings: pa.Table | Sequence[Mapping[str, Any]] | None = None,
    *,
    ok: np.ndarray | None = None,
    source: str = "",
    max_points: int = MAX_POINTS,
    max_flagged: int = MAX_FLAGGED,
    seed: int = 0,
) -> dict[str, Any]:
    """Project, sample and pack the map data (pure; ``embedding_map`` feeds it a run's values).

    ``vectors`` holds one row per record (``ok`` False rows have no usable embedding and are left
    out); ``findings`` is the findings table (or its rows): each finding flags its ``record_id``.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a matrix, got shape {x.shape}")
    n = x.shape[0]
    usable = np.ones(n, dtype=bool) if ok is None else np.asarray(ok, dtype=bool).copy()
    usable &= np.isfinite(x.sum(axis=1, dtype=np.float64))  # NaN or inf anywhere in the row
    rows = np.flatnonzero(usable)
    if len(rows) == 0:
        return {"available": False, "reason": "no record has a usable embedding"}
    label_list = list(labels) if labels else [None] * n
    flags, worst, best_score = _flags(findings, record_ids, usable)
    chosen = sample_rows(rows, flags, best_score, max_points, max_flagged, seed)
    fit = (
        rows if len(rows) <= FIT_ROWS else np.sort(np.random.default_rng(seed).choice(rows, FIT_ROWS, False))
    )
    mean, components, explained = fit_pca(x[fit], seed)
    coords = (x[chosen] - mean) @ components
    scale = float(np.abs(coords).max()) if coords.size else 0.0
    if scale > 0:
        coords = coords / scale
    coords = np.round(coords.astype(np.float64), DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    counts: dict[str, int] = {}
    for v in label_list:
        if v is not None:
            counts[str(v)] = counts.get(str(v), 0) + 1
    label_order = order_labels(counts)
    label_index = {name: i for i, name in enumerate(label_order)}
    check_names = sorted({c for cs in flags.values() for c in cs})
    check_index = {name: i for i, name in enumerate(check_names)}
    point_labels = [-1 if label_list[r] is None else label_index[str(label_list[r])] for r in chosen.tolist()]
    point_checks = [sorted(check_index[c] for c in flags.get(r, ())) for r in chosen.tolist()]
    point_severity = [worst.get(r) for r in chosen.tolist()]
    return {
        "available": True,
        "method": "pca",
        "embeddings": source,
        "num_records": len(rows),
        "num_points": len(chosen),
        "num_flagged": len(flags),
        "explained_variance": [round(float(v), 4) for v in explained],
        "labels": label_order,
        "checks": check_names,
        "points": {
            "id": [str(record_ids[r]) for r in chosen.tolist()],
            "x": coords[:, 0].tolist(),
            "y": coords[:, 1].tolist(),
            "label": point_labels,
            "checks": point_checks,
            "severity": point_severity,
        },
    }


def _flags(
    findings: pa.Table | Sequence[Mapping[str, Any]] | None,
    record_ids: Sequence[str],
    usable: np.ndarray,
) -> tuple[dict[int, set[str]], dict[int, str], dict[tuple[str, int], float]]:
    """Per usable row: the checks that flagged it, its worst severity, and each (check, row)'s score."""
    flags: dict[int, set[str]] = {}
    worst: dict[int, str] = {}
    best: dict[tuple[str, int], float] = {}
    if findings is None:
        return flags, worst, best
    rows_ = (
        findings.select(["check", "record_id", "severity", "score"]).to_pylist()
        if isinstance(findings, pa.Table)
        else list(findings)
    )
    if not rows_:
        return flags, worst, best
    where: dict[str, list[int]] = {}
    for row, rid in enumerate(record_ids):
        where.setdefault(str(rid), []).append(row)
    for f in rows_:
        check = str(f.get("check") or "")
        severity = str(f.get("severity") or "info")
        try:
            score = float(f.get("score") or 0.0)
        except (TypeError, ValueError):
            score = 0.0
        for row in where.get(str(f.get("record_id")), ()):
            if not usable[row] or not check:
                continue
            flags.setdefault(row, set()).add(check)
            if SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(worst.get(row, "info"), 0):
                worst[row] = severity if severity in SEVERITY_RANK else "info"
            best[(check, row)] = max(best.get((check, row), 0.0), score)
    return flags, worst, best


def sample_rows(
    rows: np.ndarray,
    flags: Mapping[int, set[str]],
    scores: Mapping[tuple[str, int], float],
    max_points: int,
    max_flagged: int,
    seed: int,
) -> np.ndarray:
    """Rows to draw, sorted: flagged rows first (shared between checks), then a seeded sample.

    Flagged rows are taken round-robin over the checks (each check's rows by score, highest
    first), so a check with thousands of findings does not crowd out one with a few.
    """
    max_points = max(1, int(max_points))
    if len(rows) <= max_points:
        return np.asarray(rows, dtype=np.int64)
    by_check: dict[str, list[int]] = {}
    for row, checks in flags.items():
        for c in checks:
            by_check.setdefault(c, []).append(row)
    queues = [_by_score(c, members, scores) for c, members in sorted(by_check.items())]
    cap = min(max(0, int(max_flagged)), max_points)
    picked: list[int] = []
    seen: set[int] = set()
    pos = [0] * len(queues)
    while len(picked) < cap and any(p < len(q) for p, q in zip(pos, queues, strict=True)):
        for i, q in enumerate(queues):
            while pos[i] < len(q) and q[pos[i]] in seen:
                pos[i] += 1
            if pos[i] < len(q) and len(picked) < cap:
                seen.add(q[pos[i]])
                picked.append(q[pos[i]])
                pos[i] += 1
    rest = np.asarray([r for r in np.asarray(rows).tolist() if r not in seen], dtype=np.int64)
    need = min(max_points - len(picked), len(rest))
    extra = np.random.default_rng(seed).choice(rest, need, replace=False) if need > 0 else rest[:0]
    return np.sort(np.concatenate([np.asarray(picked, dtype=np.int64), extra.astype(np.int64)]))


def _by_score(check: str, rows: list[int], scores: Mapping[tuple[str, int], float]) -> list[int]:
    """``rows`` by their score for ``check``, highest first (then by row)."""
    return sorted(rows, key=lambda r: (-scores.get((check, r), 0.0), r))


def fit_pca(x: np.ndarray, seed: int = 0, iterations: int = 7) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Mean, the top two principal directions (d x 2) and their shares of the variance.

    Randomised subspace iteration with a few spare directions: exact enough for two components,
    cheap for thousands of high-dimensional rows, and deterministic for a given ``seed``. Each
    direction's sign is fixed so that its largest loading is positive.
    """
    x = np.asarray(x, dtype=np.float32)
    m, d = x.shape
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    components = np.zeros((d, 2), dtype=np.float32)
    if m < 2 or d == 0:
        return mean, components, [0.0, 0.0]
    xc = x - mean
    total = float(np.einsum("ij,ij->", xc, xc, dtype=np.float64))
    if total <= 0:
        return mean, components, [0.0, 0.0]
    k = min(d, m, 10)
    q = np.random.default_rng(seed).standard_normal((d, k)).astype(np.float32)
    for _ in range(iterations):
        q, _ = np.linalg.qr(xc.T @ (xc @ q))
    _, s, vh = np.linalg.svd((xc @ q).astype(np.float64), full_matrices=False)
    top = min(2, len(s))
    directions = q.astype(np.float64) @ vh[:top].T
    for j in range(top):
        col = directions[:, j]
        if col[np.argmax(np.abs(col))] < 0:
            directions[:, j] = -col
    components[:, :top] = directions.astype(np.float32)
    explained = [float(s[j] ** 2 / total) if j < top else 0.0 for j in range(2)]
    return mean, components, explained


# --------------------------------------------------------------------------- view


def _natural(name: str) -> tuple[int, float, str]:
    """Sort key putting numeric labels first, in numeric order, then the others by name."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def order_labels(counts: Mapping[str, int]) -> list[str]:
    """Labels in colour order: natural order when the palette has a colour for each (so ``0``..``9``
    get the same colours in every report), else the most frequent first."""
    if len(counts) <= len(LABEL_PALETTE):
        return sorted(counts, key=_natural)
    return sorted(counts, key=lambda k: (-counts[k], k))


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """Colour per label, in the order given (see ``order_labels``); labels past the palette share one."""
    return {
        name: LABEL_PALETTE[i] if i < len(LABEL_PALETTE) else OTHER_LABEL_COLOUR
        for i, name in enumerate(labels)
    }


def _fmt_coord(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _axis_range(values: np.ndarray) -> tuple[float, float]:
    """The drawn range of one axis: all points, unless a few extreme ones would squash the rest."""
    lo, hi = float(values.min()), float(values.max())
    if len(values) >= 50:
        q_lo, q_hi = (float(v) for v in np.quantile(values, [0.005, 0.995]))
        pad = 0.3 * (q_hi - q_lo)
        lo, hi = max(lo, q_lo - pad), min(hi, q_hi + pad)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi


def map_view(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the template shows for ``statistics.embedding_map``; None when the report has none.

    Returns ``available`` False with the ``reason``, or the SVG, the label legend (colour, name,
    points shown), the ring legend (severity counts) and the flagged points per check.
    """
    if not isinstance(data, Mapping):
        return None
    if not data.get("available"):
        return {"available": False, "reason": str(data.get("reason") or "no embeddings in this run")}
    try:
        pts = data["points"]
        xs = np.asarray(pts["x"], dtype=np.float64)
        ys = np.asarray(pts["y"], dtype=np.float64)
        ids = [str(v) for v in pts["id"]]
        lab = [int(v) for v in pts["label"]]
        chk = [[int(c) for c in cs] for cs in pts["checks"]]
        sev = [None if s is None else str(s) for s in pts.get("severity") or [None] * len(ids)]
        labels = [str(v) for v in data.get("labels") or []]
        checks = [str(v) for v in data.get("checks") or []]
        if not (len(xs) == len(ys) == len(ids) == len(lab) == len(chk) == len(sev)):
            raise ValueError("point columns differ in length")
    except (KeyError, TypeError, ValueError) as exc:
        return {"available": False, "reason": f"the map data in report.json is malformed ({exc})"}
    colours = label_colours(labels)
    shown = [0] * len(labels)
    unlabelled = 0
    for i in lab:
        if 0 <= i < len(labels):
            shown[i] += 1
        else:
            unlabelled += 1
    legend = [
        {"name": name, "colour": colours[name], "count": shown[i]}
        for i, name in enumerate(labels)
        if i < len(LABEL_PALETTE) and shown[i]
    ]
    others = sum(shown[len(LABEL_PALETTE) :])
    if others:
        n_other = sum(1 for c in shown[len(LABEL_PALETTE) :] if c)
        legend.append({"name": f"{n_other} other labels", "colour": OTHER_LABEL_COLOUR, "count": others})
    if unlabelled:
        legend.append({"name": "no label", "colour": UNLABELLED_COLOUR, "count": unlabelled})
    per_check = [0] * len(checks)
    rings = {s: 0 for s in RING_COLOURS}
    for cs, s in zip(chk, sev, strict=True):
        for c in cs:
            if 0 <= c < len(checks):
                per_check[c] += 1
        if cs:
            rings[s if s in RING_COLOURS else "info"] += 1
    svg, beyond = map_svg(xs, ys, ids, lab, chk, sev, labels, checks)
    explained = [float(v) for v in data.get("explained_variance") or [0.0, 0.0]][:2]
    return {
        "available": True,
        "svg": svg,
        "num_points": len(ids),
        "num_records": int(data.get("num_records") or len(ids)),
        "num_flagged": int(data.get("num_flagged") or 0),
        "flagged_shown": sum(1 for cs in chk if cs),
        "beyond": beyond,
        "embeddings": str(data.get("embeddings") or ""),
        "encoder": _short_source(str(data.get("embeddings") or "")),
        "explained": explained + [0.0] * (2 - len(explained)),
        "legend": legend,
        "rings": [{"severity": s, "colour": RING_COLOURS[s], "count": n} for s, n in rings.items() if n],
        "checks": [{"name": c, "count": n} for c, n in zip(checks, per_check, strict=True) if n],
    }


def _short_source(source: str) -> str:
    """The encoder's name without its version and settings (``minilm-v1-all-MiniLM...`` -> ``minilm``)."""
    match = re.match(r"^(.+?)-v\d+(?:-|$)", source)
    return match.group(1) if match else (source or "record")


def map_svg(
    xs: np.ndarray,
    ys: np.ndarray,
    ids: Sequence[str],
    labels_idx: Sequence[int],
    checks_idx: Sequence[Sequence[int]],
    severities: Sequence[str | None],
    labels: Sequence[str],
    checks: Sequence[str],
) -> tuple[Markup, int]:
    """The scatter plot as one inline ``<svg>``, and how many points sit pinned to its edge.

    Every point is one ``<circle class="p">`` with a ``<title>`` (record id, label, the checks that
    flagged it). Flagged points are drawn last, larger, inside ``<g class="flag">`` with a ring
    (``<circle class="r">``) coloured by their worst severity and ``data-checks`` for filtering.
    """
    colours = label_colours(labels)
    n = len(ids)
    if n == 0:
        return Markup(""), 0
    x_lo, x_hi = _axis_range(xs)
    y_lo, y_hi = _axis_range(ys)
    inner_w, inner_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    margin = _RING_R + 1
    px = _PAD_L + margin + (np.clip(xs, x_lo, x_hi) - x_lo) / (x_hi - x_lo) * (inner_w - 2 * margin)
    py = _PAD_T + margin + (y_hi - np.clip(ys, y_lo, y_hi)) / (y_hi - y_lo) * (inner_h - 2 * margin)
    outside = (xs < x_lo) | (xs > x_hi) | (ys < y_lo) | (ys > y_hi)
    plain: list[str] = []
    flagged: list[str] = []
    for i in range(n):
        li = labels_idx[i]
        if 0 <= li < len(labels):
            name = labels[li]
            colour = colours[name]
            label_text = f"label {name}"
        else:
            colour = UNLABELLED_COLOUR
            label_text = "no label"
        names = [checks[c] for c in checks_idx[i] if 0 <= c < len(checks)]
        tip = f"{ids[i]} · {label_text}"
        if names:
            tip += " · flagged: " + ", ".join(names)
        if outside[i]:
            tip += " (beyond the map's edge)"
        cx, cy = _fmt_coord(float(px[i])), _fmt_coord(float(py[i]))
        if names:
            sev = severities[i] if severities[i] in RING_COLOURS else "info"
            flagged.append(
                f'<g class="flag" data-checks="{escape(" ".join(names))}">'
                f'<circle class="r {sev}" cx="{cx}" cy="{cy}" r="{_RING_R}"/>'
                f'<circle class="p" cx="{cx}" cy="{cy}" r="{_FLAG_R}" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle></g>"
            )
        else:
            plain.append(
                f'<circle class="p" cx="{cx}" cy="{cy}" r="{_DOT_R}" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    frame = (
        f'<rect class="frame" x="{_PAD_L}" y="{_PAD_T}" width="{inner_w}" height="{inner_h}" rx="6"/>'
        f'<text class="axis-t" x="{_PAD_L + inner_w / 2:.0f}" y="{_H - 9}" text-anchor="middle">'
        "principal component 1 →</text>"
        f'<text class="axis-t" x="{_PAD_L + 4}" y="{_PAD_T + 13}">↑ principal component 2</text>'
    )
    head = (
        f'<svg class="emap-svg" viewBox="0 0 {_W} {_H}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="Embedding map: {n} records">'
        f"<title>Embedding map: {n} records, coloured by label</title>"
    )
    body = frame + '<g class="pts">' + "".join(plain) + '</g><g class="flags">' + "".join(flagged) + "</g>"
    return Markup(head + body + "</svg>"), int(outside.sum())
