"""The model encoders: MiniLM (text), EfficientNet-Lite0 (images) and the self-supervised SSL CNN."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import curata.signals.embed as embed_module
import curata.signals.embed.ssl as ssl_module
from curata.cli import app
from curata.errors import InputError, MissingDependencyError
from curata.io import read_dataset
from curata.signals.embed import make_encoder
from curata.signals.embed.efficientnet import EfficientNetLite0Encoder
from curata.signals.embed.minilm import MiniLmEncoder
from curata.signals.embed.ssl import SslEncoder

from conftest import encode, pattern_image, write_image_folder, write_parquet

needs_minilm = pytest.mark.skipif(not MiniLmEncoder.available(), reason="needs curata[text]")
needs_efficientnet = pytest.mark.skipif(
    not EfficientNetLite0Encoder.available(), reason="needs curata[image]"
)
needs_torch = pytest.mark.skipif(not SslEncoder.available(), reason="needs torch (curata[image])")

#: A small, fast SSL configuration for tests: 2 epochs over 64 images of 32 x 32.
TINY = {"epochs": 2, "batch_size": 32, "width": 8}


def tiny_images(offset: int = 0, n: int = 64) -> list[bytes]:
    return [encode(pattern_image(offset + i, 32)) for i in range(n)]


def no_loaded_state(encoder: object) -> bool:
    return not any(k.startswith("_loaded") for k in vars(encoder))


@needs_minilm
def test_minilm_gives_unit_384d_vectors_with_paraphrases_close() -> None:
    enc = MiniLmEncoder()
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs a song on the guitar in front of an audience.",
        "The central bank raised interest rates again this quarter.",
        None,
        "   ",
    ]
    vectors, ok = enc.encode(texts)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # curata switched the hub offline before loading
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert ok.tolist() == [True, True, True, False, False]
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[3:], 0.0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    clone = pickle.loads(pickle.dumps(enc))
    assert no_loaded_state(clone)
    assert np.allclose(clone.encode(texts[:1])[0], vectors[:1], atol=1e-5)
    assert enc.fingerprint().startswith("minilm-v1-all-MiniLM-L6-v2-")


@needs_efficientnet
def test_efficientnet_gives_1280d_and_a_resized_copy_stays_closest() -> None:
    enc = EfficientNetLite0Encoder(batch_size=4)
    original = pattern_image(1, 96)
    rgba = pattern_image(3, 64).convert("RGBA")
    rgba.putalpha(128)  # transparency is composited on white
    batch = [
        encode(original),
        encode(original.resize((60, 60), Image.Resampling.BILINEAR), "JPEG", quality=90),
        encode(pattern_image(2, 96)),
        encode(rgba),
        b"not an image",
        None,
    ]
    vectors, ok = enc.encode(batch)
    assert vectors.shape == (6, 1280)
    assert ok.tolist() == [True, True, True, True, False, False]
    assert np.allclose(np.linalg.norm(vectors[:4], axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert vectors[0] @ vectors[1] > 0.9
    assert no_loaded_state(pickle.loads(pickle.dumps(enc)))


def test_auto_falls_back_when_extras_are_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = read_dataset(write_parquet(tmp_path / "t.parquet", [{"text": f"record {i}"} for i in range(5)]))
    folder = write_image_folder(tmp_path / "imgs", {f"a/{i}.png": encode(pattern_image(i)) for i in range(5)})
    images = read_dataset(folder)
    monkeypatch.setattr(MiniLmEncoder, "available", staticmethod(lambda: False))
    monkeypatch.setattr(EfficientNetLite0Encoder, "available", staticmethod(lambda: False))
    monkeypatch.setitem(embed_module._AVAILABLE, "minilm", lambda: False)
    monkeypatch.setitem(embed_module._AVAILABLE, "efficientnet-lite0", lambda: False)
    assert make_encoder("auto", texts).name == "tfidf-svd"  # type: ignore[union-attr]
    assert make_encoder("auto", images, state_dir=tmp_path / "enc").name == "pixels"  # type: ignore[union-attr]
    with pytest.raises(MissingDependencyError, match=r"curata\[text\]"):
        make_encoder("minilm", texts)
    with pytest.raises(MissingDependencyError, match=r"curata\[image\]"):
        make_encoder("efficientnet-lite0", images)


@needs_minilm
@needs_efficientnet
def test_auto_prefers_the_model_encoders(tmp_path: Path) -> None:
    texts = read_dataset(write_parquet(tmp_path / "t.parquet", [{"text": f"record {i}"} for i in range(5)]))
    folder = write_image_folder(tmp_path / "imgs", {f"a/{i}.png": encode(pattern_image(i)) for i in range(5)})
    assert make_encoder("auto", texts).name == "minilm"  # type: ignore[union-attr]
    assert make_encoder("auto", read_dataset(folder), state_dir=tmp_path / "enc").name == (  # type: ignore[union-attr]
        "efficientnet-lite0"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SslEncoder, Path, list[bytes], float]:
    """An SSL encoder trained for 2 epochs on 64 tiny images, its folder, the images and the seconds."""
    if not SslEncoder.available():
        pytest.skip("needs torch (curata[image])")
    state_dir = tmp_path_factory.mktemp("ssl")
    images = tiny_images()
    started = time.perf_counter()
    enc = SslEncoder(**TINY).fit(images, state_dir)  # type: ignore[arg-type]
    return enc, state_dir, images, time.perf_counter() - started


@needs_torch
def test_ssl_trains_stores_a_checkpoint_and_encodes(
    trained: tuple[SslEncoder, Path, list[bytes], float],
) -> None:
    enc, state_dir, images, _ = trained
    assert enc.checkpoint_path is not None and Path(enc.checkpoint_path).parent == state_dir
    assert Path(enc.checkpoint_path).exists() and enc.checkpoint_digest in enc.fingerprint()
    vectors, ok = enc.encode([*images[:6], b"broken", None])
    assert vectors.shape == (8, 256) and ok.tolist() == [True] * 6 + [False, False]
    assert np.allclose(np.linalg.norm(vectors[:6], axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[6:], 0.0)
    clone = pickle.loads(pickle.dumps(enc))
    assert no_loaded_state(clone) and clone.checkpoint_path == enc.checkpoint_path
    assert np.allclose(clone.encode(images[:6])[0], vectors[:6], atol=1e-6)


@needs_torch
def test_ssl_second_fit_reuses_the_checkpoint(
    trained: tuple[SslEncoder, Path, list[bytes], float], monkeypatch: pytest.MonkeyPatch
) -> None:
    enc, state_dir, images, _ = trained

    def no_training(*args: object) -> None:
        raise AssertionError("the stored checkpoint should have been reused")

    monkeypatch.setattr(ssl_module, "_train", no_training)
    started = time.perf_counter()
    again = SslEncoder(**TINY).fit(list(reversed(images)), state_dir)  # type: ignore[arg-type]
    assert time.perf_counter() - started < 5.0
    assert again.fingerprint() == enc.fingerprint() and again.checkpoint_path == enc.checkpoint_path
    from curata.signals.pipeline import content_hash

    found = SslEncoder.stored([content_hash(b) for b in images], state_dir)
    assert found is not None and found.fingerprint() == enc.fingerprint() and found.width == TINY["width"]


@needs_torch
def test_ssl_is_seeded_and_keyed_by_its_training_data(
    trained: tuple[SslEncoder, Path, list[bytes], float], tmp_path: Path
) -> None:
    enc, _, images, _ = trained
    same = SslEncoder(**TINY).fit(images, tmp_path / "a")  # type: ignore[arg-type]
    assert same.fingerprint() == enc.fingerprint()
    assert np.array_equal(same.encode(images[:8])[0], enc.encode(images[:8])[0])
    other_data = SslEncoder(**TINY).fit(tiny_images(offset=1000), tmp_path / "b")  # type: ignore[arg-type]
    assert other_data.fingerprint() != enc.fingerprint()
    assert other_data.checkpoint_path != same.checkpoint_path
    with pytest.raises(InputError, match="at least 8 readable images"):
        SslEncoder(**TINY).fit([b"junk"] * 10 + images[:3], tmp_path / "c")  # type: ignore[arg-type]


@needs_torch
def test_ssl_augmentation_keeps_the_centre_in_view_and_fills_with_white() -> None:
    import torch

    side, n = 32, 512
    dot = torch.ones(n, 3, side, side)
    dot[:, :, 14:18, 14:18] = 0.0  # a small dark glyph at the centre of a white page
    for min_crop in (0.4, 0.08):  # the default, and ImageNet's tightest crops
        views = ssl_module._warp(torch, dot, torch.Generator().manual_seed(0), min_crop)
        darkest = views.amin(dim=(1, 2, 3))
        assert views.shape == dot.shape and bool((darkest < 0.5).all())  # never cropped away
    views = ssl_module._warp(torch, dot, torch.Generator().manual_seed(0), 0.4)
    # What the crop and rotation uncover is the white page, not a mirrored or black border.
    blank = ssl_module._warp(torch, torch.ones(n, 3, side, side), torch.Generator().manual_seed(0), 0.4)
    assert float(blank.min()) > 0.999
    # Seeded: the same generator state gives the same views, colour jitter and blur included.
    again = ssl_module._warp(torch, dot, torch.Generator().manual_seed(0), 0.4)
    assert torch.equal(views, again)
    a = ssl_module._augment(torch, dot[:8], torch.Generator().manual_seed(5), 0.4)
    b = ssl_module._augment(torch, dot[:8], torch.Generator().manual_seed(5), 0.4)
    assert torch.equal(a, b) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0 + 1e-5


@needs_torch
def test_ssl_embedding_keeps_where_features_fire() -> None:
    import torch

    maps = torch.zeros(2, 3, 4, 4)
    maps[0, 1, 0, 0] = 1.0  # the same feature, top-left quadrant ...
    maps[1, 1, 3, 3] = 1.0  # ... and bottom-right: equal global averages, different embeddings
    pooled = ssl_module._embedding(torch, maps)
    assert pooled.shape == (2, 3 * ssl_module.GRID**2)
    assert torch.equal(maps[0].mean(dim=(1, 2)), maps[1].mean(dim=(1, 2)))
    assert not torch.equal(pooled[0], pooled[1])


@needs_torch
def test_ssl_does_not_reuse_an_older_versions_checkpoint(
    trained: tuple[SslEncoder, Path, list[bytes], float], tmp_path: Path
) -> None:
    from curata.signals.pipeline import content_hash

    _, state_dir, images, _ = trained
    hashes = [content_hash(b) for b in images]
    for path in state_dir.glob("ssl-*"):
        shutil.copy(path, tmp_path / path.name)
    manifest = next(tmp_path.glob("ssl-data-*.json"))
    entry = json.loads(manifest.read_text())
    assert entry["version"] == ssl_module.VERSION
    assert SslEncoder.stored(hashes, tmp_path) is not None
    manifest.write_text(json.dumps({k: v for k, v in entry.items() if k != "version"}))  # as ssl-v1 wrote it
    assert SslEncoder.stored(hashes, tmp_path) is None


@needs_torch
def test_cli_embed_trains_ssl_and_auto_reuses_it(tmp_path: Path) -> None:
    layout = {f"{'ab'[i % 2]}/img{i}.png": encode(pattern_image(500 + i, 32)) for i in range(24)}
    folder = write_image_folder(tmp_path / "imgs", layout)
    workspace = tmp_path / "ws"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "embed",
            str(folder),
            "--train-ssl",
            "--epochs",
            "1",
            "--workspace",
            str(workspace),
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "ssl-v2-32px" in res.output and "24 rows x 1024 dims" in res.output
    assert list((workspace / "encoders").glob("ssl-*.pt"))
    # Without --train-ssl, auto finds the encoder trained on this data; the vectors come from the cache.
    again = runner.invoke(app, ["embed", str(folder), "--workspace", str(workspace), "--workers", "1"])
    assert again.exit_code == 0, again.output
    fingerprint = res.output.split("embeddings ", 1)[1].split(":", 1)[0]
    assert f"embeddings {fingerprint}:" in again.output and "24 from cache" in again.output


def test_cli_embed_bad_path_is_one_line_exit_two(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "curata.cli", "embed", str(tmp_path / "missing"), "--train-ssl"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0]
