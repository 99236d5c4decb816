"""curata: audit, curate and document the datasets deep-learning models are trained on."""

from __future__ import annotations

__version__ = "0.1.0"
