"""Benchmark 5 (issue 3): how good are the self-supervised encoder's embeddings?

On two labelled image sets, the labels are hidden from the encoders and only used to score their
embeddings, with two standard probes:

- linear probe: logistic regression (standardised features, C=1) accuracy, 5-fold stratified CV;
- kNN: 5-nearest-neighbour (cosine) accuracy, same 5 folds.

The protocol is the same for every representation: same folds, same k, same metric. All four
encoders emit unit-length vectors, so cosine and Euclidean distance rank neighbours identically.

Encoders compared:

- (a) raw pixels: curata's ``pixels`` encoder (16 x 16 RGB on white, centred);
- (b) random init: the SSL encoder's CNN with its seeded random initial weights, untrained, its
  features exported exactly as the trained encoder's (last feature map pooled over 2 x 2 quadrants);
- (c) SSL: the same CNN trained by curata (``SslEncoder.fit``, SimCLR) on the set's own images,
  labels unused, with the encoder's default settings unless ``--epochs`` is given;
- (d) EfficientNet-Lite0: ImageNet-supervised features (``efficientnet-lite0`` encoder).

Data sets:

- sklearn ``load_digits``: 1,797 8 x 8 greyscale digits (10 classes), drawn dark on white and
  upsampled (bilinear) to 32 x 32 PNGs;
- openclipart-png (Debian package, ``/usr/share/openclipart/png``): the 22 top-level category
  folders are the classes (PNGs in sub-folders count for their top-level folder; symbolic links,
  which repeat a picture under another or the same category, are left out); a seeded subset of up
  to ``--per-class`` (default 150) images per class keeps CPU time sane (2,099 images).
  openclipart's categories are loose (``computer`` holds icons, ``shapes`` and
  ``signs_and_symbols`` overlap, ``unsorted`` is anything), so absolute accuracies are low.

Run: .venv/bin/python benchmarks/bench_ssl.py [--quick] [--epochs N] [--per-class N]
Writes benchmarks/results/ssl.json (``--quick``: a smoke test on small subsets with 2 SSL epochs,
written to ssl-quick.json). Timings depend on how busy the cores are: each row records the
1-minute load average (``os.getloadavg``) before and after it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from curata.signals.embed.base import Encoder
from curata.signals.embed.efficientnet import EfficientNetLite0Encoder
from curata.signals.embed.pixels import PixelEncoder
from curata.signals.embed.ssl import SslEncoder, _network

ROOT = Path("/usr/share/openclipart/png")
RESULTS = Path(__file__).resolve().parent / "results" / "ssl.json"
ROWS = {
    "pixels": "(a) raw pixels",
    "random": "(b) random-init CNN",
    "ssl": "(c) SSL (curata)",
    "efficientnet": "(d) EfficientNet-Lite0",
}


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def digits(limit: int | None, seed: int) -> tuple[list[bytes], np.ndarray]:
    """sklearn digits as 32 x 32 PNGs, dark ink on white."""
    data = load_digits()
    order = np.arange(len(data.target))
    if limit is not None and limit < len(order):
        order = np.sort(np.random.default_rng(seed).permutation(len(order))[:limit])
    images = []
    for i in order:
        grey = (255 - data.images[i] * (255 / 16)).clip(0, 255).astype(np.uint8)
        images.append(png(Image.fromarray(grey, "L").resize((32, 32), Image.Resampling.BILINEAR)))
    return images, data.target[order]


def openclipart(per_class: int, seed: int) -> tuple[list[bytes], np.ndarray, list[str]]:
    """A seeded subset of up to ``per_class`` PNGs from each top-level openclipart category."""
    if not ROOT.is_dir():
        sys.exit(f"{ROOT} is missing: apt-get install -y openclipart-png")
    rng = random.Random(seed)
    images: list[bytes] = []
    labels: list[int] = []
    classes = sorted(p.name for p in ROOT.iterdir() if p.is_dir())
    for k, name in enumerate(classes):
        files = sorted(p for p in (ROOT / name).rglob("*.png") if not p.is_symlink())
        rng.shuffle(files)
        for path in files[:per_class]:
            images.append(path.read_bytes())
            labels.append(k)
    return images, np.array(labels), classes


def random_init(side: int, seed: int, images: list[bytes], folder: Path) -> SslEncoder:
    """The SSL encoder's network with its seeded initial weights (no training), as a checkpoint.

    Inputs are standardised with the data's channel means and deviations, as training would.
    """
    import torch

    from curata.signals.embed.ssl import _prepare

    base = SslEncoder(side=side, seed=seed)
    torch.manual_seed(seed)
    backbone, head = _network(torch, base.width, base.proj_dim)
    net = torch.nn.ModuleDict({"backbone": backbone, "head": head})
    x = torch.from_numpy(_prepare(images, side)).permute(0, 3, 1, 2).float() / 255.0
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    path = folder / "random-init.pt"
    torch.save(
        {
            "state_dict": state,
            "mean": x.mean(dim=(0, 2, 3)),
            "std": x.std(dim=(0, 2, 3)).clamp_min(1e-3),
            "meta": json.dumps({"digest": "random"}),
        },
        path,
    )
    return replace(base, checkpoint_path=str(path), checkpoint_digest=f"random-init-s{seed}")


def embed(encoder: Encoder, images: list[bytes], batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    parts = [encoder.encode(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def probes(vectors: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    """Linear-probe and 5-NN accuracy, 5-fold stratified CV (mean and standard deviation)."""
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    knn = KNeighborsClassifier(n_neighbors=5, metric="cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny classes (< 5 members) and lbfgs iteration notes
        lin = cross_val_score(linear, vectors, labels, cv=cv)
        nn = cross_val_score(knn, vectors, labels, cv=cv)
    return {
        "linear_probe": round(float(lin.mean()), 4),
        "linear_probe_std": round(float(lin.std()), 4),
        "knn5": round(float(nn.mean()), 4),
        "knn5_std": round(float(nn.std()), 4),
    }


def run_dataset(
    name: str, images: list[bytes], labels: np.ndarray, args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    print(f"\n{name}: {len(images):,} images, {len(set(labels.tolist()))} classes", flush=True)
    ssl_settings = SslEncoder(seed=args.seed)
    if args.epochs is not None:
        ssl_settings = replace(ssl_settings, epochs=args.epochs)
    state_dir = folder / name

    def trained() -> Encoder:
        return ssl_settings.fit(images, state_dir)

    makers: dict[str, Callable[[], Encoder]] = {
        "pixels": PixelEncoder,
        "random": lambda: random_init(ssl_settings.side, args.seed, images, folder),
        "ssl": trained,
        "efficientnet": EfficientNetLite0Encoder,
    }
    rows: dict[str, Any] = {}
    for key in args.encoders:
        load_before = round(os.getloadavg()[0], 2)
        t = time.perf_counter()
        encoder = makers[key]()
        fit_s = time.perf_counter() - t
        vectors, ok = embed(encoder, images)
        seconds = time.perf_counter() - t
        keep = ok
        scores = probes(vectors[keep], labels[keep], args.seed)
        rows[key] = {
            "encoder": encoder.fingerprint(),
            "dim": int(vectors.shape[1]),
            "encoded": int(ok.sum()),
            **scores,
            "fit_s": round(fit_s, 1),
            "total_s": round(seconds, 1),
            "load_1min": [load_before, round(os.getloadavg()[0], 2)],
        }
        if key == "ssl":
            rows[key]["ssl_settings"] = encoder.training_settings()  # type: ignore[attr-defined]
        print(
            f"  {ROWS[key]:<26} dim {rows[key]['dim']:>5}  linear {scores['linear_probe']:.3f}"
            f"  5-NN {scores['knn5']:.3f}  ({seconds:.0f}s, load {load_before:.1f}-{os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return {"images": len(images), "classes": len(set(labels.tolist())), "rows": rows}


def table(name: str, result: dict[str, Any]) -> str:
    lines = [
        f"{name} ({result['images']:,} images, {result['classes']} classes)",
        "| encoder | dim | linear probe (5-fold) | 5-NN cosine (5-fold) | seconds (fit + encode) | load |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in result["rows"].items():
        lines.append(
            f"| {ROWS[key]} | {row['dim']} | {row['linear_probe']:.3f} ± {row['linear_probe_std']:.3f} "
            f"| {row['knn5']:.3f} ± {row['knn5_std']:.3f} | {row['total_s']:.0f} "
            f"| {row['load_1min'][0]:.1f}-{row['load_1min'][1]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: small subsets, 2 SSL epochs")
    parser.add_argument("--epochs", type=int, default=None, help="SSL epochs (default: the encoder's)")
    parser.add_argument("--per-class", type=int, default=150, help="openclipart images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="digits,openclipart")
    parser.add_argument("--encoders", default=",".join(ROWS))
    parser.add_argument("--out", type=Path, default=None, help="default: results/ssl.json (ssl-quick.json)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a few openclipart PNGs are huge
    args.encoders = [e for e in args.encoders.split(",") if e]
    if args.quick:
        args.per_class = min(args.per_class, 10)
        args.epochs = 2 if args.epochs is None else args.epochs
    if args.out is None:
        args.out = RESULTS.with_name("ssl-quick.json") if args.quick else RESULTS
    results: dict[str, Any] = {
        "benchmark": "ssl (issue 3, benchmark 5)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "quick": args.quick,
        "seed": args.seed,
        "per_class": args.per_class,
        "datasets": {},
    }
    import torch

    results["torch"] = torch.__version__
    results["torch_threads"] = torch.get_num_threads()
    results["cpus"] = os.cpu_count()
    results["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.datasets.split(","):
            if name == "digits":
                images, labels = digits(300 if args.quick else None, args.seed)
            elif name == "openclipart":
                images, labels, _ = openclipart(args.per_class, args.seed)
            else:
                sys.exit(f"unknown data set {name}")
            results["datasets"][name] = run_dataset(name, images, labels, args, folder)
    print()
    for name, result in results["datasets"].items():
        print(table(name, result))
        print()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
