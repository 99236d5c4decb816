"""Small inline-SVG chart helpers for the HTML report (no scripts, no external resources).

Every helper returns a ``Markup`` string holding one ``<svg>`` element that scales to its
container through its ``viewBox``. All user-provided text (labels, split names) is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

#: Categorical palette (colour-blind friendly, after Okabe-Ito and Tableau 10).
PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)

#: Fixed colours for the usual split names so the same split looks the same in every chart.
SPLIT_COLOURS: dict[str, str] = {
    "train": "#4e79a7",
    "training": "#4e79a7",
    "val": "#f28e2b",
    "valid": "#f28e2b",
    "validation": "#f28e2b",
    "dev": "#f28e2b",
    "test": "#59a14f",
    "testing": "#59a14f",
}

BAR_COLOUR = "#4e79a7"
OTHER_COLOUR = "#bab0ac"

_WIDTH = 560
_LABEL_W = 150
_VALUE_W = 78
_ROW_H = 20
_BAR_H = 13


def fmt_int(value: float) -> str:
    """Format a count with thousands separators."""
    return f"{int(value):,}"


def shorten(text: str, limit: int = 22) -> str:
    """Cut ``text`` to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_colours(names: Sequence[str]) -> dict[str, str]:
    """Assign each split name a stable colour (known names first, then the palette)."""
    colours: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        known = SPLIT_COLOURS.get(name.lower())
        if known and known not in used:
            colours[name] = known
            used.add(known)
    spare = [c for c in PALETTE if c not in used]
    for i, name in enumerate(n for n in names if n not in colours):
        colours[name] = spare[i % len(spare)] if spare else PALETTE[i % len(PALETTE)]
    return colours


def top_n(counts: Mapping[str, int], n: int = 30, other: str = "other") -> list[tuple[str, int, bool]]:
    """Return the ``n`` largest counts, then one ``other`` row summing the rest.

    Rows are ``(name, count, is_other)``; ties keep the mapping's order.
    """
    items = sorted(counts.items(), key=lambda kv: -int(kv[1]))
    rows = [(str(k), int(v), False) for k, v in items[:n]]
    rest = sum(int(v) for _, v in items[n:])
    if len(items) > n:
        rows.append((f"{other} ({len(items) - n})", rest, True))
    return rows


def _svg(width: int, height: int, body: list[str], title: str) -> Markup:
    """Wrap SVG elements into one responsive ``<svg>`` with an accessible title."""
    head = (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" aria-label="{escape(title)}">'
    )
    return Markup(head + f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def hbar_chart(
    rows: Sequence[tuple[str, int, bool]],
    title: str,
    total: int | None = None,
    colours: Mapping[str, str] | None = None,
    marker: tuple[float, str] | None = None,
) -> Markup:
    """Horizontal bars, one per ``(name, count, is_other)`` row, with count and share at the end.

    ``colours`` may give a fill per row name (e.g. split colours); other rows use ``BAR_COLOUR``.
    ``marker`` ``(value, text)`` draws a dashed line at ``value`` across the bars, captioned ``text``.
    """
    if not rows:
        return Markup("")
    total = total if total is not None else sum(r[1] for r in rows)
    peak = max((r[1] for r in rows), default=0) or 1
    span = _WIDTH - _LABEL_W - _VALUE_W - 8
    top = 18 if marker else 0
    height = top + len(rows) * _ROW_H + 8
    body: list[str] = []
    if marker:  # the line behind the bars, its caption above them
        mx = _LABEL_W + span * min(max(marker[0], 0.0), peak) / peak
        anchor = "start" if mx < _LABEL_W + span / 2 else "end"
        body.append(
            f'<line class="marker" x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" y2="{height - 2}"/>'
            f'<text class="marker-t" x="{mx + (4 if anchor == "start" else -4):.1f}" y="{top - 7}" '
            f'text-anchor="{anchor}">{escape(marker[1])}</text>'
        )
    for i, (name, count, is_other) in enumerate(rows):
        y = top + 4 + i * _ROW_H
        w = max(1.0, span * count / peak) if count else 0.0
        share = f"{100 * count / total:.1f}%" if total else ""
        colour = OTHER_COLOUR if is_other else (colours or {}).get(name, BAR_COLOUR)
        tip = f"{name}: {fmt_int(count)}" + (f" ({share})" if share else "")
        body.append(
            f"<g><title>{escape(tip)}</title>"
            f'<text class="lbl" x="{_LABEL_W - 6}" y="{y + _BAR_H - 2}" text-anchor="end">'
            f"{escape(shorten(name))}</text>"
            f'<rect x="{_LABEL_W}" y="{y}" width="{w:.1f}" height="{_BAR_H}" rx="2" fill="{colour}"/>'
            f'<text class="val" x="{_LABEL_W + w + 5:.1f}" y="{y + _BAR_H - 2}">'
            f'{fmt_int(count)}<tspan class="muted"> {share}</tspan></text></g>'
        )
    return _svg(_WIDTH, height, body, title)


def stacked_hbar_chart(
    rows: Sequence[tuple[str, Mapping[str, int]]],
    segments: Sequence[str],
    title: str,
    normalize: bool = False,
) -> Markup:
    """Horizontal stacked bars: one bar per row name, one coloured segment per ``segments`` key.

    A legend with the segment colours sits above the bars. With ``normalize`` every bar spans the
    full width and its segments show shares of the row total (the total is printed at the end).
    """
    if not rows or not segments:
        return Markup("")
    colours = split_colours(list(segments))
    totals = [sum(int(v) for v in parts.values()) for _, parts in rows]
    peak = max(totals, default=0) or 1
    span = _WIDTH - _LABEL_W - _VALUE_W - 8
    legend_h = 24
    height = legend_h + len(rows) * _ROW_H + 8
    body: list[str] = []
    x = float(_LABEL_W)
    for seg in segments:
        body.append(
            f'<rect x="{x:.1f}" y="5" width="11" height="11" rx="2" fill="{colours[seg]}"/>'
            f'<text class="lbl" x="{x + 15:.1f}" y="15">{escape(shorten(seg, 16))}</text>'
        )
        x += 28 + 7 * min(len(seg), 16)
    for i, ((name, parts), total) in enumerate(zip(rows, totals, strict=True)):
        y = legend_h + 4 + i * _ROW_H
        body.append(
            f'<text class="lbl" x="{_LABEL_W - 6}" y="{y + _BAR_H - 2}" text-anchor="end">'
            f"<title>{escape(name)}</title>{escape(shorten(name))}</text>"
        )
        x = float(_LABEL_W)
        for seg in segments:
            count = int(parts.get(seg, 0))
            if not count:
                continue
            w = span * count / (total if normalize else peak)
            share = f"{100 * count / total:.1f}%" if total else ""
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{_BAR_H}" '
                f'fill="{colours[seg]}"><title>{escape(f"{name} / {seg}: {fmt_int(count)} ({share})")}'
                "</title></rect>"
            )
            x += w
        body.append(f'<text class="val" x="{x + 5:.1f}" y="{y + _BAR_H - 2}">{fmt_int(total)}</text>')
    return _svg(_WIDTH, height, body, title)


def column_chart(
    bars: Sequence[tuple[str, int]],
    title: str,
    x_title: str = "",
    colour: str = BAR_COLOUR,
    height: int = 190,
) -> Markup:
    """Vertical columns with category names below and counts above each column."""
    if not bars:
        return Markup("")
    left, right, top, bottom = 10, 10, 18, 36 if x_title else 22
    span_w = _WIDTH - left - right
    span_h = height - top - bottom
    peak = max((c for _, c in bars), default=0) or 1
    slot = span_w / len(bars)
    gap = min(6.0, slot * 0.2)
    body = [f'<line class="axis" x1="{left}" y1="{top + span_h}" x2="{_WIDTH - right}" y2="{top + span_h}"/>']
    label_every = max(1, int(len(bars) / 20) + 1) if len(bars) > 20 else 1
    for i, (name, count) in enumerate(bars):
        h = span_h * count / peak
        if count and h < 1.0:
            h = 1.0
        x = left + i * slot + gap / 2
        w = slot - gap
        cx = x + w / 2
        body.append(
            f"<g><title>{escape(f'{name}: {fmt_int(count)}')}</title>"
            f'<rect x="{x:.1f}" y="{top + span_h - h:.1f}" width="{w:.1f}" height="{h:.1f}" rx="2" '
            f'fill="{colour}"/>'
        )
        if count and len(bars) <= 24:
            body.append(
                f'<text class="val" x="{cx:.1f}" y="{top + span_h - h - 4:.1f}" text-anchor="middle">'
                f"{fmt_int(count)}</text>"
            )
        body.append("</g>")
        if i % label_every == 0:
            body.append(
                f'<text class="lbl" x="{cx:.1f}" y="{top + span_h + 14}" text-anchor="middle">'
                f"{escape(shorten(name, 10))}</text>"
            )
    if x_title:
        body.append(
            f'<text class="muted" x="{_WIDTH / 2:.0f}" y="{height - 6}" text-anchor="middle">'
            f"{escape(x_title)}</text>"
        )
    return _svg(_WIDTH, height, body, title)


def histogram_chart(bins: Sequence[int], title: str, colour: str = BAR_COLOUR) -> Markup:
    """Score histogram over [0, 1] with ``len(bins)`` equal-width bins (usually 10)."""
    n = len(bins)
    if not n:
        return Markup("")
    bars = [(f"{i / n:.1f}–{(i + 1) / n:.1f}", int(c)) for i, c in enumerate(bins)]
    return column_chart(bars, title, x_title="score", colour=colour, height=170)
