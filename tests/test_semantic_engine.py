"""Semantic duplicates on an engine: the same pairs and cosines from threads, local processes and Ray.

The search is exact, so any engine and any number of workers must give the very same pairs, with
bitwise equal cosines; an engine's batches must carry row blocks and the rows of a few clusters, not
the whole matrix. The Ray tests join the session's ``ray start --head`` cluster
(``conftest.cluster``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from curata.audit import AuditSettings, audit
from curata.checks.semantic import SemanticSettings
from curata.engine import LocalEngine
from curata.errors import ConfigError
from curata.semantic import SemanticDupSettings, cross_semantic_pairs, semantic_duplicate_pairs
from curata.signals.embed import EmbedSettings
from test_semantic import _clustered, _with_near_copies, brute_cross, brute_pairs

from conftest import write_parquet

HAS_RAY = importlib.util.find_spec("ray") is not None

needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs curata[ray]")

R = TypeVar("R")
F32 = npt.NDArray[np.float32]

#: Screening on (8 principal directions of 32) and off (project_dims too large for 32 columns).
SETTINGS = [
    SemanticDupSettings(min_cosine=0.93, n_clusters=40, project_dims=8, block_rows=256, seed=3),
    SemanticDupSettings(min_cosine=0.95, block_rows=512),
]


@pytest.fixture(scope="module")
def embeddings() -> F32:
    """3,000 x 32 rows around 15 directions, 400 of them planted near copies of others."""
    return _with_near_copies(_clustered(2600, 32, 15, 0.12, seed=21), 400, seed=22)


@pytest.fixture(scope="module")
def halves(embeddings: F32) -> tuple[F32, F32]:
    """A 'train' set and a 'test' set sharing the planted near copies across them."""
    return embeddings[:1800], embeddings[1800:]


def _same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].dtype == want[1].dtype == np.float64
    assert got[1].tobytes() == want[1].tobytes()  # bitwise


class _Recording(LocalEngine):
    """A local engine that says it has ``workers``, runs batches in this process and keeps them."""

    name = "recording"
    distributed = True  # so semantic dedup sends it batches, as it does a Ray engine

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.calls: list[tuple[str, list[Any], tuple[Any, ...]]] = []

    def map_batches(self, fn: Callable[..., R], batches: Iterable[Any], **options: Any) -> Iterator[R]:
        """Run the batches one by one here, after noting them."""
        kept = list(batches)
        args = options.get("args", ())
        self.calls.append((fn.__name__, kept, args))
        assert options.get("total") == len(kept)
        one = LocalEngine(workers=1)
        return one.map_batches(fn, iter(kept), **options)


# -- local engines: the same pairs as threads --------------------------------------------------------


@pytest.mark.parametrize("settings", SETTINGS, ids=["screened", "unscreened"])
def test_local_engines_give_the_threads_pairs(embeddings: F32, settings: SemanticDupSettings) -> None:
    threads = semantic_duplicate_pairs(embeddings, settings)
    ref, _ = brute_pairs(embeddings, settings.min_cosine)
    assert len(threads[0]) > 150  # most planted copies (at cosines 0.9 to 1) and more
    np.testing.assert_array_equal(threads[0], ref)
    for engine in (LocalEngine(workers=1), LocalEngine(workers=2)):
        _same(semantic_duplicate_pairs(embeddings, settings, engine=engine), threads)


def test_worker_counts_do_not_change_the_pairs(embeddings: F32) -> None:
    settings = SETTINGS[0]
    threads = semantic_duplicate_pairs(embeddings, settings)
    for workers in (1, 3, 16):
        _same(semantic_duplicate_pairs(embeddings, settings, engine=_Recording(workers)), threads)
    one_thread = SemanticDupSettings(**{**settings.__dict__, "workers": 1})
    _same(semantic_duplicate_pairs(embeddings, one_thread), threads)


@pytest.mark.parametrize("settings", SETTINGS, ids=["screened", "unscreened"])
def test_cross_pairs_on_local_engines(halves: tuple[F32, F32], settings: SemanticDupSettings) -> None:
    a, b = halves
    threads = cross_semantic_pairs(a, b, settings)
    assert len(threads[0]) > 50
    np.testing.assert_array_equal(threads[0], brute_cross(a, b, settings.min_cosine))
    for engine in (LocalEngine(workers=1), LocalEngine(workers=2), _Recording(5)):
        _same(cross_semantic_pairs(a, b, settings, engine=engine), threads)


def test_batches_carry_their_own_rows_not_the_matrix(embeddings: F32) -> None:
    """Assignment batches are a few row blocks; search batches hold a few clusters' rows each."""
    engine = _Recording(workers=2)
    settings = SETTINGS[0]
    semantic_duplicate_pairs(embeddings, settings, engine=engine)
    (assign, blocks, _), (search, groups, args) = engine.calls
    assert (assign, search) == ("_assign_task", "_search_task")
    n = embeddings.shape[0]
    assert sum(len(b) for b in blocks) == n and max(len(b) for b in blocks) < n
    assert all(len(b) % settings.block_rows == 0 for b in blocks[:-1])
    assert 2 <= len(groups) <= 4 * engine.workers  # a few batches per worker, not one per cluster
    assert max(len(g.left) for g in groups) < n
    assert all(g.right is None and g.x_left.shape == (len(g.left), 32) for g in groups)
    assert all(not isinstance(a, np.ndarray) or a.size < 32 * n for a in args)


def test_an_engine_must_be_an_engine(embeddings: F32) -> None:
    with pytest.raises(ConfigError, match="engine"):
        semantic_duplicate_pairs(embeddings[:10], engine="ray")  # type: ignore[arg-type]


def test_tiny_inputs_on_an_engine() -> None:
    engine = LocalEngine(workers=1)
    assert semantic_duplicate_pairs(np.ones((1, 4), np.float32), engine=engine)[0].shape == (0, 2)
    pairs, cos = semantic_duplicate_pairs(np.array([[1.0, 0.0], [2.0, 0.0]]), engine=engine)
    assert pairs.tolist() == [[0, 1]] and cos.tolist() == [1.0]
    empty, _ = cross_semantic_pairs(np.zeros((0, 2), np.float32), np.eye(2, dtype=np.float32), engine=engine)
    assert empty.shape == (0, 2)


# -- Ray: the same pairs, and the same findings from a whole audit -----------------------------------


@needs_ray
@pytest.mark.ray
def test_ray_engine_gives_the_same_pairs(
    cluster: dict[str, Any],
    embeddings: F32,
    halves: tuple[F32, F32],
) -> None:
    engine = cluster["engine"]
    for settings in SETTINGS:
        _same(
            semantic_duplicate_pairs(embeddings, settings, engine=engine),
            semantic_duplicate_pairs(embeddings, settings),
        )
        _same(cross_semantic_pairs(*halves, settings, engine=engine), cross_semantic_pairs(*halves, settings))


def _semantic_findings(result: Any) -> list[tuple[Any, ...]]:
    rows = [r for r in result.findings.to_pylist() if r["check"] == "semantic_duplicate"]
    keys = ("record_id", "related_id", "group_id", "severity", "score", "message", "evidence")
    return sorted(tuple(r[k] for k in keys) for r in rows)


@needs_ray
@pytest.mark.ray
def test_audit_findings_are_the_same_under_ray_and_local(
    cluster: dict[str, Any],
    embeddings: F32,
    tmp_path: Path,
) -> None:
    """2,500 records (so the check clusters them: 50 clusters) with user embeddings and splits."""
    vectors = embeddings[-2500:]
    np.save(tmp_path / "e.npy", vectors)
    rows: list[dict[str, object]] = [
        {"id": f"r{i}", "split": "test" if i % 5 == 0 else "train"} for i in range(len(vectors))
    ]
    data = write_parquet(tmp_path / "e.parquet", rows)
    settings = AuditSettings(
        embed=EmbedSettings(embeddings_file=str(tmp_path / "e.npy")),
        semantic=SemanticSettings(min_cosine=0.95),
        checks=("semantic_duplicate",),
    )
    local = audit(
        data,
        tmp_path / "local",
        split_column="split",
        settings=settings,
        workers=2,
        workspace=tmp_path / "wl",
    )
    remote = audit(
        data,
        tmp_path / "ray",
        split_column="split",
        settings=settings,
        engine="ray",
        ray_address=cluster["address"],
    )
    found = _semantic_findings(local)
    assert len(found) > 50 and any('"cross_split": true' in f[-1] for f in found)
    assert _semantic_findings(remote) == found
