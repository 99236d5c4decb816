"""Image encoder learnt from the user's own unlabelled images: SimCLR on a small CNN.

``fit`` trains a four-block CNN with the NT-Xent contrastive loss (SimCLR, Chen et al. 2020) on
two augmented views of each training image, then stores the weights in the workspace.

The augmentations suit small pictures on a white page (clip art, icons, glyphs): a random crop
(area ``min_crop`` = 0.4..1, aspect 3/4..4/3) that always keeps the picture's centre in view, a mild
rotation (up to 15 degrees), whatever the warp uncovers filled with white (not mirrored copies of
the border), then colour jitter, random greyscale and a small Gaussian blur. There is no mirror
flip: a mirrored digit, letter, sign or logo is often another thing, and on sklearn's digits flip
invariance cost about a point of 5-NN accuracy (benchmarks/README.md, section 5). Colour jitter
stays even for grey pictures: its brightness and contrast draws stop the network from matching
views by their ink histogram (without it, digits 5-NN fell by about 2.5 points).

The embedding is the last block's feature map average-pooled over its four quadrants (a 2 x 2
grid, ``32 * width`` = 1,024 numbers by default), scaled to unit length: the loss sees only the
global average through the 128-d projection head (as in SimCLR), but keeping where in the picture
each feature fired makes near neighbours agree on layout too (global pooling alone lost to raw
pixels at 5-NN on digits).

Training is seeded: weights, shuffling and every augmentation draw from ``seed`` (augmentations
are drawn on the CPU, also when a GPU trains), and on the CPU the result is bit-for-bit repeatable
(deterministic algorithms). The checkpoint file is named by a digest of the training settings and
of the training images' content hashes, so a second ``fit`` on the same images reuses it without
training; the fingerprint (the embedding cache key) holds the digest of the weights themselves.

Defaults are sized for a CPU: 32 x 32 inputs, up to 4,000 images (a seeded sample), 40 epochs of
batches of 128 (AdamW, lr 2e-3 with warm-up and cosine decay), temperature 0.2. Two free cores
process about 500-750 augmented views a second, so 2,000 images take about 3-5 minutes and 4,000
about 6-10 (two or three times longer when the cores are shared); a GPU, when there is one, is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from curata.errors import ConfigError, InputError
from curata.progress import progress_bar
from curata.signals.embed.base import Encoder, decode_rgb, import_torch, torch_device, unit_rows

#: Version of the architecture, augmentations and training loop (part of every key).
VERSION = "ssl-v2"
PACKAGE = "torch"
#: Settings that change the trained weights (the checkpoint key), in a fixed order.
TRAINING_FIELDS = (
    "side",
    "width",
    "proj_dim",
    "epochs",
    "batch_size",
    "lr",
    "temperature",
    "min_crop",
    "max_images",
    "seed",
)
MIN_IMAGES = 8
#: Largest rotation of a training view, in degrees.
MAX_ROTATION = 15.0
#: The embedding pools the last feature map over a GRID x GRID grid.
GRID = 2


def data_digest(content_hashes: Sequence[bytes]) -> str:
    """Digest of a training set: its records' content hashes, in any order."""
    return hashlib.sha256(b"".join(sorted(content_hashes))).hexdigest()[:16]


@dataclass
class SslEncoder(Encoder):
    """SimCLR-trained CNN features of each image, composited on white and shrunk to ``side`` px.

    ``width`` is the first block's channel count (doubled by each of the four blocks, so the last
    has ``8 * width`` channels and the embedding, pooled over 2 x 2 quadrants, ``32 * width``).
    ``max_images`` caps the training sample; ``device`` is ``auto`` (CUDA when available, else
    CPU), ``cpu`` or ``cuda``.
    """

    name = "ssl"
    modality = "image"
    needs_fit = True
    side: int = 32
    width: int = 32
    proj_dim: int = 128
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    temperature: float = 0.2
    min_crop: float = 0.4
    max_images: int = 4000
    seed: int = 0
    device: str = "auto"
    checkpoint_path: str | None = None
    checkpoint_digest: str = "untrained"

    def __post_init__(self) -> None:
        if not 16 <= self.side <= 128 or self.side % 8:
            raise ConfigError(f"ssl side must be a multiple of 8 in 16..128, got {self.side}")
        if self.width < 4 or self.proj_dim < 2:
            raise ConfigError("ssl width must be at least 4 and proj_dim at least 2")
        if self.epochs < 1:
            raise ConfigError(f"ssl epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 4:
            raise ConfigError(f"ssl batch_size must be at least 4, got {self.batch_size}")
        if self.max_images < MIN_IMAGES:
            raise ConfigError(f"ssl max_images must be at least {MIN_IMAGES}, got {self.max_images}")
        if not 0.0 < self.min_crop <= 1.0:
            raise ConfigError(f"ssl min_crop must be in (0, 1], got {self.min_crop}")
        if not (self.lr > 0 and self.temperature > 0):
            raise ConfigError("ssl lr and temperature must be positive")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"ssl device must be auto, cpu or cuda, got '{self.device}'")

    @staticmethod
    def available() -> bool:
        """Whether torch is installed."""
        import importlib.util

        return importlib.util.find_spec("torch") is not None

    @property
    def dim(self) -> int:
        """Length of the embedding: the last block's channels times the pooling grid's cells."""
        return 8 * self.width * GRID * GRID

    def is_fitted(self) -> bool:
        """Whether a checkpoint is attached."""
        return self.checkpoint_path is not None

    def fit_sample_size(self, requested: int) -> int:
        """At most ``max_images`` images are trained on."""
        return min(requested, self.max_images)

    def training_settings(self) -> dict[str, Any]:
        """The settings that determine the trained weights."""
        return {k: getattr(self, k) for k in TRAINING_FIELDS}

    def checkpoint_key(self, data: str) -> str:
        """The checkpoint's name: training settings plus the training set's digest."""
        text = json.dumps({"version": VERSION, **self.training_settings(), "data": data}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Architecture, input size and the digest of the trained weights."""
        return f"{VERSION}-{self.side}px-w{self.width}-{self.checkpoint_digest}"

    # -- training -------------------------------------------------------------------------------

    def fit(self, sample: Sequence[Any], state_dir: Path) -> SslEncoder:
        """Train on ``sample`` (image bytes) or reuse the checkpoint stored for the same images and
        settings under ``state_dir``; return the encoder bound to that checkpoint."""
        from curata.signals.pipeline import content_hash

        items = [None if v is None else bytes(v) for v in sample]
        if len(items) > self.max_images:
            order = np.argsort(np.array([content_hash(v) for v in items], dtype="S16"), kind="stable")
            items = [items[i] for i in np.sort(order[: self.max_images])]
        data = data_digest([content_hash(v) for v in items])
        path = Path(state_dir) / f"ssl-{self.checkpoint_key(data)}.pt"
        if path.exists():
            stored = _read_meta(path)
            if stored is not None:
                _write_manifest(Path(state_dir), data, path, stored)
                return replace(self, checkpoint_path=str(path), checkpoint_digest=stored["digest"])
        images = _prepare(items, self.side)
        if len(images) < MIN_IMAGES:
            raise InputError(
                f"the self-supervised encoder needs at least {MIN_IMAGES} readable images to train, "
                f"got {len(images)}"
            )
        torch = import_torch(PACKAGE, "image")
        started = time.perf_counter()
        state, mean, std, losses = _train(torch, images, self)
        digest = _weights_digest(state, mean, std)
        meta = {
            "version": VERSION,
            "digest": digest,
            "data": data,
            "settings": self.training_settings(),
            "n_images": len(images),
            "losses": losses,
            "seconds": round(time.perf_counter() - started, 2),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({"state_dict": state, "mean": mean, "std": std, "meta": json.dumps(meta)}, tmp)
        tmp.replace(path)
        _write_manifest(Path(state_dir), data, path, meta)
        return replace(self, checkpoint_path=str(path), checkpoint_digest=digest)

    @classmethod
    def stored(cls, content_hashes: Sequence[bytes], state_dir: Path) -> SslEncoder | None:
        """The encoder last trained on exactly these images under ``state_dir`` (any settings), or None."""
        manifest = Path(state_dir) / f"ssl-data-{data_digest(content_hashes)}.json"
        try:
            entry = json.loads(manifest.read_text())
            path = Path(state_dir) / entry["checkpoint"]
            settings = {k: v for k, v in entry["settings"].items() if k in {f.name for f in fields(cls)}}
            digest = str(entry["digest"])
            version = entry.get("version")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if version != VERSION or not path.exists():  # an older version's weights are retrained, not reused
            return None
        return cls(**settings, checkpoint_path=str(path), checkpoint_digest=digest)

    @staticmethod
    def has_checkpoints(state_dir: Path | None) -> bool:
        """Whether any SSL encoder was trained under ``state_dir``."""
        return state_dir is not None and any(Path(state_dir).glob("ssl-data-*.json"))

    # -- encoding -------------------------------------------------------------------------------

    def _model(self) -> tuple[Any, Any, Any, Any, str]:
        loaded = getattr(self, "_loaded_model", None)
        if loaded is not None:
            return loaded  # type: ignore[no-any-return]
        if self.checkpoint_path is None:
            raise ConfigError(
                "the ssl encoder must be trained before encoding: curata embed DATA --train-ssl"
            )
        torch = import_torch(PACKAGE, "image")
        ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        backbone, head = _network(torch, self.width, self.proj_dim)
        net = torch.nn.ModuleDict({"backbone": backbone, "head": head})
        net.load_state_dict(ckpt["state_dict"])
        device = torch_device(torch) if self.device == "auto" else self.device
        net = net.to(device).eval()
        loaded = (torch, net["backbone"], ckpt["mean"].view(1, 3, 1, 1), ckpt["std"].view(1, 3, 1, 1), device)
        self._loaded_model = loaded
        return loaded

    def encode(self, batch: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Embed each image; undecodable or missing ones get a zero row and ok=False."""
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        ok = np.zeros(len(batch), dtype=bool)
        rows: list[int] = []
        pictures: list[np.ndarray] = []
        for i, data in enumerate(batch):
            picture = _shrink(data, self.side)
            if picture is not None:
                rows.append(i)
                pictures.append(picture)
        if not rows:
            return out, ok
        torch, backbone, mean, std, device = self._model()
        features: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(pictures), 256):
                chunk = torch.from_numpy(np.stack(pictures[start : start + 256]))
                x = (chunk.permute(0, 3, 1, 2).float().div_(255.0) - mean) / std
                features.append(_embedding(torch, backbone(x.to(device))).float().cpu().numpy())
        out[rows] = unit_rows(np.concatenate(features))
        ok[rows] = True
        return out, ok


def _shrink(data: Any, side: int) -> np.ndarray | None:
    """An image as a ``side`` x ``side`` x 3 uint8 array (on white, squashed), None if unreadable."""
    from PIL import Image

    img = decode_rgb(data)
    if img is None:
        return None
    small = img.resize((side, side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(small, dtype=np.uint8)


def _prepare(items: Sequence[bytes | None], side: int) -> np.ndarray:
    """The readable training images, ``(n, side, side, 3)`` uint8."""
    pictures = [p for p in (_shrink(v, side) for v in items) if p is not None]
    return np.stack(pictures) if pictures else np.zeros((0, side, side, 3), np.uint8)


def _read_meta(path: Path) -> dict[str, Any] | None:
    torch = import_torch(PACKAGE, "image")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta: dict[str, Any] = json.loads(ckpt["meta"])
    except Exception:  # an unreadable or foreign file is retrained over
        return None
    return meta if isinstance(meta.get("digest"), str) else None


def _write_manifest(state_dir: Path, data: str, path: Path, meta: dict[str, Any]) -> None:
    """Remember which checkpoint was last trained on the training set ``data`` (for ``auto``)."""
    entry = {
        "checkpoint": path.name,
        "digest": meta["digest"],
        "settings": meta["settings"],
        "version": meta.get("version", VERSION),
    }
    manifest = state_dir / f"ssl-data-{data}.json"
    tmp = manifest.with_name(f".{manifest.name}.tmp")
    tmp.write_text(json.dumps(entry, sort_keys=True))
    tmp.replace(manifest)


def _weights_digest(state: dict[str, Any], mean: Any, std: Any) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    h.update(mean.numpy().tobytes() + std.numpy().tobytes())
    return h.hexdigest()[:16]


def _network(torch: Any, width: int, proj_dim: int) -> tuple[Any, Any]:
    """Backbone (4 x [conv3x3-BN-ReLU], max-pooling between; out: the last feature map, ``8 * width``
    channels at 1/8 of the input side) and the MLP projection head (on its global average)."""
    nn = torch.nn
    channels = [3, width, 2 * width, 4 * width, 8 * width]
    layers: list[Any] = []
    for i in range(4):
        layers += [
            nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[i + 1]),
            nn.ReLU(inplace=True),
        ]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
    dim = 8 * width
    head = nn.Sequential(
        nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, proj_dim)
    )
    return nn.Sequential(*layers), head


def _embedding(torch: Any, maps: Any) -> Any:
    """The exported features: each channel of the last feature map averaged over each cell of a
    ``GRID`` x ``GRID`` grid (quadrants), ``(n, channels * GRID**2)``, channel-major."""
    return torch.nn.functional.adaptive_avg_pool2d(maps, GRID).flatten(1)


def _warp(torch: Any, x: Any, gen: Any, min_crop: float) -> Any:
    """Random crop (area ``min_crop``..1, aspect 3/4..4/3) and rotation (up to ``MAX_ROTATION``
    degrees) of each image in ``x`` (n, 3, s, s floats in 0..1, on white), as one affine warp.

    Every crop contains the image's centre, so a centred subject is never cropped away; what the
    warp uncovers outside the picture is white, like the page the pictures are composited on.
    """
    F = torch.nn.functional
    n, _, s, _ = x.shape

    def uniform(lo: float, hi: float) -> Any:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    area = uniform(min_crop, 1.0)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # the crop's half-sides, in units of the image's
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    # The crop's offset (a, b), in units of its half-sides, is at most 1, so the image's centre is
    # in view (at (-a, -b)), and at most (1 - w) / w, so an unrotated crop stays inside the image.
    a = ((1 - w) / w).clamp(max=1.0) * uniform(-1.0, 1.0)
    b = ((1 - h) / h).clamp(max=1.0) * uniform(-1.0, 1.0)
    angle = uniform(-1.0, 1.0) * math.radians(MAX_ROTATION)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output (u, v) in -1..1 samples the input at R(angle) diag(w, h) (u + a, v + b).
    row0 = [cos * w, -sin * h, cos * w * a - sin * h * b]
    row1 = [sin * w, cos * h, sin * w * a + cos * h * b]
    theta = torch.stack([torch.stack(row0, 1), torch.stack(row1, 1)], 1)
    grid = F.affine_grid(theta, [n, 3, s, s], align_corners=False)
    # Sample the negative with zero padding: outside the picture comes out white.
    return 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _augment(torch: Any, x: Any, gen: Any, min_crop: float) -> Any:
    """One SimCLR view of each image in ``x`` (n, 3, s, s floats in 0..1), drawn from ``gen``."""
    F = torch.nn.functional
    n, _, s, _ = x.shape

    def uniform(lo: float, hi: float) -> Any:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    x = _warp(torch, x, gen, min_crop)

    # Colour jitter (brightness, contrast, saturation 0.4; hue 0.1) with probability 0.8.
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    jitter = (torch.rand(n, generator=gen) < 0.8).view(n, 1, 1, 1)
    b = uniform(0.6, 1.4).view(n, 1, 1, 1)
    c = uniform(0.6, 1.4).view(n, 1, 1, 1)
    sat = uniform(0.6, 1.4).view(n, 1, 1, 1)
    hue = uniform(-0.1, 0.1) * 2 * math.pi
    y = (x * b).clamp(0, 1)
    grey_mean = (y * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    y = ((y - grey_mean) * c + grey_mean).clamp(0, 1)
    grey = (y * luma).sum(1, keepdim=True)
    y = ((y - grey) * sat + grey).clamp(0, 1)
    # Hue: rotate the chroma plane of YIQ.
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, y)
    cos, sin = torch.cos(hue).view(n, 1, 1), torch.sin(hue).view(n, 1, 1)
    i_, q_ = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i_ - sin * q_, sin * i_ + cos * q_], 1)
    y = torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)
    x = torch.where(jitter, y, x)

    # Greyscale with probability 0.2.
    to_grey = (torch.rand(n, generator=gen) < 0.2).view(n, 1, 1, 1)
    x = torch.where(to_grey, (x * luma).sum(1, keepdim=True).expand(-1, 3, -1, -1), x)

    # Small Gaussian blur (3 x 3, sigma 0.1..1) with probability 0.5.
    sigma = uniform(0.1, 1.0).view(n, 1)
    taps = torch.exp(-(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum(1, keepdim=True)
    kernel = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(3, 0).unsqueeze(1)
    blurred = F.conv2d(F.pad(x.reshape(1, n * 3, s, s), (1, 1, 1, 1), mode="reflect"), kernel, groups=n * 3)
    blur = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
    return torch.where(blur, blurred.view(n, 3, s, s), x)


def nt_xent(torch: Any, z: Any, temperature: float) -> Any:
    """NT-Xent loss of ``2n`` projections where rows ``i`` and ``i + n`` are the two views of one image."""
    F = torch.nn.functional
    z = F.normalize(z, dim=1)
    two_n = z.shape[0]
    n = two_n // 2
    sims = (z @ z.T) / temperature
    sims = sims.masked_fill(torch.eye(two_n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, two_n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sims, targets)


@contextmanager
def _deterministic(torch: Any) -> Iterator[None]:
    """Deterministic algorithms while training (restored after)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _train(torch: Any, images: np.ndarray, enc: SslEncoder) -> tuple[dict[str, Any], Any, Any, list[float]]:
    """SimCLR training; returns (CPU state dict, channel mean, channel std, loss per epoch)."""
    device = torch_device(torch) if enc.device == "auto" else enc.device
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    m_dev, s_dev = mean.view(1, 3, 1, 1).to(device), std.view(1, 3, 1, 1).to(device)
    n = len(x)
    batch = min(enc.batch_size, n)
    steps = max(1, n // batch)  # full batches only (the remainder is reshuffled next epoch)
    losses: list[float] = []
    with _deterministic(torch):
        torch.manual_seed(enc.seed)
        gen = torch.Generator().manual_seed(enc.seed)
        backbone, head = _network(torch, enc.width, enc.proj_dim)
        net = torch.nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=enc.lr, weight_decay=1e-4)
        total = enc.epochs * steps
        warmup = max(1, total // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda k: (
                (k + 1) / warmup
                if k < warmup
                else 0.5 * (1 + math.cos(math.pi * (k - warmup) / max(1, total - warmup)))
            ),
        )
        net.train()
        with progress_bar("training ssl encoder", enc.epochs) as advance:
            for epoch in range(1, enc.epochs + 1):
                order = torch.randperm(n, generator=gen)
                running = 0.0
                for step in range(steps):
                    xb = x[order[step * batch : (step + 1) * batch]]
                    views = torch.cat([_augment(torch, xb, gen, enc.min_crop) for _ in range(2)])
                    views = (views.to(device) - m_dev) / s_dev
                    loss = nt_xent(torch, head(backbone(views).mean(dim=(2, 3))), enc.temperature)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    running += float(loss.detach())
                losses.append(round(running / steps, 5))
                advance(1, f"ssl epoch {epoch}/{enc.epochs}: loss {losses[-1]:.4f}")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return state, mean, std, losses
