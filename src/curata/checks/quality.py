"""The ``low_quality`` check: texts and pictures that are usable only with difficulty, if at all.

Metrics come from ``curata.signals.quality`` (computed through the engine, cached in the workspace);
the rules and their thresholds are described on ``QualitySettings``. One finding per record names
every rule it breaks, worst first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, Severity, register
from curata.checks.integrity import bad_rows
from curata.engine import get_engine
from curata.signals.pipeline import Signals, SignalSettings, map_records
from curata.signals.quality import QualitySettings, image_quality_batch, text_quality_batch

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_TOP_NS = (2, 3, 4)
_DUP_NS = (5, 6, 7, 8, 9, 10)
# A robust z-score this many times ``outlier_z`` past the median counts as an extreme value (excess 1).
_Z_EXTREME = 3.0
# Aspect ratio counted as extreme (excess 1).
_ASPECT_EXTREME = 50.0


def quality_settings(context: Context) -> QualitySettings:
    """The run's quality settings (``context.settings["quality"]``, else the defaults)."""
    settings = context.settings.get("quality")
    return settings if isinstance(settings, QualitySettings) else QualitySettings()


def quality_metrics(context: Context) -> Signals:
    """Per-record quality metrics of the audited data, computed (or read from the cache) once per run.

    Uses the audit's engine and signal cache when the audit put them in ``context.settings``
    (``"engine"``, ``"cache"``); otherwise a single-process engine and no cache.
    """

    def compute() -> Signals:
        dataset = context.dataset
        settings = quality_settings(context)
        signal_settings = context.settings.get("signals")
        if not isinstance(signal_settings, SignalSettings):
            signal_settings = SignalSettings()
        engine = context.settings.get("engine") or get_engine("local", 1)
        if dataset.modality == "text":
            fn: Any = text_quality_batch
            batch_size = signal_settings.batch_size
        else:
            fn = image_quality_batch
            batch_size = signal_settings.image_batch_size
        return map_records(
            dataset,
            engine,
            fn,
            (settings,),
            fingerprint=settings.fingerprint(dataset.modality),
            cache=context.settings.get("cache"),
            batch_size=batch_size,
            description="quality metrics",
        )

    metrics: Signals = context.shared("quality_metrics", compute)
    return metrics


def _floats(signals: Signals, name: str) -> F64:
    """A metric column as float64 with NaN for nulls."""
    col = signals.column(name).combine_chunks()
    out: F64 = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def _robust_z(values: F64, valid: B, floor: float) -> tuple[F64, float]:
    """Robust z-scores ``(x - median) / max(1.4826 MAD, floor)`` against the valid rows, and the median."""
    ref = values[valid & np.isfinite(values)]
    if len(ref) == 0:
        return np.zeros_like(values), float("nan")
    median = float(np.median(ref))
    scale = max(1.4826 * float(np.median(np.abs(ref - median))), floor)
    with np.errstate(invalid="ignore"):
        z: F64 = (values - median) / scale
    return np.nan_to_num(z, nan=0.0), median


def _past(value: float, threshold: float, extreme: float) -> float:
    """How far ``value`` is past ``threshold`` towards ``extreme``, clipped to [0, 1]."""
    if extreme == threshold:
        return 1.0
    return float(min(1.0, max(0.0, (value - threshold) / (extreme - threshold))))


def _z_excess(z: float, limit: float) -> float:
    """How far a robust z-score is past ``limit`` (either sign), towards ``_Z_EXTREME * limit``."""
    return _past(abs(z), limit, _Z_EXTREME * limit)


@dataclass
class _Reason:
    key: str
    excess: float
    text: str
    limit: Any


@dataclass
class _Rows:
    """The reasons found for each row (row -> reasons)."""

    reasons: dict[int, list[_Reason]] = field(default_factory=dict)

    def add(self, row: int, key: str, excess: float, text: str, limit: Any) -> None:
        self.reasons.setdefault(row, []).append(_Reason(key, excess, text, limit))


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _guard(broken: B, bad_z: F64, valid: B, settings: QualitySettings, relative: bool) -> B:
    """Keep only robust outliers when a rule breaks for more than ``max_rule_share`` of the rows."""
    n_valid = int(valid.sum())
    if relative and int(broken.sum()) > settings.max_rule_share * n_valid:
        kept: B = broken & (bad_z > settings.outlier_z)
        return kept
    return broken


def _text_reasons(metrics: Signals, valid: B, settings: QualitySettings) -> _Rows:
    """Evaluate every text rule; ``valid`` marks the non-blank, parsed rows."""
    out = _Rows()
    s = settings
    n_valid = int(valid.sum())
    relative = n_valid >= s.min_relative_records
    n_words = _floats(metrics, "n_words")
    with np.errstate(invalid="ignore"):
        # Too short: the absolute minimum, lowered for datasets of short texts.
        median_words = float(np.median(n_words[valid])) if n_valid else 0.0
        min_words = s.min_words
        if relative:
            min_words = min(s.min_words, max(1, math.ceil(median_words * s.short_fraction_of_median)))
        for row in np.flatnonzero(valid & (n_words < min_words)):
            n = int(n_words[row])
            out.add(
                int(row),
                "too_short",
                _past(n, min_words, 1) if min_words > 1 else 1.0,
                f"text is {n} word{'s' if n != 1 else ''} long (minimum {min_words})",
                min_words,
            )

        # Mostly non-alphabetic.
        alpha = _floats(metrics, "alpha_words")
        z, _ = _robust_z(alpha, valid, 0.02)
        broken = _guard(valid & (alpha < s.min_alpha_words), -z, valid, s, relative)
        for row in np.flatnonzero(broken):
            a = float(alpha[row])
            out.add(
                int(row),
                "non_alphabetic",
                _past(a, s.min_alpha_words, 0.0),
                f"text is mostly non-alphabetic (only {_pct(a)} of words contain a letter; "
                f"minimum {_pct(s.min_alpha_words)})",
                s.min_alpha_words,
            )

        # Symbols ('#', ellipses) per word.
        symbols = _floats(metrics, "symbol_ratio")
        z, _ = _robust_z(symbols, valid, 0.01)
        broken = _guard(valid & (symbols > s.max_symbol_ratio), z, valid, s, relative)
        for row in np.flatnonzero(broken):
            r = float(symbols[row])
            out.add(
                int(row),
                "symbols",
                _past(r, s.max_symbol_ratio, 1.0),
                f"text has {r:.2f} '#' or '...' symbols per word (maximum {s.max_symbol_ratio:.2f})",
                s.max_symbol_ratio,
            )

        # Mean word length outside the expected range.
        wlen = _floats(metrics, "mean_word_length")
        z, _ = _robust_z(wlen, valid, 0.2)
        lo, hi = s.min_mean_word_length, s.max_mean_word_length
        broken = _guard(valid & ((wlen < lo) | (wlen > hi)), np.abs(z), valid, s, relative)
        for row in np.flatnonzero(broken):
            w = float(wlen[row])
            excess = _past(w, lo, 1.0) if w < lo else _past(w, hi, 3 * hi)
            out.add(
                int(row),
                "word_length",
                excess,
                f"words are {w:.1f} characters long on average (expected {lo:g} to {hi:g})",
                [lo, hi],
            )

        # Repetition (Gopher): repeated lines, then the worst n-gram measure over its limit.
        n_lines = _floats(metrics, "n_lines")
        dup_lines = _floats(metrics, "dup_line_frac")
        dup_line_chars = _floats(metrics, "dup_line_char_frac")
        lines_broken = (
            valid
            & (n_lines >= 3)
            & (dup_lines > s.max_dup_line_frac)
            & (dup_line_chars > s.max_dup_line_char_frac)
        )
        measures: list[tuple[str, float, F64]] = [
            (f"top_{n}gram", lim, _floats(metrics, f"top_{n}gram"))
            for n, lim in zip(_TOP_NS, s.max_top_ngram, strict=True)
        ] + [
            (f"dup_{n}gram", lim, _floats(metrics, f"dup_{n}gram"))
            for n, lim in zip(_DUP_NS, s.max_dup_ngram, strict=True)
        ]
        ratios = np.stack([np.nan_to_num(v) / (lim * s.repetition_factor) for _, lim, v in measures])
        worst_ratio = ratios.max(axis=0)
        worst_measure = ratios.argmax(axis=0)
        ngrams_broken = valid & (n_words >= s.min_words_repetition) & (worst_ratio > 1.0)
        repetition = np.maximum(worst_ratio, np.nan_to_num(dup_lines) / s.max_dup_line_frac)
        z, _ = _robust_z(repetition, valid, 0.05)
        broken = _guard(lines_broken | ngrams_broken, z, valid, s, relative)
        for row in np.flatnonzero(broken):
            if lines_broken[row]:
                d = float(dup_lines[row])
                out.add(
                    int(row),
                    "repeated_lines",
                    _past(d, s.max_dup_line_frac, 1.0),
                    f"text is repetitive ({_pct(d)} of its {int(n_lines[row])} lines repeat an earlier line; "
                    f"maximum {_pct(s.max_dup_line_frac)})",
                    s.max_dup_line_frac,
                )
            if ngrams_broken[row] and not lines_broken[row]:  # repeated lines repeat n-grams too
                name, lim, values = measures[int(worst_measure[row])]
                v = float(values[row])
                n = int(name.split("_")[1].removesuffix("gram"))
                limit = lim * s.repetition_factor
                what = (
                    f"the most frequent {n}-word sequence covers {_pct(v)} of its characters"
                    if name.startswith("top")
                    else f"{_pct(v)} of its characters are in repeated {n}-word sequences"
                )
                out.add(
                    int(row),
                    "repeated_ngrams",
                    _past(v, limit, 1.0),
                    f"text is repetitive ({what}; maximum {_pct(limit)})",
                    {name: limit},
                )

        # Gibberish: letter pairs unlike English.
        gib = _floats(metrics, "gibberish")
        z, _ = _robust_z(gib, valid, 0.1)
        candidates = valid & np.isfinite(gib) & (n_words >= s.min_words_gibberish) & (gib > s.max_gibberish)
        broken = _guard(candidates, z, valid, s, relative)
        for row in np.flatnonzero(broken):
            g = float(gib[row])
            out.add(
                int(row),
                "gibberish",
                _past(g, s.max_gibberish, s.max_gibberish + 1.0),
                f"text looks like gibberish (its letter pairs are unlike English: {g:.1f} bits per letter; "
                f"maximum {s.max_gibberish:.1f}; English prose is about 3.6)",
                s.max_gibberish,
            )
    return out


_TEXT_EVIDENCE = (
    "n_words",
    "n_chars",
    "n_lines",
    "alpha_words",
    "letter_ratio",
    "mean_word_length",
    "symbol_ratio",
    "dup_line_frac",
    "dup_line_char_frac",
    *(f"top_{n}gram" for n in _TOP_NS),
    *(f"dup_{n}gram" for n in _DUP_NS),
    "gibberish",
)
_IMAGE_EVIDENCE = (
    "width",
    "height",
    "aspect",
    "brightness",
    "contrast",
    "colour_std",
    "blur",
    "entropy",
    "near_white",
    "near_black",
)


def _image_reasons(metrics: Signals, valid: B, settings: QualitySettings) -> _Rows:
    """Evaluate every image rule; ``valid`` marks the decoded, non-empty rows."""
    out = _Rows()
    s = settings
    relative = int(valid.sum()) >= s.min_relative_records
    width, height = _floats(metrics, "width"), _floats(metrics, "height")
    with np.errstate(invalid="ignore"):
        short_side = np.minimum(width, height)
        aspect = _floats(metrics, "aspect")
        brightness = _floats(metrics, "brightness")
        contrast = _floats(metrics, "contrast")
        colour_std = _floats(metrics, "colour_std")
        blur = _floats(metrics, "blur")
        entropy = _floats(metrics, "entropy")

        def dims(row: int) -> str:
            return f"{int(width[row])}x{int(height[row])}"

        # Tiny: under the absolute minimum and, in a large enough dataset, well under its median.
        tiny = valid & (short_side < s.min_side)
        if relative:
            tiny &= short_side < s.size_fraction_of_median * float(np.median(short_side[valid]))
        for row in np.flatnonzero(tiny):
            out.add(
                int(row),
                "tiny",
                _past(float(short_side[row]), s.min_side, 1.0),
                f"image is tiny ({dims(int(row))} pixels; minimum side {s.min_side})",
                s.min_side,
            )

        # Odd shape: an extreme aspect ratio, also far from the dataset's usual one.
        odd = valid & (aspect > s.max_aspect)
        if relative:
            odd &= aspect > s.aspect_factor_of_median * float(np.median(aspect[valid]))
        for row in np.flatnonzero(odd):
            a = float(aspect[row])
            out.add(
                int(row),
                "aspect",
                _past(math.log(a), math.log(s.max_aspect), math.log(max(_ASPECT_EXTREME, s.max_aspect * 2))),
                f"image has an extreme aspect ratio of {a:.0f}:1 "
                f"({dims(int(row))}; maximum {s.max_aspect:g}:1)",
                s.max_aspect,
            )

        # A single flat colour: no information at all (absolute).
        spread = np.maximum(contrast, colour_std)
        flat = valid & (spread < s.max_flat_std)
        for row in np.flatnonzero(flat):
            out.add(
                int(row),
                "flat",
                1.0 - 0.5 * float(spread[row]) / s.max_flat_std,
                f"image is a single flat colour (pixel standard deviation {float(spread[row]):.1f})",
                s.max_flat_std,
            )

        # Too dark / too bright: absolute bounds, and outliers of the dataset when it is large enough.
        zb, _ = _robust_z(brightness, valid, 4.0)
        dark = valid & (brightness < s.max_dark_brightness)
        bright = valid & (brightness > s.min_bright_brightness)
        if relative:
            dark &= zb < -s.outlier_z
            bright &= zb > s.outlier_z
        for row in np.flatnonzero(dark):
            b = float(brightness[row])
            out.add(
                int(row),
                "dark",
                _past(b, s.max_dark_brightness, 0.0),
                f"image is very dark (mean brightness {b:.0f}/255; maximum {s.max_dark_brightness:g})",
                s.max_dark_brightness,
            )
        for row in np.flatnonzero(bright):
            b = float(brightness[row])
            out.add(
                int(row),
                "bright",
                _past(b, s.min_bright_brightness, 255.0),
                f"image is very bright (mean brightness {b:.0f}/255; minimum {s.min_bright_brightness:g})",
                s.min_bright_brightness,
            )

        if not relative:
            return out
        # Low contrast, low information and blur: only as outliers of the dataset, and not for flat or
        # tiny pictures (which are reported as such, and where these measures mean little).
        detail = valid & ~flat & ~tiny & (short_side >= 3)
        zc, med_c = _robust_z(contrast, detail, 2.0)
        low_contrast = detail & (contrast < s.max_low_contrast) & (zc < -s.outlier_z)
        for row in np.flatnonzero(low_contrast):
            c = float(contrast[row])
            out.add(
                int(row),
                "low_contrast",
                max(_past(c, s.max_low_contrast, 0.0), _z_excess(float(zc[row]), s.outlier_z)),
                f"image has very low contrast (grey-level standard deviation {c:.1f}; "
                f"dataset median {med_c:.1f})",
                s.max_low_contrast,
            )
        ze, med_e = _robust_z(entropy, detail, 0.1)
        low_info = detail & (entropy < s.max_low_entropy) & (ze < -s.outlier_z)
        for row in np.flatnonzero(low_info):
            e = float(entropy[row])
            out.add(
                int(row),
                "low_information",
                max(_past(e, s.max_low_entropy, 0.0), _z_excess(float(ze[row]), s.outlier_z)),
                f"image carries little information (grey-level entropy {e:.2f} bits; "
                f"dataset median {med_e:.2f})",
                s.max_low_entropy,
            )
        # Blur: a robust outlier, or far below the dataset's low tail (which still works when the
        # dataset mixes sharp and soft sources, where the MAD is large).
        log_blur = np.log10(1.0 + np.maximum(blur, 0.0))
        zl, _ = _robust_z(log_blur, detail, 0.1)
        med_blur = float(np.median(blur[detail])) if detail.any() else float("nan")
        gap = math.log10(s.blur_tail_factor)
        tail = float(np.quantile(log_blur[detail], s.blur_tail_quantile)) - gap if detail.any() else -1.0
        blurry = detail & ~low_contrast & (blur < s.max_blur) & ((zl < -s.outlier_z) | (log_blur < tail))
        for row in np.flatnonzero(blurry):
            v = float(blur[row])
            excess = max(
                _z_excess(float(zl[row]), s.outlier_z),
                _past(float(log_blur[row]), tail, tail - _Z_EXTREME * gap),
            )
            out.add(
                int(row),
                "blurry",
                excess,
                f"image is blurry (Laplacian variance {v:.1f}; dataset median {med_blur:.0f})",
                s.max_blur,
            )
    return out


def _evidence(metrics: Signals, names: tuple[str, ...], row: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names:
        v = metrics.column(name)[row].as_py()
        values[name] = round(v, 4) if isinstance(v, float) else v
    return values


@register
class LowQualityCheck(Check):
    """Records whose content is of low quality (see ``QualitySettings`` for every rule)."""

    name = "low_quality"
    description = (
        "Texts that are too short, repetitive, mostly non-alphabetic or gibberish; "
        "images that are too dark, bright, blurry, flat, tiny or oddly shaped."
    )

    def applies(self, context: Context) -> str | None:
        """Needs text or image content."""
        return None if context.dataset.modality in ("text", "image") else "no text or image column"

    def run(self, context: Context) -> pa.Table:
        """Report each low-quality record once, with every reason it is reported for."""
        settings = quality_settings(context)
        metrics = quality_metrics(context)
        n = context.dataset.num_rows
        bad = np.zeros(n, dtype=bool)
        bad[np.fromiter(bad_rows(context), dtype=np.int64)] = True
        if metrics.modality == "text":
            valid = (_floats(metrics, "n_words") > 0) & ~bad
            found = _text_reasons(metrics, valid, settings)
            names = _TEXT_EVIDENCE
        else:
            errors = np.asarray([e is not None for e in metrics.column("error").to_pylist()], dtype=bool)
            valid = ~errors & ~bad
            found = _image_reasons(metrics, valid, settings)
            names = _IMAGE_EVIDENCE
        return _findings(self.name, context.record_ids, metrics, names, found, settings)


def _findings(
    check: str,
    ids: Sequence[str],
    metrics: Signals,
    names: tuple[str, ...],
    found: _Rows,
    settings: QualitySettings,
) -> pa.Table:
    out = FindingsBuilder(check)
    for row in sorted(found.reasons):
        reasons = sorted(found.reasons[row], key=lambda r: -r.excess)
        worst = reasons[0].excess
        severity: Severity = "warning" if worst >= settings.mild_excess else "info"
        evidence = _evidence(metrics, names, row)
        evidence["reasons"] = [r.key for r in reasons]
        evidence["limits"] = {r.key: r.limit for r in reasons}
        out.add(
            ids[row],
            score=0.5 + 0.5 * worst,
            severity=severity,
            message="; ".join(r.text for r in reasons),
            evidence=evidence,
        )
    return out.table()
