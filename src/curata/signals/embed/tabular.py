"""Tabular encoder: standardised numeric columns plus one-hot categorical columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curata.dataset import Dataset
from curata.errors import InputError

#: Categorical columns with more distinct values than this are left out (ids, free text).
MAX_CATEGORIES = 50


@dataclass(frozen=True)
class TabularFeatures:
    """The feature matrix of a table (float32, one row per record) and the columns it came from."""

    matrix: np.ndarray
    columns: list[str]


def tabular_features(dataset: Dataset) -> TabularFeatures:
    """Encode every column that plays no role: numbers standardised (median-imputed), low-cardinality
    strings and booleans one-hot encoded. Raises InputError when no column can be used."""
    roles = {v for v in dataset.roles.as_dict().values() if v is not None}
    parts: list[np.ndarray] = []
    used: list[str] = []
    for name in dataset.table.column_names:
        if name in roles:
            continue
        col = dataset.table.column(name)
        typ = col.type
        if pa.types.is_integer(typ) or pa.types.is_floating(typ):
            values = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            finite = np.isfinite(values)
            if finite.sum() < 2:
                continue
            fill = float(np.median(values[finite]))
            values = np.where(finite, values, fill)
            scale = float(values.std()) or 1.0
            parts.append(((values - values.mean()) / scale)[:, None])
            used.append(name)
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_boolean(typ):
            encoded = pc.dictionary_encode(col).combine_chunks()
            levels = len(encoded.dictionary)
            if levels < 2 or levels > MAX_CATEGORIES:
                continue
            idx = np.asarray(encoded.indices.fill_null(levels).to_numpy(zero_copy_only=False), dtype=np.int64)
            onehot = np.zeros((len(idx), levels + 1), dtype=np.float64)
            onehot[np.arange(len(idx)), idx] = 1.0
            parts.append(onehot[:, :levels])
            used.append(name)
    if not parts:
        raise InputError(
            f"{dataset.source}: no numeric or categorical columns besides the roles "
            "to build tabular features from"
        )
    return TabularFeatures(np.hstack(parts).astype(np.float32), used)
