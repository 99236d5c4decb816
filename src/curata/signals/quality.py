"""Quality signals: per-record metrics that say how usable a text or a picture is.

Text metrics (``text_quality_batch``), computed on the raw text:

* ``n_words`` (whitespace-separated tokens), ``n_chars`` (characters of the stripped text) and
  ``n_lines`` (non-blank lines);
* ``alpha_words``: the fraction of words holding at least one letter (Gopher keeps >= 80%);
* ``letter_ratio``: letters over non-space characters;
* ``mean_word_length``: non-space characters per word (Gopher keeps 3..10);
* ``symbol_ratio``: ``#`` and ellipses (``...``, ``…``) per word (Gopher keeps <= 0.1);
* Gopher repetition measures (Rae et al. 2021, appendix A) over lower-cased ``\\w+`` tokens:
  ``dup_line_frac`` and ``dup_line_char_frac`` (lines, and their characters, that repeat an
  earlier line), ``top_2gram`` .. ``top_4gram`` (the share of token characters covered by the
  most frequent n-gram, when it occurs more than once) and ``dup_5gram`` .. ``dup_10gram`` (the
  share of token characters inside any n-gram that occurs more than once; overlaps count once);
* ``gibberish``: the mean surprise, in bits per letter transition, of the text's ASCII letters
  under a character-bigram model of English prose (``_ENGLISH``, shipped below; word boundaries
  are a symbol of their own). English prose scores about 3-4.5; keyboard mashing and random
  letters 5.5 and more. Null when the text has fewer than ``_MIN_TRANSITIONS`` transitions or its
  letters are mostly outside ASCII (another script, where an English model says nothing).

Image metrics (``image_quality_batch``), from the picture composited on white, made grey and
reduced so that its longest side is at most ``QualitySettings.work_side`` (never enlarged):
``width``/``height`` (of the file), ``aspect`` (long side over short side), ``brightness`` (mean
grey level 0-255), ``contrast`` (grey standard deviation), ``colour_std`` (largest per-channel
standard deviation, so a flat red picture is flat too), ``blur`` (variance of the 4-neighbour
Laplacian of the grey copy: low means few sharp edges), ``entropy`` (of the 256-bin grey
histogram, in bits), ``near_white`` and ``near_black`` (shares of pixels at or above
``light_level`` / at or below ``dark_level``). ``error`` holds why a picture could not be
measured (undecodable files are the ``corrupt`` check's business, not this one's).

``QualitySettings`` holds both the few parameters that change these stored metrics (named by
:meth:`QualitySettings.fingerprint`, which keys the signal cache) and the thresholds the
``low_quality`` check applies to them (which do not, so changing a threshold reuses the cache).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import xxhash
from PIL import Image

from curata.errors import ConfigError
from curata.signals.image import ImageDecodeError, decode_image, on_white

__all__ = [
    "ALGORITHM_VERSION",
    "IMAGE_QUALITY_SCHEMA",
    "TEXT_QUALITY_SCHEMA",
    "QualitySettings",
    "english_bigram_model",
    "gibberish_score",
    "image_quality_batch",
    "text_quality_batch",
]

#: Bump whenever a stored metric would change for the same content; part of the fingerprint.
ALGORITHM_VERSION = 1

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class QualitySettings:
    """Parameters of the quality metrics and the thresholds of the ``low_quality`` check.

    Metric parameters (part of :meth:`fingerprint`):

    * ``work_side``: longest side, in pixels, of the grey copy the image metrics are measured on
      (larger pictures are reduced with a box filter; smaller ones are measured as they are);
    * ``dark_level`` / ``light_level``: grey levels at or below / at or above which a pixel counts
      as near-black / near-white.

    Text thresholds (absolute, after Gopher, loosened where Gopher's web-page filter would flag
    several per cent of clean technical prose; measured on ``curata.demo.real_paragraphs``):

    * ``min_words`` (5): fewer words is "too short"; but never more than
      ``short_fraction_of_median`` (0.25) of the dataset's median word count, so a dataset of
      titles or short answers is not flagged wholesale (empty text is the ``empty`` check's);
    * ``min_alpha_words`` (0.5): the least share of words holding a letter (Gopher: 0.8, which
      flags bullet lists);
    * ``max_symbol_ratio`` (0.2): the most ``#``/ellipses per word (Gopher: 0.1);
    * ``min_mean_word_length`` / ``max_mean_word_length`` (2.5 / 15): mean word length bounds
      (Gopher: 3 / 10; 15 leaves room for technical prose and compounding languages);
    * ``max_dup_line_frac`` (0.3) and ``max_dup_line_char_frac`` (0.2), both broken, in a text
      of at least 3 lines: Gopher's repeated-line limits;
    * ``max_top_ngram`` (n = 2, 3, 4: 0.20, 0.18, 0.16) and ``max_dup_ngram`` (n = 5..10: 0.15
      .. 0.10): Gopher's n-gram limits, reported when a measure exceeds its limit by
      ``repetition_factor`` (3; at 1, 6.8% of the demo paragraphs break one, mostly parameter
      lists), in texts of at least ``min_words_repetition`` (15) words;
    * ``max_gibberish`` (5.0 bits per letter transition; the demo paragraphs reach 4.6, keyboard
      mashing 5.5 and more), for texts of at least ``min_words_gibberish`` (4) words.

    Image thresholds: ``min_side`` (16 px, and below ``size_fraction_of_median`` (0.5) of the
    dataset's median short side), ``max_aspect`` (5:1, and above ``aspect_factor_of_median`` (2)
    times the dataset's median), ``max_flat_std`` (2 grey levels: a single flat colour),
    ``max_dark_brightness`` (20) and ``min_bright_brightness`` (245) mean grey levels,
    ``max_low_contrast`` (12, grey std), ``max_low_entropy`` (2 bits) and ``max_blur`` (100,
    Laplacian variance). Brightness, contrast, entropy and blur are only reported when the
    picture is also a robust outlier of the dataset: its robust z-score ``(x - median) / (1.4826
    MAD)`` (over ``log10(1 + blur)`` for blur) is beyond ``outlier_z`` (3.5, Iglewicz-Hoaglin) on
    the bad side, so a dataset of small soft icons or of night photographs is not flagged
    wholesale. A picture is also blurry when its Laplacian variance is ``blur_tail_factor`` (4)
    times below the dataset's ``blur_tail_quantile`` (5%) quantile: in a dataset that mixes sharp
    and soft sources the MAD is wide, and the low tail still shows what "soft" means. Contrast,
    entropy and blur need at least ``min_relative_records`` (20) measured pictures for that;
    with fewer, only the absolute rules (size, aspect, flat, dark, bright) run.

    Anti-flood guard for text: when more than ``max_rule_share`` (0.25) of a dataset's texts
    (with at least ``min_relative_records`` texts) break one absolute rule, that rule describes
    the dataset rather than a few bad records, and only the texts that are also robust outliers
    on its metric are reported.

    Scores: each broken rule has an excess in [0, 1] (0 at the threshold, 1 at an extreme value
    such as a single word, no letters or a black picture); a finding's score is ``0.5 + 0.5 *``
    its largest excess and its severity ``warning``, or ``info`` when that excess is below
    ``mild_excess`` (0.3).
    """

    # metric parameters (fingerprinted)
    work_side: int = 256
    dark_level: int = 16
    light_level: int = 240
    # text thresholds
    min_words: int = 5
    short_fraction_of_median: float = 0.25
    min_alpha_words: float = 0.5
    max_symbol_ratio: float = 0.2
    min_mean_word_length: float = 2.5
    max_mean_word_length: float = 15.0
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_top_ngram: tuple[float, float, float] = (0.20, 0.18, 0.16)
    max_dup_ngram: tuple[float, float, float, float, float, float] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    repetition_factor: float = 3.0
    min_words_repetition: int = 15
    max_gibberish: float = 5.0
    min_words_gibberish: int = 4
    # image thresholds
    min_side: int = 16
    size_fraction_of_median: float = 0.5
    max_aspect: float = 5.0
    aspect_factor_of_median: float = 2.0
    max_flat_std: float = 2.0
    max_dark_brightness: float = 20.0
    min_bright_brightness: float = 245.0
    max_low_contrast: float = 12.0
    max_low_entropy: float = 2.0
    max_blur: float = 100.0
    blur_tail_quantile: float = 0.05
    blur_tail_factor: float = 4.0
    # dataset-relative rules and scoring
    outlier_z: float = 3.5
    min_relative_records: int = 20
    max_rule_share: float = 0.25
    mild_excess: float = 0.3
    threads: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.work_side <= 4096:
            raise ConfigError(f"QualitySettings.work_side must be in 8..4096, got {self.work_side}")
        if not 0 <= self.dark_level < self.light_level <= 255:
            raise ConfigError(
                f"QualitySettings needs 0 <= dark_level < light_level <= 255, "
                f"got {self.dark_level} and {self.light_level}"
            )
        for name in ("min_words", "min_words_repetition", "min_words_gibberish", "min_side"):
            if getattr(self, name) < 1:
                raise ConfigError(f"QualitySettings.{name} must be at least 1, got {getattr(self, name)}")
        if self.min_relative_records < 3:
            raise ConfigError(
                f"QualitySettings.min_relative_records must be at least 3, got {self.min_relative_records}"
            )
        if self.threads < 0:
            raise ConfigError(f"QualitySettings.threads must be >= 0 (0 = one per core), got {self.threads}")
        shares = (
            "short_fraction_of_median",
            "min_alpha_words",
            "max_dup_line_frac",
            "max_dup_line_char_frac",
            "size_fraction_of_median",
            "max_rule_share",
            "mild_excess",
        )
        for name in shares:
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"QualitySettings.{name} must be in (0, 1], got {value}")
        if len(self.max_top_ngram) != 3 or len(self.max_dup_ngram) != 6:
            raise ConfigError(
                "QualitySettings.max_top_ngram needs 3 values (n=2..4), max_dup_ngram 6 (n=5..10)"
            )
        if not all(0.0 < v <= 1.0 for v in (*self.max_top_ngram, *self.max_dup_ngram)):
            raise ConfigError("QualitySettings n-gram limits must be in (0, 1]")
        if not 0 < self.min_mean_word_length < self.max_mean_word_length:
            raise ConfigError(
                "QualitySettings needs 0 < min_mean_word_length < max_mean_word_length, "
                f"got {self.min_mean_word_length} and {self.max_mean_word_length}"
            )
        if not 0 <= self.max_dark_brightness < self.min_bright_brightness <= 255:
            raise ConfigError(
                "QualitySettings needs 0 <= max_dark_brightness < min_bright_brightness <= 255, "
                f"got {self.max_dark_brightness} and {self.min_bright_brightness}"
            )
        positive = (
            "max_symbol_ratio",
            "repetition_factor",
            "max_gibberish",
            "max_aspect",
            "aspect_factor_of_median",
            "max_flat_std",
            "max_low_contrast",
            "max_low_entropy",
            "max_blur",
            "outlier_z",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"QualitySettings.{name} must be a positive number, got {value!r}")
        if not 0.0 < self.blur_tail_quantile < 0.5:
            raise ConfigError(
                f"QualitySettings.blur_tail_quantile must be in (0, 0.5), got {self.blur_tail_quantile}"
            )
        if not self.blur_tail_factor > 1.0:
            raise ConfigError(
                f"QualitySettings.blur_tail_factor must be above 1, got {self.blur_tail_factor}"
            )
        if self.max_aspect < 1:
            raise ConfigError(f"QualitySettings.max_aspect must be at least 1, got {self.max_aspect}")

    def fingerprint(self, modality: str) -> str:
        """The cache key part naming the metric code version and the settings that change metrics.

        Thresholds are left out: they only change what the check reports, not what is stored.
        """
        if modality == "text":
            return f"quality-text-v{ALGORITHM_VERSION}|model={_MODEL_ID}"
        return (
            f"quality-image-v{ALGORITHM_VERSION}|side={self.work_side}"
            f"|dark={self.dark_level}|light={self.light_level}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------- text

# English prose the letter-pair model is estimated from: plain sentences on everyday subjects,
# written for this module (so nothing is downloaded and the model never changes under a cache).
_ENGLISH = """
The morning was cold and clear, and the river ran quickly under the old stone bridge. People
walked to work with their hands in their pockets, talking about the weather, the price of bread
and the news from the city. A small boy followed his mother through the market, asking questions
about everything he saw: why the fish had silver scales, why the apples were so red, and whether
the baker would give him a piece of warm cake if he asked politely.

Science begins with curiosity. A good experiment asks a simple question and measures the answer
carefully, so that another person can repeat the work and find the same result. When the results
do not agree, the scientist must look again at the method, the instruments and the assumptions
that were made along the way. Over many years, these small corrections build a body of knowledge
that we can trust, even though every part of it remains open to question.

The history of the town is written in its buildings. The church was built in the twelfth century,
the town hall in the seventeenth, and the railway station arrived with the industrial age, when
factories along the canal produced cloth, paper and machines for the whole country. Today most of
the factories are gone, and their brick halls have become offices, flats, galleries and cafes
where young families meet on the weekend.

To make a simple soup, chop two onions, three carrots and a few sticks of celery, and cook them
slowly in butter until they are soft. Add a handful of lentils, a bay leaf and enough water or
stock to cover everything, then let it simmer for about forty minutes. Season with salt and
pepper, and serve it with fresh bread. The soup keeps well for several days and tastes even
better the next morning.

Computers follow instructions exactly, which is both their strength and their weakness. A program
that works for one kind of input may fail completely for another, and the error can be hard to
find. Careful engineers write tests that describe what the software should do, check the edge
cases, and read each other's code before it is released. They also keep records of the changes
they make, so that a problem can be traced back to the moment it was introduced.

The company reported strong growth in the first quarter of the year. Sales increased in every
region, and the new products were well received by customers. However, the board warned that
costs were rising, especially for energy and transport, and that the second half of the year
would be more difficult. Investors responded calmly, and the share price remained almost
unchanged by the end of the week.

She opened the window and listened to the birds in the garden. It had rained during the night,
and the grass was still wet, shining in the early light. Somewhere in the distance a dog was
barking, and a train was crossing the valley towards the mountains. She thought about the long
journey ahead of her, the friends she would visit and the letters she had promised to write.

Health depends on many ordinary habits: sleeping enough, eating a variety of fresh food, moving
the body every day and spending time with other people. Doctors agree that no single rule is
right for everyone, but small changes, kept up over months and years, often matter more than
dramatic plans that are quickly forgotten. Children learn these habits by watching the adults
around them.

The committee will meet again next Thursday to discuss the proposal. Members are asked to read
the attached documents in advance and to send any questions to the secretary before the meeting.
If you cannot attend, please let us know as soon as possible, so that we can arrange for your
views to be heard. Thank you for your patience and your help with this important work.

Mountains shape the climate of the regions around them. Moist air rising over the high ground
cools and drops its rain on one side, while the other side stays dry and sunny for most of the
year. Farmers have always understood this pattern, choosing the valleys for their fields and the
slopes for their animals, and building their villages where water and shelter could be found.

Language changes with every generation. New words enter through technology, music and travel,
while old words slowly fall out of use or take on new meanings. Dictionaries try to describe
how people actually speak and write, rather than how they ought to, and each edition records a
little of the history of the society that produced it.
"""

#: Letter-pair alphabet: a..z, then 26 for any word boundary.
_BOUNDARY = 26
_MIN_TRANSITIONS = 12
_NON_LETTER = re.compile(r"[^a-z]+")
#: Letters of any script (a word character that is not a digit or an underscore).
_LETTER = re.compile(r"[^\W\d_]")


def _count_letters(text: str) -> int:
    """Number of letters (any script) in ``text``."""
    return sum(map(str.isalpha, text))


@lru_cache(maxsize=1)
def english_bigram_model() -> F64:
    """Return ``-log2 P(next | previous)`` (27 x 27, index 26 = word boundary) estimated from ``_ENGLISH``.

    Counts get add-0.5 smoothing, so letter pairs the sample never shows are unlikely, not impossible.
    """
    codes = _letter_codes(_ENGLISH)
    counts = np.zeros((27, 27), dtype=np.float64)
    np.add.at(counts, (codes[:-1], codes[1:]), 1.0)
    counts[_BOUNDARY, _BOUNDARY] = 0.0
    counts += 0.5
    probs = counts / counts.sum(axis=1, keepdims=True)
    surprise: F64 = -np.log2(probs)
    surprise.setflags(write=False)
    return surprise


def _letter_codes(text: str) -> npt.NDArray[np.int64]:
    """Map ``text`` to letter codes 0..25 with runs of anything else as one boundary 26, boundary-padded."""
    squeezed = " " + _NON_LETTER.sub(" ", text.lower()) + " "
    raw = np.frombuffer(squeezed.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("a")
    raw[raw < 0] = _BOUNDARY  # the space
    return raw


#: Names the model in the text fingerprint: a changed sample changes every gibberish score.
_MODEL_ID = "bigram-" + xxhash.xxh64_hexdigest(_ENGLISH.encode())[:8]


def gibberish_score(text: str) -> float | None:
    """Mean bits per letter transition of ``text`` under the English letter-pair model, or None.

    None when the text has fewer than ``_MIN_TRANSITIONS`` transitions, or when most of its letters
    are not ASCII letters (another script, which an English model cannot judge).
    """
    lower = text.lower()
    ascii_letters = len(_NON_LETTER.sub("", lower))
    letters = _count_letters(lower)
    if letters == 0 or ascii_letters < 0.5 * letters:
        return None
    codes = _letter_codes(lower)
    prev, nxt = codes[:-1], codes[1:]
    keep = ~((prev == _BOUNDARY) & (nxt == _BOUNDARY))
    n = int(keep.sum())
    if n < _MIN_TRANSITIONS:
        return None
    return float(english_bigram_model()[prev[keep], nxt[keep]].mean())


_TOKEN = re.compile(r"\w+")
_TOP_NS = (2, 3, 4)
_DUP_NS = (5, 6, 7, 8, 9, 10)

TEXT_QUALITY_SCHEMA = pa.schema(
    [
        pa.field("n_words", pa.int32()),
        pa.field("n_chars", pa.int32()),
        pa.field("n_lines", pa.int32()),
        pa.field("alpha_words", pa.float32()),
        pa.field("letter_ratio", pa.float32()),
        pa.field("mean_word_length", pa.float32()),
        pa.field("symbol_ratio", pa.float32()),
        pa.field("dup_line_frac", pa.float32()),
        pa.field("dup_line_char_frac", pa.float32()),
        *(pa.field(f"top_{n}gram", pa.float32()) for n in _TOP_NS),
        *(pa.field(f"dup_{n}gram", pa.float32()) for n in _DUP_NS),
        pa.field("gibberish", pa.float32()),
    ]
)


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def _top_ngram_share(tokens: list[str], lengths: list[int], total: int, n: int) -> float:
    """Share of token characters covered by the most frequent n-gram (0 when none repeats)."""
    grams = _ngrams(tokens, n)
    if not grams:
        return 0.0
    gram, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(len(t) for t in gram) / total)


def _dup_ngram_share(tokens: list[str], lengths: list[int], total: int, n: int) -> float:
    """Share of token characters inside n-grams that occur more than once (overlaps counted once)."""
    grams = _ngrams(tokens, n)
    if not grams:
        return 0.0
    counts = Counter(grams)
    if max(counts.values()) < 2:
        return 0.0
    covered = np.zeros(len(tokens) + 1, dtype=np.int32)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i] += 1
            covered[i + n] -= 1
    mask = np.cumsum(covered[:-1]) > 0
    return float(np.asarray(lengths, dtype=np.int64)[mask].sum() / total)


def _text_row(text: str | None) -> tuple[Any, ...]:
    """One row of ``TEXT_QUALITY_SCHEMA``; all nulls for missing or blank text."""
    width = len(TEXT_QUALITY_SCHEMA)
    if text is None or not text.strip():
        return (0, 0, 0, *([None] * (width - 3)))
    words = text.split()
    n_words = len(words)
    non_space = sum(len(w) for w in words)
    alpha_words = sum(1 for w in words if _LETTER.search(w)) / n_words
    letters = _count_letters(text)
    symbols = text.count("#") + text.count("...") + text.count("…")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    seen: set[str] = set()
    dup_lines = dup_line_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_line_chars += len(line)
        seen.add(line)
    line_chars = sum(len(line) for line in lines)
    tokens = _TOKEN.findall(text.lower())
    lengths = [len(t) for t in tokens]
    total = sum(lengths)
    tops, dups = [0.0] * len(_TOP_NS), [0.0] * len(_DUP_NS)
    # An n-gram can only repeat where its (n-1)-gram prefix repeats: stop at the first n without repeats.
    for k, n in enumerate(_TOP_NS):
        tops[k] = _top_ngram_share(tokens, lengths, total, n) if total else 0.0
        if tops[k] == 0.0:
            break
    for k, n in enumerate(_DUP_NS):
        dups[k] = _dup_ngram_share(tokens, lengths, total, n) if total else 0.0
        if dups[k] == 0.0:
            break
    return (
        n_words,
        len(text.strip()),
        len(lines),
        alpha_words,
        letters / non_space,
        non_space / n_words,
        symbols / n_words,
        dup_lines / len(lines),
        dup_line_chars / line_chars,
        *tops,
        *dups,
        gibberish_score(text),
    )


def text_quality_batch(texts: Sequence[str | None], settings: QualitySettings) -> pa.RecordBatch:
    """Return one row of ``TEXT_QUALITY_SCHEMA`` per text, in order (blank or missing text: nulls)."""
    del settings  # no text metric has a parameter; kept for a uniform batch-function signature
    rows = [_text_row(t) for t in texts]
    columns = [[r[k] for r in rows] for k in range(len(TEXT_QUALITY_SCHEMA))]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, TEXT_QUALITY_SCHEMA, strict=True)],
        schema=TEXT_QUALITY_SCHEMA,
    )


# ---------------------------------------------------------------------------------------- images

IMAGE_QUALITY_SCHEMA = pa.schema(
    [
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("aspect", pa.float32()),
        pa.field("brightness", pa.float32()),
        pa.field("contrast", pa.float32()),
        pa.field("colour_std", pa.float32()),
        pa.field("blur", pa.float32()),
        pa.field("entropy", pa.float32()),
        pa.field("near_white", pa.float32()),
        pa.field("near_black", pa.float32()),
        pa.field("error", pa.string()),
    ]
)

_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _pixels(img: Image.Image, side: int) -> tuple[F64, F64]:
    """Return (grey, colour) float arrays of ``img`` on white, reduced to at most ``side`` pixels a side.

    ``colour`` is H x W x C (C = 1 for grey pictures). High-bit-depth greys are scaled to 0..255.
    """
    if img.mode in _HIGH_DEPTH:
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(255.0, float(arr.max(initial=0.0)))
        work = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    else:
        work = on_white(img)
    longest = max(work.size)
    if longest > side:
        scale = side / longest
        size = (max(1, round(work.width * scale)), max(1, round(work.height * scale)))
        work = work.resize(size, Image.Resampling.BOX)
    colour = np.asarray(work, dtype=np.float64)
    if colour.ndim == 2:
        return colour, colour[:, :, None]
    grey = np.asarray(work.convert("L"), dtype=np.float64)
    return grey, colour


def _laplacian_variance(grey: F64) -> float:
    """Variance of the 4-neighbour Laplacian over the interior (0 for pictures under 3x3)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    return float(lap.var())


def _image_row(item: bytes | None, settings: QualitySettings) -> tuple[Any, ...]:
    """One row of ``IMAGE_QUALITY_SCHEMA``; never raises for bad input."""
    blank = [None] * (len(IMAGE_QUALITY_SCHEMA) - 1)
    if item is None:
        return (*blank, "file not readable")
    try:
        img = decode_image(item)
        width, height = img.size
        grey, colour = _pixels(img, settings.work_side)
    except ImageDecodeError as exc:
        return (*blank, str(exc).split(":", 1)[0] or "cannot decode")
    except Exception as exc:  # a plug-in bug on one odd file must not stop a whole scan
        return (*blank, f"decode failed: {type(exc).__name__}")
    levels = np.clip(np.rint(grey), 0, 255).astype(np.int64).ravel()
    hist = np.bincount(levels, minlength=256).astype(np.float64)
    p = hist[hist > 0] / levels.size
    entropy = float(-(p * np.log2(p)).sum()) + 0.0
    channel_std = colour.reshape(-1, colour.shape[2]).std(axis=0)
    return (
        width,
        height,
        max(width, height) / min(width, height),
        float(grey.mean()),
        float(grey.std()),
        float(channel_std.max()),
        _laplacian_variance(grey),
        entropy,
        float((levels >= settings.light_level).mean()),
        float((levels <= settings.dark_level).mean()),
        None,
    )


def image_quality_batch(items: Sequence[bytes | None], settings: QualitySettings) -> pa.RecordBatch:
    """Return one row of ``IMAGE_QUALITY_SCHEMA`` per item (``None`` = unreadable file), in order.

    Decoding runs on a thread pool of ``settings.threads`` (0 = one per core; Pillow and numpy
    release the GIL for most of the work).
    """
    threads = settings.threads or (os.cpu_count() or 1)
    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            rows = list(pool.map(lambda b: _image_row(b, settings), items, chunksize=16))
    else:
        rows = [_image_row(b, settings) for b in items]
    columns = [[r[k] for r in rows] for k in range(len(IMAGE_QUALITY_SCHEMA))]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, IMAGE_QUALITY_SCHEMA, strict=True)],
        schema=IMAGE_QUALITY_SCHEMA,
    )
