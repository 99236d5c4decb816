"""Image signals: strict decoding, exact pixel hashes, perceptual hashes and thumbnails.

The perceptual code stored per image is 128 bits, kept as ``fixed_size_binary(16)``:
bytes 0-7 are a 64-bit DCT hash (pHash) and bytes 8-15 a 64-bit gradient hash (dHash),
both big-endian and both computed from the picture composited on white and reduced
to greyscale.  Two images are near duplicates when the pHash halves are within
``ImageHashSettings.max_distance`` bits AND the dHash halves within
``ImageHashSettings.dhash_max_distance`` bits; the dHash gate is
available for extra precision (off by default; see ImageHashSettings).  Before hashing,
a uniform border (e.g. the blank page around clip art) is trimmed, so that unrelated
drawings do not collide as "blob on white" and crops of the margin do not move the code.
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
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import xxhash
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from curata.errors import ConfigError, InputError
from curata.index import hamming_cross_pairs, hamming_pairs

__all__ = [
    "CODE_BYTES",
    "ImageDecodeError",
    "ImageHashSettings",
    "cross_near_duplicate_pairs",
    "decode_image",
    "image_signals",
    "near_duplicate_image_pairs",
    "perceptual_codes",
    "pixel_hash",
    "thumbnail_data_uri",
]

#: Bump when any hash below changes its output for the same pixels; it is part of the fingerprint.
ALGORITHM_VERSION = 1

#: Width in bytes of the ``phash`` column: 8 bytes pHash then 8 bytes dHash.
CODE_BYTES = 16

#: Largest picture decoded, in pixels; Pillow's own warning limit, enforced as an error here.
MAX_PIXELS = 89_478_485

# Side of the greyscale square the DCT runs on; 4x the 8x8 kept coefficients, as in pHash.
_DCT_SIDE = 32
_LOW = 8


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
    """Which perceptual codes are compared and how far apart near duplicates may be.

    ``max_distance`` bounds the Hamming distance of the 64-bit pHash halves and
    ``dhash_max_distance`` that of the 64-bit dHash halves; a pair must pass both.
    ``None`` for ``dhash_max_distance`` turns the dHash gate off.  The defaults were tuned
    on benchmarks/bench_image_dups.py (openclipart-png with resized, JPEG, cropped,
    brightened and greyscale copies): pHash <= 8 was the loosest radius keeping
    precision >= 0.99; the dHash gate removed almost no false pairs there, so it is off.
    ``threads`` is the decoding pool size (0 = one per core).
    """

    max_distance: int = 8
    dhash_max_distance: int | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= 64:
            raise ConfigError(f"max_distance must be in 0..64, got {self.max_distance}")
        d = self.dhash_max_distance
        if d is not None and not 0 <= d <= 64:
            raise ConfigError(f"dhash_max_distance must be in 0..64 or None, got {d}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = one per core), got {self.threads}")

    def fingerprint(self) -> str:
        """Return a short stable string naming the codes; thresholds are excluded.

        Thresholds only affect pair matching, not the stored codes, so cached
        ``image_signals`` output stays valid when they change.
        """
        return f"img-v{ALGORITHM_VERSION}-phash64+dhash64"


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


def _grey_on_white(img: Image.Image) -> Image.Image:
    """Return a greyscale version of ``img`` with any transparency composited on white."""
    if _has_alpha(img):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        # Greyscale first, then blend the single band on white: a third of the work of RGB.
        grey = rgba.convert("L")
        canvas = Image.new("L", rgba.size, 255)
        canvas.paste(grey, (0, 0), rgba.getchannel("A"))
        return canvas
    return img.convert("L")


def _trim_box(grey: Image.Image) -> tuple[int, int, int, int] | None:
    """Return the bounding box of the content inside a uniform border, or None to keep everything.

    Clip art and scans often sit small on a large blank page; hashing the page would
    mostly encode "blob on white", so unrelated drawings collide and a crop or a
    re-framing moves the code.  The border colour is taken from the four corners and
    only trimmed when they agree, so photographs are hashed whole.
    """
    w, h = grey.size
    corners = [grey.getpixel((x, y)) for x in (0, w - 1) for y in (0, h - 1)]
    values = [int(c) if isinstance(c, (int, float)) else 0 for c in corners]
    if max(values) - min(values) > _TRIM_TOLERANCE:
        return None
    bg = sorted(values)[1]
    lut = [255 if abs(v - bg) > _TRIM_TOLERANCE else 0 for v in range(256)]
    box = grey.point(lut).getbbox()
    if box is None:
        return None
    # A content box of a few pixels is noise (a stray mark), not the picture.
    if (box[2] - box[0]) < _MIN_CONTENT or (box[3] - box[1]) < _MIN_CONTENT:
        return None
    return box


# Grey levels a pixel may differ from the border colour and still count as border
# (absorbs JPEG ringing and +-10% brightness of an off-white page).
_TRIM_TOLERANCE = 24
_MIN_CONTENT = 4


def _small_grey(img: Image.Image) -> npt.NDArray[np.float64]:
    """Return the 32x32 greyscale thumbnail (float, 0-255) both perceptual hashes start from."""
    grey = _grey_on_white(img)
    box = _trim_box(grey)
    # Box filtering averages every source pixel, which keeps the code stable under resizing.
    small = grey.resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.BOX, box=box)
    return np.asarray(small, dtype=np.float64)


def _codes_from_small(small: npt.NDArray[np.float64]) -> bytes:
    """Return the 16-byte code (pHash then dHash) of one 32x32 greyscale thumbnail."""
    low = _DCT @ small @ _DCT.T
    # The DC term only measures overall brightness, so it is left out of the median.
    flat = low.ravel()
    phash_bits = flat > np.median(flat[1:])
    # dHash on a 9x8 box reduction of the same thumbnail: is each cell brighter than its right neighbour?
    cols = np.linspace(0, _DCT_SIDE, 10).astype(int)
    rows = np.linspace(0, _DCT_SIDE, 9).astype(int)
    reduced = np.add.reduceat(np.add.reduceat(small, rows[:-1], axis=0), cols[:-1], axis=1)
    dhash_bits = (reduced[:, 1:] > reduced[:, :-1]).ravel()
    return bytes(np.packbits(np.concatenate([phash_bits, dhash_bits])))


def perceptual_codes(img: Image.Image) -> bytes:
    """Return the 16-byte perceptual code of a decoded picture (pHash then dHash, big-endian)."""
    return _codes_from_small(_small_grey(_upright(img)))


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
        code = _codes_from_small(_small_grey(img))
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

    ``phash`` is ``fixed_size_binary(16)``: pHash (bytes 0-7) then dHash (bytes 8-15).
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
    """Return ``codes`` as an (n, 16) uint8 matrix; accepts that matrix, bytes or an Arrow column."""
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


def _popcount_rows(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Return the number of set bits in each row of a uint8 matrix."""
    counts: npt.NDArray[np.int64] = np.unpackbits(x, axis=1).sum(axis=1, dtype=np.int64)
    return counts


def _gate(
    a: npt.NDArray[np.uint8],
    b: npt.NDArray[np.uint8],
    pairs: npt.NDArray[np.int64],
    dist: npt.NDArray[np.int64],
    settings: ImageHashSettings,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Keep pairs whose dHash halves are close enough too; the score is the summed distance."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2), np.zeros(0, dtype=np.float64)
    ddist = _popcount_rows(np.bitwise_xor(a[pairs[:, 0], 8:], b[pairs[:, 1], 8:]))
    keep = np.ones(len(pairs), dtype=bool)
    if settings.dhash_max_distance is not None:
        keep = ddist <= settings.dhash_max_distance
    score = (dist + ddist).astype(np.float64)
    return pairs[keep], score[keep]


def near_duplicate_image_pairs(
    codes: Any, settings: ImageHashSettings
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Return near-duplicate pairs among ``codes`` as ((m, 2) int64 with i < j, distance per pair).

    ``codes`` are the 16-byte ``phash`` values of valid rows (an (n, 16) uint8 array, a list
    of bytes or an Arrow column without nulls); indices refer to positions in it.  The
    distance is pHash plus dHash Hamming distance (0 = same code, at most 128).
    """
    arr = _as_code_matrix(codes)
    pairs, dist = hamming_pairs(arr[:, :8], settings.max_distance)
    return _gate(arr, arr, pairs, dist, settings)


def cross_near_duplicate_pairs(
    codes_a: Any, codes_b: Any, settings: ImageHashSettings
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Return near-duplicate pairs between two code sets as ([row in a, row in b], distance)."""
    a = _as_code_matrix(codes_a)
    b = _as_code_matrix(codes_b)
    pairs, dist = hamming_cross_pairs(a[:, :8], b[:, :8], settings.max_distance)
    return _gate(a, b, pairs, dist, settings)


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
