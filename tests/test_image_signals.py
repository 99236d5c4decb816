"""Tests for curata.signals.image on small pictures drawn in code."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from curata.errors import InputError
from curata.signals.image import (
    CODE_BYTES,
    HASH_BITS,
    ImageDecodeError,
    ImageHashSettings,
    cross_near_duplicate_pairs,
    decode_image,
    image_signals,
    near_duplicate_image_pairs,
    thumbnail_data_uri,
)

SETTINGS = ImageHashSettings(threads=1)


def _scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Draw a deterministic picture: a gradient with random shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = (rng.random(3) * x + rng.random(3) * y) * 160 + 40
    img = Image.fromarray(np.broadcast_to(base, (h, w, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return img


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _row(data: bytes | None) -> dict[str, object]:
    return image_signals([data], SETTINGS).to_pylist()[0]


def _dist(a: bytes, b: bytes) -> int:
    """Hamming distance of the hash parts of two perceptual codes."""
    n = HASH_BITS // 8
    return int(
        np.unpackbits(np.bitwise_xor(np.frombuffer(a[:n], np.uint8), np.frombuffer(b[:n], np.uint8))).sum()
    )


def _pairs(codes: list[bytes]) -> set[tuple[int, int]]:
    pairs, _ = near_duplicate_image_pairs(codes, SETTINGS)
    return {(int(i), int(j)) for i, j in pairs.tolist()}


def test_bad_inputs_give_errors_not_exceptions() -> None:
    png = _encode(_scene(1), "PNG")
    jpg = _encode(_scene(1), "JPEG", quality=90)
    items: list[bytes | None] = [
        png[: len(png) // 2],
        jpg[: len(jpg) // 2],
        png[:-12],  # the IEND chunk cut off
        b"",
        np.random.default_rng(0).bytes(4096),
        None,
        png,
    ]
    rows = image_signals(items, SETTINGS).to_pylist()
    errors = [r["error"] for r in rows]
    assert errors[0] == "truncated image file"
    assert errors[1] == "truncated image file"
    assert errors[2] == "truncated image file"
    assert errors[3] == "empty file"
    assert errors[4] == "not an image"
    assert errors[5] == "file not readable"
    assert errors[6] is None
    for r in rows[:6]:
        assert r["pixel_hash"] is None and r["phash"] is None and r["width"] is None
    assert rows[6]["width"] == 160 and rows[6]["height"] == 120


def test_decode_image_raises_input_error() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(InputError, match="not an image"):
        decode_image(b"hello world, not a picture")
    png = _encode(_scene(2), "PNG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(png[: len(png) - 200])


def test_decompression_bomb_is_rejected() -> None:
    # Only the header matters: it promises 30000x30000 pixels, far over the limit.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    assert _row(data)["error"] == "too many pixels"
    # 10000x10000 is over curata's limit but under Pillow's hard error limit.
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 0, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    with pytest.warns(Image.DecompressionBombWarning):
        assert _row(data)["error"] == "too many pixels"


def test_png_and_lossless_webp_share_pixel_hash() -> None:
    img = _scene(3)
    png, webp = _encode(img, "PNG"), _encode(img, "WEBP", lossless=True)
    rows = image_signals([png, webp, _encode(img.convert("RGBA"), "PNG")], SETTINGS).to_pylist()
    assert rows[0]["pixel_hash"] == rows[1]["pixel_hash"] == rows[2]["pixel_hash"]
    assert rows[0]["phash"] == rows[1]["phash"]


def test_transparent_pixels_colour_is_ignored_by_pixel_hash() -> None:
    arr = np.zeros((40, 40, 4), dtype=np.uint8)
    arr[10:30, 10:30] = (200, 30, 30, 255)
    other = arr.copy()
    other[arr[..., 3] == 0] = (77, 88, 99, 0)  # hidden colour differs
    a = _row(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    b = _row(_encode(Image.fromarray(other, "RGBA"), "PNG"))
    assert a["pixel_hash"] == b["pixel_hash"]


def test_different_images_and_sizes_differ() -> None:
    a, b = _scene(4), _scene(5)
    rows = image_signals(
        [_encode(a, "PNG"), _encode(b, "PNG"), _encode(a.resize((80, 60)), "PNG")], SETTINGS
    ).to_pylist()
    assert len({r["pixel_hash"] for r in rows}) == 3
    assert all(len(r["phash"]) == CODE_BYTES for r in rows)
    assert _dist(rows[0]["phash"], rows[1]["phash"]) > 64
    assert _pairs([r["phash"] for r in rows]) == {(0, 2)}


def test_copies_are_near_duplicates_and_other_pictures_are_not() -> None:
    img = _scene(6, (240, 180))
    copies = [
        _encode(img.resize((120, 90), Image.Resampling.LANCZOS), "PNG"),
        _encode(img.resize((360, 270), Image.Resampling.LANCZOS), "PNG"),
        _encode(img, "JPEG", quality=70),
        _encode(ImageEnhance.Brightness(img).enhance(1.1), "PNG"),
        _encode(ImageEnhance.Brightness(img).enhance(0.9), "PNG"),
        _encode(img.convert("L"), "PNG"),
    ]
    others = [_encode(_scene(s, (240, 180)), "PNG") for s in range(20, 26)]
    batch = image_signals([_encode(img, "PNG"), *copies, *others], SETTINGS)
    codes = batch.column("phash").to_pylist()
    for c in codes[1:7]:
        assert _dist(codes[0], c) <= SETTINGS.max_distance
    pairs, score = near_duplicate_image_pairs(batch.column("phash"), SETTINGS)
    found = {tuple(p) for p in pairs.tolist()}
    assert {(0, k) for k in range(1, 7)} <= found
    assert not any(i == 0 and j >= 7 for i, j in found)
    assert pairs.dtype == np.int64 and score.dtype == np.float64 and len(score) == len(pairs)
    assert np.all(pairs[:, 0] < pairs[:, 1])
    # The score is a similarity: 1 for equal hashes, lower for more distant ones.
    assert np.all((score >= 0.0) & (score <= 1.0))
    for (i, j), sim in zip(pairs.tolist(), score.tolist(), strict=True):
        assert sim == pytest.approx(1.0 - _dist(codes[i], codes[j]) / HASH_BITS)


def test_identical_pictures_have_similarity_one() -> None:
    img = _scene(8)
    codes = image_signals([_encode(img, "PNG"), _encode(img, "WEBP", lossless=True)], SETTINGS).column(
        "phash"
    )
    pairs, sim = near_duplicate_image_pairs(codes, SETTINGS)
    assert pairs.tolist() == [[0, 1]] and sim.tolist() == [1.0]
    cross, csim = cross_near_duplicate_pairs(codes, codes, SETTINGS)
    assert sorted(map(tuple, cross.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert np.all(csim == 1.0)


def test_margins_do_not_move_the_code() -> None:
    # The same drawing on a small and on a large page, and shrunk: the ink box is the same.
    page = Image.new("RGB", (200, 200), "white")
    draw = ImageDraw.Draw(page)
    draw.ellipse((60, 70, 120, 130), fill=(200, 30, 30))
    draw.rectangle((80, 60, 140, 90), fill=(20, 20, 160))
    draw.line((50, 140, 150, 60), fill="black", width=3)
    tight = page.crop((40, 50, 160, 150))
    small = page.resize((100, 100), Image.Resampling.LANCZOS)
    rows = image_signals([_encode(x, "PNG") for x in (page, tight, small)], SETTINGS).to_pylist()
    codes = [r["phash"] for r in rows]
    assert _dist(codes[0], codes[1]) <= 16 and _dist(codes[0], codes[2]) <= 24
    assert _pairs(codes) == {(0, 1), (0, 2), (1, 2)}


def test_colour_variants_are_not_near_duplicates_but_grey_copies_are() -> None:
    def arrow(colour: tuple[int, int, int]) -> Image.Image:
        img = Image.new("RGB", (120, 120), "white")
        ImageDraw.Draw(img).polygon(
            [(20, 50), (70, 50), (70, 25), (105, 60), (70, 95), (70, 70), (20, 70)], fill=colour
        )
        return img

    green, blue = arrow((30, 170, 40)), arrow((30, 40, 200))
    items = [_encode(green, "PNG"), _encode(blue, "PNG"), _encode(green.convert("L"), "PNG")]
    codes = image_signals(items, SETTINGS).column("phash").to_pylist()
    # The shapes are identical, so only the colour check tells the variants apart.
    assert _dist(codes[0], codes[1]) <= SETTINGS.max_distance
    found = _pairs(codes)
    assert (0, 2) in found and (0, 1) not in found
    no_colour = ImageHashSettings(threads=1, max_colour_difference=None)
    assert (0, 1) in {tuple(p) for p in near_duplicate_image_pairs(codes, no_colour)[0].tolist()}


def test_cross_pairs() -> None:
    imgs = [_scene(s) for s in range(30, 34)]
    a = image_signals([_encode(i, "PNG") for i in imgs], SETTINGS).column("phash")
    b = image_signals(
        [
            _encode(_scene(40), "PNG"),
            _encode(imgs[2], "JPEG", quality=75),
            _encode(imgs[0].resize((80, 60)), "PNG"),
        ],
        SETTINGS,
    ).column("phash")
    pairs, _ = cross_near_duplicate_pairs(a, b, SETTINGS)
    assert {tuple(p) for p in pairs.tolist()} == {(2, 1), (0, 2)}


def test_transparent_image_is_hashed_on_white() -> None:
    # A black disc on a transparent background looks like a black disc on white.
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((20, 30, 80, 70), fill=(0, 0, 0, 255))
    on_white = Image.new("RGB", (100, 100), (255, 255, 255))
    ImageDraw.Draw(on_white).ellipse((20, 30, 80, 70), fill=(0, 0, 0))
    on_black = Image.new("RGB", (100, 100), (0, 0, 0))
    rows = image_signals(
        [_encode(rgba, "PNG"), _encode(on_white, "PNG"), _encode(on_black, "PNG")], SETTINGS
    ).to_pylist()
    assert _dist(rows[0]["phash"], rows[1]["phash"]) <= 2
    assert rows[0]["phash"] != rows[2]["phash"]
    assert _pairs([r["phash"] for r in rows]) == {(0, 1)}
    assert rows[0]["pixel_hash"] != rows[1]["pixel_hash"]  # the pixels themselves differ


def test_thumbnail_and_settings() -> None:
    uri = thumbnail_data_uri(_encode(_scene(7, (400, 300)), "JPEG"), max_side=64)
    assert uri is not None and uri.startswith("data:image/png;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(thumb.size) == 64
    assert thumbnail_data_uri(b"junk") is None
    fp = ImageHashSettings().fingerprint()
    assert fp == ImageHashSettings(max_distance=3, min_correlation=0.5).fingerprint() and "v" in fp
    with pytest.raises(ValueError):
        ImageHashSettings(max_distance=HASH_BITS + 1)
    with pytest.raises(ValueError):
        ImageHashSettings(min_correlation=1.5)
    with pytest.raises(ValueError):
        ImageHashSettings(max_colour_difference=-1.0)
    with pytest.raises(ValueError):
        near_duplicate_image_pairs([b"\0" * 16, b"\0" * 16], SETTINGS)


def _arrow(colour: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (120, 120), "white")
    ImageDraw.Draw(img).polygon(
        [(20, 60), (70, 15), (70, 40), (105, 40), (105, 80), (70, 80), (70, 105)],
        fill=colour,
        outline=(0, 0, 0),
    )
    return img


def test_grey_copy_matches_its_own_colour_not_a_variant() -> None:
    blue, yellow = _arrow((30, 60, 200)), _arrow((250, 220, 40))
    items = [_encode(blue, "PNG"), _encode(yellow, "PNG"), _encode(blue.convert("L"), "PNG")]
    codes = image_signals(items, SETTINGS).column("phash")
    pairs, _ = near_duplicate_image_pairs(codes, SETTINGS)
    found = {tuple(p) for p in pairs.tolist()}
    assert (0, 2) in found  # the greyscale copy of the blue arrow
    assert (1, 2) not in found and (0, 1) not in found  # the yellow variant is another picture


def test_luma_check_bounds_brightness_change() -> None:
    blue = _arrow((30, 60, 200)).convert("L")
    dark = ImageEnhance.Brightness(blue).enhance(0.4)
    codes = image_signals([_encode(blue, "PNG"), _encode(dark, "PNG")], SETTINGS).column("phash")
    assert len(near_duplicate_image_pairs(codes, SETTINGS)[0]) == 0  # 60% darker: too far
    unchecked = ImageHashSettings(threads=1, max_luma_difference=None)
    assert near_duplicate_image_pairs(codes, unchecked)[0].tolist() == [[0, 1]]
