"""Image signals: strict decoding, exact pixel hashes, perceptual codes and thumbnails.

The perceptual code stored per image (the ``phash`` column, ``fixed_size_binary(CODE_BYTES)``,
1,184 bytes) has three parts, all computed from the picture composited on white and
cropped to its "ink box" (see ``_ink_box``: the part of a drawing on a uniform page that
holds the central 99% of its ink, so margins, re-framing and faint anti-aliased edges do
not move it):

* bytes 0-31: a 256-bit DCT hash (pHash): the 16x16 lowest frequencies of a 64x64
  greyscale resample, one bit per coefficient (above the median or not; the DC bit is 0);
* bytes 32-1055: the 32x32 greyscale thumbnail of the same crop (uint8, row-major);
* bytes 1056-1183: the 8x8 Cb then 8x8 Cr thumbnails of the crop (128 = no colour).

Near duplicates are found in two steps: candidate pairs whose hashes are within
``ImageHashSettings.max_distance`` bits (exact search, ``curata.index``), then checks of
the stored thumbnails (``PairMetrics``, thresholds in ``ImageHashSettings``): the grey
thumbnails must correlate and be structurally similar (SSIM over 4x4 windows) enough for
the hash distance; two coloured pictures must agree in colour in every chroma cell; the
grey thumbnails' block means must agree up to a brightness gain; and when exactly one
picture is grey -- it may be a greyscale copy of the other, so colour cannot be compared --
their luminance must agree closely, since greyscale conversion keeps it.  Together these
separate the many colour variants and look-alikes of one drawing (clip-art collections are
full of them) from resized, re-encoded, cropped, brightened and greyscale copies.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import xxhash
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from curata.errors import ConfigError, InputError
from curata.index import hamming_cross_pairs, hamming_pairs

__all__ = [
    "CODE_BYTES",
    "HASH_BITS",
    "ImageDecodeError",
    "ImageHashSettings",
    "PairMetrics",
    "cross_near_duplicate_pairs",
    "decode_image",
    "image_signals",
    "near_duplicate_image_pairs",
    "perceptual_codes",
    "pixel_hash",
    "thumbnail_data_uri",
]

#: Bump when any code below changes its output for the same pixels; it is part of the fingerprint.
ALGORITHM_VERSION = 2

# Side of the greyscale square the DCT runs on, and the low-frequency block kept (16x16 = 256 bits).
_DCT_SIDE = 64
_LOW = 16
#: Bits of the perceptual hash, the part compared by Hamming distance.
HASH_BITS = _LOW * _LOW
_HASH_BYTES = HASH_BITS // 8
# Side of the greyscale thumbnail kept for verification, and of the colour (Cb, Cr) thumbnails.
_THUMB = 32
_CHROMA = 8

#: Width in bytes of the ``phash`` column: hash, grey thumbnail, Cb thumbnail, Cr thumbnail.
CODE_BYTES = _HASH_BYTES + _THUMB * _THUMB + 2 * _CHROMA * _CHROMA

#: Largest picture decoded, in pixels; Pillow's own warning limit, enforced as an error here.
MAX_PIXELS = 89_478_485


class ImageDecodeError(InputError):
    """The bytes given cannot be decoded into a complete picture; the message says why."""


def _dct_matrix(n: int, keep: int) -> npt.NDArray[np.float64]:
    """Return the first ``keep`` rows of the orthonormal DCT-II matrix of size ``n``."""
    k = np.arange(keep, dtype=np.float64)[:, None]
    x = np.arange(n, dtype=np.float64)[None, :]
    m: npt.NDArray[np.float64] = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(_DCT_SIDE, _LOW)


@dataclass(frozen=True)
class ImageHashSettings:
    """How near-duplicate candidates are found and verified.

    Candidates are pairs whose 256-bit perceptual hashes differ in at most
    ``max_distance`` bits.  A candidate at hash distance ``d`` is then checked on the
    stored thumbnails (see ``PairMetrics``); each threshold that is ``None`` turns its
    check off.  The two structural checks rise linearly with ``d`` from their first
    value (at ``d = 0``) to their ``_far`` value (at ``d = max_distance``): close hashes
    need less pictorial evidence than distant ones.

    * ``min_correlation`` .. ``min_correlation_far``: the Pearson correlation of the two
      32x32 grey thumbnails (blind to brightness and contrast, so brightened, darkened
      and greyscale copies keep it);
    * ``min_structure`` .. ``min_structure_far``: their structural similarity (SSIM,
      averaged over 4x4-pixel windows), which compares every part of the picture, so
      look-alike drawings that share a global layout but differ in details fail it;
    * ``max_colour_difference``: when both pictures have colour, the largest difference
      of their 8x8 chroma thumbnails in any cell (``|dCb| + |dCr|``, grey levels): colour
      variants of one drawing differ strongly somewhere even when most of it is alike;
    * ``max_luma_difference``: the largest difference of 8x8 block means of the grey
      thumbnails, after the brightness gain (1 to 1.25 on either side) that fits best --
      a brightness change scales luminance, a repainted region does not follow the gain;
    * ``max_grey_luma_difference``: when exactly one picture is grey (it may be a
      greyscale copy of the other; colour cannot be compared), the mean absolute
      difference of the grey thumbnails.  Greyscale conversion keeps luminance, so it is
      held tight: this is what tells a greyscale copy of a blue drawing from its yellow
      or green variants (only a variant of the very same luminance stays ambiguous, as
      it must).  A greyscale copy that was also brightened is not matched.

    ``threads`` is the decoding pool size (0 = one per core).

    The defaults were tuned on benchmarks/bench_image_dups.py (all 8,105 openclipart
    PNGs with resized, JPEG, cropped, brightened and greyscale copies of 800 of them,
    seed 7: the highest recall at precision >= 0.995) and checked on another seed: the
    hash alone (any radius) cannot reach precision 0.99 because openclipart holds many
    colour variants and look-alike drawings; these checks remove most of them, and the
    strict SSIM check lets the hash radius grow to 96 bits, which JPEG copies of
    line drawings need.
    """

    max_distance: int = 96
    min_correlation: float | None = 0.90
    min_correlation_far: float | None = 0.98
    min_structure: float | None = 0.85
    min_structure_far: float | None = 0.97
    max_colour_difference: float | None = 40.0
    max_luma_difference: float | None = 32.0
    max_grey_luma_difference: float | None = 4.0
    threads: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= HASH_BITS:
            raise ConfigError(f"max_distance must be in 0..{HASH_BITS}, got {self.max_distance}")
        for lo_name, hi_name in (
            ("min_correlation", "min_correlation_far"),
            ("min_structure", "min_structure_far"),
        ):
            lo, hi = getattr(self, lo_name), getattr(self, hi_name)
            if (lo is None) != (hi is None):
                raise ConfigError(f"{lo_name} and {hi_name} must both be set or both be None")
            for name, value in ((lo_name, lo), (hi_name, hi)):
                if value is not None and not -1.0 <= value <= 1.0:
                    raise ConfigError(f"{name} must be in -1..1 or None, got {value}")
        for name in ("max_colour_difference", "max_luma_difference", "max_grey_luma_difference"):
            c = getattr(self, name)
            if c is not None and not c >= 0:
                raise ConfigError(f"{name} must be >= 0 or None, got {c}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = one per core), got {self.threads}")

    def _ramp(
        self, lo: float | None, hi: float | None, distance: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """Return the threshold rising from ``lo`` (distance 0) to ``hi`` (max_distance); -inf when off."""
        if lo is None or hi is None:
            return np.full(len(distance), -np.inf)
        frac = np.minimum(distance.astype(np.float64) / max(self.max_distance, 1), 1.0)
        out: npt.NDArray[np.float64] = lo + (hi - lo) * frac
        return out

    def required_correlation(self, distance: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Return the thumbnail correlation a candidate at each hash ``distance`` needs (-inf: check off)."""
        return self._ramp(self.min_correlation, self.min_correlation_far, distance)

    def required_structure(self, distance: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Return the thumbnail SSIM a candidate at each hash ``distance`` needs (-inf: check off)."""
        return self._ramp(self.min_structure, self.min_structure_far, distance)

    def accepts(self, metrics: PairMetrics, distance: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Return which candidate pairs (their ``metrics`` and hash ``distance``) are near duplicates."""
        keep: npt.NDArray[np.bool_] = distance <= self.max_distance
        keep &= metrics.correlation >= self.required_correlation(distance)
        keep &= metrics.structure >= self.required_structure(distance)
        if self.max_colour_difference is not None:
            keep &= metrics.colour <= self.max_colour_difference
        if self.max_luma_difference is not None:
            keep &= metrics.luma <= self.max_luma_difference
        if self.max_grey_luma_difference is not None:
            keep &= ~metrics.one_grey | (metrics.luma_mean <= self.max_grey_luma_difference)
        return keep

    def fingerprint(self) -> str:
        """Return a short stable string naming the codes; thresholds are excluded.

        Thresholds only affect pair matching, not the stored codes, so cached
        ``image_signals`` output stays valid when they change.
        """
        return f"img-v{ALGORITHM_VERSION}-phash{HASH_BITS}+grey{_THUMB}+chroma{_CHROMA}"


def decode_image(data: bytes) -> Image.Image:
    """Decode ``data`` fully and return the first frame, raising ImageDecodeError if it is damaged.

    Truncated files are errors (never padded), as are empty input, bytes no image
    plug-in recognises, zero-size pictures and pictures over ``MAX_PIXELS`` pixels.
    """
    if not data:
        raise ImageDecodeError("empty file")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Padding a truncated file with grey would make a damaged file look healthy.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels (possible decompression bomb): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageDecodeError(f"corrupt image header: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("zero-size image")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"too many pixels (possible decompression bomb): {width}x{height}")
    try:
        img.load()
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg.lower():
            raise ImageDecodeError("truncated image file") from exc
        raise ImageDecodeError(f"corrupt image data: {msg}") from exc
    except (SyntaxError, ValueError, EOFError, struct.error, zlib.error, MemoryError) as exc:
        raise ImageDecodeError(f"corrupt image data: {exc}") from exc
    # Pillow stops reading a PNG after the last IDAT, so a file cut inside the
    # trailing chunks would pass; require the end marker.
    if img.format == "PNG" and data.rfind(b"IEND", max(0, len(data) - 4096)) < 0:
        raise ImageDecodeError("truncated image file (no IEND chunk)")
    return img


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so hashes describe the picture as viewers show it."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make the picture unreadable
        return img
    if orientation in (None, 1):
        return img
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:
        return img
    return out if out is not None else img


def _has_alpha(img: Image.Image) -> bool:
    """Say whether ``img`` carries transparency (an alpha band or a transparent palette entry)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _min_alpha(rgba: Image.Image) -> int:
    """Return the smallest alpha value of an RGBA image."""
    low = rgba.getchannel("A").getextrema()[0]
    return int(low) if isinstance(low, (int, float)) else 0


def _canonical_rgba(img: Image.Image) -> Image.Image:
    """Return ``img`` as RGBA with the colour of fully transparent pixels set to zero."""
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    if _min_alpha(rgba) == 255:
        return rgba
    alpha = rgba.getchannel("A")
    # Pasting through a 0/255 mask copies visible pixels exactly and leaves zeros elsewhere.
    visible = alpha.point(_VISIBLE_LUT)
    out = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
    out.paste(rgba, (0, 0), visible)
    return out


_VISIBLE_LUT = [0] + [255] * 255


def pixel_hash(img: Image.Image) -> str:
    """Return a hex digest of the decoded pixels that ignores the file format and colour mode.

    Pixels are normalised to RGBA with invisible pixels' colour zeroed (so formats that
    keep or drop hidden colour agree); the size is hashed too.  Pictures that are
    fully opaque hash their RGB bytes only, which saves a quarter of the work.
    """
    h = xxhash.xxh3_128()
    h.update(b"curata-pixels-v1")
    h.update(struct.pack("<II", img.width, img.height))
    if _has_alpha(img) or img.mode not in ("RGB", "L", "1", "P"):
        rgba = _canonical_rgba(img)
        if _min_alpha(rgba) < 255:
            h.update(b"RGBA")
            h.update(rgba.tobytes())
            return h.hexdigest()
        rgb = rgba.convert("RGB")
    else:
        rgb = img.convert("RGB")
    h.update(b"RGB")
    h.update(rgb.tobytes())
    return h.hexdigest()


def on_white(img: Image.Image) -> Image.Image:
    """Return ``img`` composited on a white page: RGB, or L when it has no colour.

    Transparent pixels become white (what a JPEG export of clip art does); palette and other modes
    become RGB, 1-bit and high-depth greys become L (``convert`` clips high-depth values to 255).
    """
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img.convert("L")
    if _has_alpha(img):
        rgba = img if img.mode in ("RGBA", "LA") else img.convert("RGBA")
        grey = rgba.mode == "LA"
        canvas = Image.new("L" if grey else "RGB", rgba.size, 255 if grey else (255, 255, 255))
        canvas.paste(rgba.convert(canvas.mode), (0, 0), rgba.getchannel("A"))
        return canvas
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGB")


def _working_copy(img: Image.Image) -> Image.Image:
    """Return ``img`` on white (see ``on_white``), longest side < 2*_WORK_SIDE.

    Reducing by an integer factor early (a box filter, like the final resample) keeps
    every later step cheap and changes the codes very little.
    """
    out = on_white(img)
    factor = max(out.size) // _WORK_SIDE
    if factor >= 2:
        out = out.reduce(factor)
    return out


def _ink_box(grey: npt.NDArray[np.float64]) -> tuple[float, float, float, float] | None:
    """Return the box holding the central ink mass of a drawing on a uniform page, or None.

    Clip art and scans often sit small on a large blank page; hashing the page would
    mostly encode "blob on white", so unrelated drawings collide and a crop or a
    re-framing moves the code.  The page colour is taken from the four corners (only
    when they agree, so photographs are hashed whole); "ink" is each pixel's distance
    from it, and the box spans the ``_INK_QUANTILE`` to ``1 - _INK_QUANTILE`` quantiles
    of the ink projected on each axis, interpolated to sub-pixel precision.  Unlike a
    bounding box of pixels over a tolerance, that box barely moves when faint
    anti-aliased edges fade under resizing or JPEG noise appears around the drawing.
    """
    h, w = grey.shape
    corners = [grey[0, 0], grey[0, w - 1], grey[h - 1, 0], grey[h - 1, w - 1]]
    if max(corners) - min(corners) > _TRIM_TOLERANCE:
        return None
    bg = sorted(corners)[1]
    ink = np.abs(grey - bg)
    ink -= _INK_FLOOR
    np.maximum(ink, 0.0, out=ink)
    total = float(ink.sum())
    if total <= 0.0:
        return None

    def span(profile: npt.NDArray[np.float64]) -> tuple[float, float]:
        cum = np.concatenate([[0.0], np.cumsum(profile)]) / total
        grid = np.arange(len(cum), dtype=np.float64)
        lo, hi = np.interp([_INK_QUANTILE, 1.0 - _INK_QUANTILE], cum, grid)
        return float(lo), float(hi)

    x0, x1 = span(ink.sum(axis=0))
    y0, y1 = span(ink.sum(axis=1))
    # A content box of a pixel or two is noise (a stray mark), not the picture.
    if x1 - x0 < _MIN_CONTENT or y1 - y0 < _MIN_CONTENT:
        return None
    return (x0, y0, x1, y1)


# Grey levels the four corners may differ by and still count as one uniform page.
_TRIM_TOLERANCE = 24
# Grey levels of difference from the page ignored as noise (JPEG ringing, dithering).
_INK_FLOOR = 4.0
# Fraction of the ink left outside the box on each side.
_INK_QUANTILE = 0.005
_MIN_CONTENT = 2.0
# Working copies are reduced (by an integer factor) until their longest side is below 2x this.
_WORK_SIDE = 256
# Filter of the final resample to the DCT square.
_RESAMPLE = Image.Resampling.BILINEAR


def _features(img: Image.Image) -> bytes:
    """Return the perceptual code of an upright picture (layout in the module docstring)."""
    work = _working_copy(img)
    grey_img = work if work.mode == "L" else work.convert("L")
    box = _ink_box(np.asarray(grey_img, dtype=np.float64))
    # Bilinear (a triangle filter scaled to the reduction when shrinking) rather than box:
    # box upsampling of small icons duplicates whole pixels, so a sub-pixel move of the
    # ink box jumps the samples and flips many bits.
    big = np.asarray(grey_img.resize((_DCT_SIDE, _DCT_SIDE), _RESAMPLE, box=box), dtype=np.float64)
    low = (_DCT @ big @ _DCT.T).ravel()
    # The DC term only measures overall brightness: it is left out of the median and its bit is 0.
    bits = low > np.median(low[1:])
    bits[0] = False
    f = _DCT_SIDE // _THUMB
    thumb = big.reshape(_THUMB, f, _THUMB, f).mean(axis=(1, 3))
    if work.mode == "L":
        chroma = bytes([128]) * (2 * _CHROMA * _CHROMA)
    else:
        ycc = work.convert("YCbCr").resize((_CHROMA, _CHROMA), Image.Resampling.BOX, box=box)
        cb, cr = ycc.getchannel("Cb").tobytes(), ycc.getchannel("Cr").tobytes()
        chroma = bytes(cb) + bytes(cr)
    grey_thumb: bytes = np.rint(thumb).astype(np.uint8).tobytes()
    return bytes(np.packbits(bits)) + grey_thumb + chroma


def perceptual_codes(img: Image.Image) -> bytes:
    """Return the perceptual code of a decoded picture (``CODE_BYTES`` bytes, see the module docstring)."""
    return _features(_upright(img))


_Row = tuple[str | None, bytes | None, int | None, int | None, str | None]


def _error_reason(exc: Exception) -> str:
    """Return the short reason stored in the ``error`` column."""
    msg = str(exc)
    if msg.startswith("truncated image file"):
        return "truncated image file"
    if msg.startswith("too many pixels"):
        return "too many pixels"
    return msg.split(":", 1)[0]


def _one(item: bytes | None) -> _Row:
    """Compute one row of ``image_signals``; never raises for bad input."""
    if item is None:
        return (None, None, None, None, "file not readable")
    try:
        img = _upright(decode_image(item))
        ph = pixel_hash(img)
        code = _features(img)
    except ImageDecodeError as exc:
        return (None, None, None, None, _error_reason(exc))
    except Exception as exc:  # a plug-in bug on one odd file must not stop a whole scan
        return (None, None, None, None, f"decode failed: {type(exc).__name__}")
    return (ph, code, img.width, img.height, None)


_SCHEMA = pa.schema(
    [
        pa.field("pixel_hash", pa.string()),
        pa.field("phash", pa.binary(CODE_BYTES)),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("error", pa.string()),
    ]
)


def image_signals(items: Sequence[bytes | None], settings: ImageHashSettings) -> pa.RecordBatch:
    """Return one row per item, in order, with pixel_hash, phash, width, height and error.

    ``phash`` is ``fixed_size_binary(CODE_BYTES)``: the perceptual code described in the
    module docstring.
    A ``None`` item means the file could not be read.  Decoding runs on a thread pool
    (Pillow releases the GIL while decoding and resizing).
    """
    threads = settings.threads or (os.cpu_count() or 1)
    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            rows = list(pool.map(_one, items, chunksize=16))
    else:
        rows = [_one(item) for item in items]
    cols: list[list[Any]] = [[r[k] for r in rows] for k in range(5)]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, _SCHEMA, strict=True)], schema=_SCHEMA
    )


def _as_code_matrix(codes: Any) -> npt.NDArray[np.uint8]:
    """Return ``codes`` as an (n, CODE_BYTES) uint8 matrix; accepts that matrix, bytes or an Arrow column."""
    if isinstance(codes, (pa.Array, pa.ChunkedArray)):
        if codes.null_count:
            raise ConfigError("perceptual codes contain nulls; pass the valid rows only")
        codes = codes.to_pylist()
    if isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.ndim == 2:
        arr = codes
    elif isinstance(codes, np.ndarray) and codes.dtype.kind in "SV":
        arr = np.frombuffer(codes.tobytes(), dtype=np.uint8).reshape(len(codes), -1)
    else:
        seq = list(codes)
        arr = (
            np.frombuffer(b"".join(seq), dtype=np.uint8).reshape(len(seq), -1)
            if seq
            else (np.zeros((0, CODE_BYTES), dtype=np.uint8))
        )
    if arr.shape[1] != CODE_BYTES:
        raise ConfigError(f"perceptual codes must be {CODE_BYTES} bytes wide, got {arr.shape[1]}")
    return np.ascontiguousarray(arr)


class PairMetrics(NamedTuple):
    """What ``ImageHashSettings.accepts`` judges a candidate pair by; one value per pair.

    All come from the stored codes (grey thumbnails ``g``, chroma thumbnails ``c``):

    * ``correlation``: Pearson correlation of the two 32x32 ``g`` (1 for two flat
      thumbnails, 0 for a flat and a non-flat one);
    * ``structure``: SSIM of the two ``g``, averaged over 64 windows of 4x4 pixels;
    * ``colour``: the largest ``|dCb| + |dCr|`` over the 8x8 ``c`` cells, or 0 when either
      picture is grey (a greyscale copy cannot be told apart by colour);
    * ``luma``: the largest difference of the 8x8 block means of ``g`` after the best
      brightness gain (1 to ``_MAX_GAIN``, on either side, clipped at white);
    * ``luma_mean``: the mean absolute difference of the two ``g``;
    * ``one_grey``: exactly one of the two pictures is grey (every chroma cell within
      ``_GREY_CHROMA`` levels of neutral).
    """

    correlation: npt.NDArray[np.float64]
    structure: npt.NDArray[np.float64]
    colour: npt.NDArray[np.float64]
    luma: npt.NDArray[np.float64]
    luma_mean: npt.NDArray[np.float64]
    one_grey: npt.NDArray[np.bool_]


def _window_matrix() -> npt.NDArray[np.float32]:
    """Return the (1024, 64) 0/1 matrix that sums a row-major 32x32 thumbnail over its 4x4-pixel windows."""
    pool = np.kron(np.eye(_THUMB // _WINDOW), np.ones((_WINDOW, 1)))
    return np.kron(pool, pool).astype(np.float32)


def _pair_metrics(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], pairs: npt.NDArray[np.int64]
) -> PairMetrics:
    """Return the ``PairMetrics`` of each pair (a[i], b[j]) of code rows.

    Window sums are matrix products with a 0/1 matrix; every value they add is an integer
    below 2**24, so float32 holds them exactly, and the whole-thumbnail sums are taken in
    float64.
    """
    n = len(pairs)
    out = PairMetrics(
        correlation=np.empty(n, dtype=np.float64),
        structure=np.empty(n, dtype=np.float64),
        colour=np.empty(n, dtype=np.float64),
        luma=np.empty(n, dtype=np.float64),
        luma_mean=np.empty(n, dtype=np.float64),
        one_grey=np.empty(n, dtype=bool),
    )
    t0, t1 = _HASH_BYTES, _HASH_BYTES + _THUMB * _THUMB
    pixels = float(_THUMB * _THUMB)
    area = float(_WINDOW * _WINDOW)
    for start in range(0, n, _PAIR_BLOCK):
        p = pairs[start : start + _PAIR_BLOCK]
        done = slice(start, start + len(p))
        # Per-picture window sums once per block (pairs repeat pictures), then per pair
        # only the difference: sum(a*b) = (sum(a*a) + sum(b*b) - sum((a-b)**2)) / 2.
        rows_a, inv_a = np.unique(p[:, 0], return_inverse=True)
        rows_b, inv_b = np.unique(p[:, 1], return_inverse=True)
        ua = a[rows_a, t0:t1].astype(np.float32)
        ub = b[rows_b, t0:t1].astype(np.float32)
        sa, saa = (ua @ _WINDOWS)[inv_a], ((ua * ua) @ _WINDOWS)[inv_a]
        sb, sbb = (ub @ _WINDOWS)[inv_b], ((ub * ub) @ _WINDOWS)[inv_b]
        diff = ua[inv_a]
        diff -= ub[inv_b]
        out.luma_mean[done] = np.abs(diff).mean(axis=1)
        diff *= diff
        sab = (saa + sbb - diff @ _WINDOWS) * 0.5
        del ua, ub, diff

        # SSIM over the windows.
        ma, mb = sa / area, sb / area
        va = saa / area - ma * ma
        vb = sbb / area - mb * mb
        cov = sab / area - ma * mb
        ssim = ((2 * ma * mb + _C1) * (2 * cov + _C2)) / ((ma * ma + mb * mb + _C1) * (va + vb + _C2))
        out.structure[done] = ssim.mean(axis=1)

        # Block means after the best brightness gain on either side.
        luma = np.full(len(p), np.inf, dtype=np.float32)
        for gain in _GAINS:
            luma = np.minimum(luma, np.abs(ma - np.minimum(mb * gain, 255.0)).max(axis=1))
            luma = np.minimum(luma, np.abs(mb - np.minimum(ma * gain, 255.0)).max(axis=1))
        out.luma[done] = luma

        # Pearson correlation of the whole thumbnails, from the same sums.
        xa, xb = sa.sum(axis=1, dtype=np.float64), sb.sum(axis=1, dtype=np.float64)
        vxa = np.maximum(saa.sum(axis=1, dtype=np.float64) - xa * xa / pixels, 0.0)
        vxb = np.maximum(sbb.sum(axis=1, dtype=np.float64) - xb * xb / pixels, 0.0)
        cxy = sab.sum(axis=1, dtype=np.float64) - xa * xb / pixels
        na, nb = np.sqrt(vxa), np.sqrt(vxb)
        flat_a, flat_b = na < _FLAT, nb < _FLAT
        c = cxy / np.maximum(na * nb, 1e-9)
        out.correlation[done] = np.where(flat_a | flat_b, (flat_a & flat_b).astype(np.float64), c)

        ca = a[p[:, 0], t1:].astype(np.float32) - 128.0
        cb = b[p[:, 1], t1:].astype(np.float32) - 128.0
        grey_a = np.abs(ca).max(axis=1) <= _GREY_CHROMA
        grey_b = np.abs(cb).max(axis=1) <= _GREY_CHROMA
        cells = np.abs(ca - cb)
        per_cell = cells[:, : _CHROMA * _CHROMA] + cells[:, _CHROMA * _CHROMA :]
        out.colour[done] = np.where(grey_a | grey_b, 0.0, per_cell.max(axis=1))
        out.one_grey[done] = grey_a != grey_b
    return out


# Pairs verified per block (bounds the temporary thumbnail copies).
_PAIR_BLOCK = 8192
# Thumbnail norm (grey levels, over 1024 pixels) below which a thumbnail counts as flat.
_FLAT = 32.0
# A picture whose chroma cells all lie within this many levels of neutral (128) counts as grey.
_GREY_CHROMA = 2.0
# Side of the SSIM windows (and luma blocks) on the grey thumbnail, and SSIM's constants for 8 bits.
_WINDOW = 4
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
# Brightness gains the luma check tries on either side: a +-20% change is well inside.
_MAX_GAIN = 1.25
_GAINS = np.linspace(1.0, _MAX_GAIN, 17, dtype=np.float32)
_WINDOWS = _window_matrix()


def _verify(
    a: npt.NDArray[np.uint8],
    b: npt.NDArray[np.uint8],
    pairs: npt.NDArray[np.int64],
    dist: npt.NDArray[np.int64],
    settings: ImageHashSettings,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Keep candidate pairs that pass the thumbnail checks; return them with their similarity."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2), np.zeros(0, dtype=np.float64)
    keep = settings.accepts(_pair_metrics(a, b, pairs), dist)
    similarity = 1.0 - dist[keep].astype(np.float64) / HASH_BITS
    return pairs[keep], similarity


def near_duplicate_image_pairs(
    codes: Any, settings: ImageHashSettings
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Return near-duplicate pairs among ``codes`` as ((m, 2) int64 with i < j, similarity per pair).

    ``codes`` are the ``phash`` values of valid rows (an (n, CODE_BYTES) uint8 array, a list
    of bytes or an Arrow column without nulls); indices refer to positions in it.  The
    similarity is ``1 - d / 256`` for a hash Hamming distance ``d``: 1.0 for equal hashes.
    """
    arr = _as_code_matrix(codes)
    pairs, dist = hamming_pairs(arr[:, :_HASH_BYTES], settings.max_distance)
    return _verify(arr, arr, pairs, dist, settings)


def cross_near_duplicate_pairs(
    codes_a: Any, codes_b: Any, settings: ImageHashSettings
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Return near-duplicate pairs between two code sets as ([row in a, row in b], similarity)."""
    a = _as_code_matrix(codes_a)
    b = _as_code_matrix(codes_b)
    pairs, dist = hamming_cross_pairs(a[:, :_HASH_BYTES], b[:, :_HASH_BYTES], settings.max_distance)
    return _verify(a, b, pairs, dist, settings)


def thumbnail_data_uri(data: bytes, max_side: int = 128) -> str | None:
    """Return a small PNG ``data:`` URI of the picture for the HTML report, or None if undecodable."""
    try:
        img = _upright(decode_image(data))
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA" if _has_alpha(img) else "RGB")
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    except (ImageDecodeError, OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
