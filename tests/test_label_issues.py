"""Tests of curata.label_issues: planted label flips on seeded synthetic predicted probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from curata.errors import ConfigError, InputError
from curata.label_issues import LabelIssues, LabelIssueSettings, find_label_issues

Arrays = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]


def planted(n: int = 4000, k: int = 5, flip_rate: float = 0.2, sharp: float = 30.0, seed: int = 0) -> Arrays:
    """Return (pred_probs, given labels, true labels) with ``flip_rate`` of the labels flipped.

    A model trained on the noisy labels predicts, out of sample, about the noise row of the record's
    true class: ``T[c] = (1 - flip_rate)`` on ``c`` and the rest spread evenly; each prediction is a
    Dirichlet draw around that row with concentration ``sharp`` (higher = less model error).
    """
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    noise = np.full((k, k), flip_rate / (k - 1))
    np.fill_diagonal(noise, 1.0 - flip_rate)
    given = np.array([rng.choice(k, p=noise[c]) for c in true], dtype=np.int64)
    probs = np.stack([rng.dirichlet(sharp * noise[c] + 0.05) for c in true])
    return probs, given, true.astype(np.int64)


def precision_recall(flagged: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> tuple[float, float]:
    tp = float((flagged & truth).sum())
    return tp / max(1, int(flagged.sum())), tp / max(1, int(truth.sum()))


def test_planted_flips_are_found() -> None:
    probs, given, true = planted(flip_rate=0.25, sharp=100.0)
    res = find_label_issues(given, probs)
    assert isinstance(res, LabelIssues)
    truth = given != true
    precision, recall = precision_recall(res.is_issue, truth)
    assert precision >= 0.95, precision
    assert recall >= 0.8, recall
    assert res.is_issue.dtype == np.bool_ and res.is_issue.shape == given.shape
    assert res.score.dtype == np.float64 and np.all((res.score >= 0) & (res.score <= 1))
    # The score is a ranking: the top of it is almost all planted flips.
    top = np.argsort(-res.score)[: int(truth.sum()) // 2]
    assert truth[top].mean() >= 0.95
    assert res.num_issues == int(res.is_issue.sum())
    ranked = res.ranked_issues()
    assert set(ranked.tolist()) == set(np.flatnonzero(res.is_issue).tolist())
    assert np.all(np.diff(res.score[ranked]) <= 0)
    # The estimated noise matrix is close to the one used to plant the flips.
    assert res.noise_matrix.shape == (5, 5)
    assert np.allclose(res.noise_matrix.sum(axis=1), 1.0)
    assert np.all(np.abs(np.diag(res.noise_matrix) - 0.75) < 0.1)
    assert np.allclose(res.true_class_prior.sum(), 1.0)


def test_suggested_labels_match_truth_for_planted_flips() -> None:
    probs, given, true = planted(flip_rate=0.1, sharp=60.0, seed=1)
    res = find_label_issues(given, probs)
    found = res.is_issue & (given != true)
    assert found.sum() > 300
    assert np.array_equal(res.suggested_label[found], true[found])
    assert np.all(res.suggested_label[res.is_issue] != given[res.is_issue])
    assert np.all((res.suggested_prob > 0) & (res.suggested_prob <= 1))
    assert np.median(res.suggested_prob[found]) > 0.8
    # Unflagged records keep their label as the suggestion.
    assert np.array_equal(res.suggested_label[~res.is_issue], given[~res.is_issue])


def test_noisy_model_keeps_precision() -> None:
    # Predictions scattered far around the noise rows: fewer flips are certain, few false alarms.
    probs, given, true = planted(flip_rate=0.2, sharp=30.0, seed=9)
    precision, recall = precision_recall(find_label_issues(given, probs).is_issue, given != true)
    assert precision >= 0.95, precision
    assert recall >= 0.65, recall


def test_clean_data_gives_almost_no_issues() -> None:
    rng = np.random.default_rng(2)
    n, k = 3000, 4
    labels = rng.integers(0, k, n)
    probs = rng.dirichlet(np.full(k, 0.3), n) * 0.3
    probs[np.arange(n), labels] += 0.7
    res = find_label_issues(labels, probs)
    assert res.is_issue.mean() <= 0.01


def test_float16_and_unnormalised_rows_match_float64() -> None:
    probs, given, _ = planted(seed=3)
    ref = find_label_issues(given, probs)
    res16 = find_label_issues(given, probs.astype(np.float16))
    assert (res16.is_issue != ref.is_issue).mean() < 0.005
    assert np.abs(res16.score - ref.score).max() < 0.05
    scale = np.random.default_rng(4).uniform(0.5, 3.0, size=(probs.shape[0], 1))
    res_scaled = find_label_issues(given, probs * scale)
    assert np.array_equal(res_scaled.is_issue, ref.is_issue)
    assert np.allclose(res_scaled.score, ref.score, atol=1e-9)
    # Rows that sum to 0.999 after rounding, float32 input, list input and int32 labels all work.
    res32 = find_label_issues(given.astype(np.int32), (probs * 0.999).astype(np.float32))
    assert (res32.is_issue != ref.is_issue).mean() < 0.002
    small = find_label_issues(given[:50].tolist(), probs[:50].tolist())
    assert small.score.shape == (50,)


def test_chunked_run_equals_unchunked() -> None:
    probs, given, _ = planted(n=3000, seed=5)
    whole = find_label_issues(given, probs, LabelIssueSettings(chunk_rows=1_000_000))
    chunked = find_label_issues(given, probs, LabelIssueSettings(chunk_rows=97))
    assert np.array_equal(whole.is_issue, chunked.is_issue)
    assert np.allclose(whole.score, chunked.score, atol=1e-9)
    assert np.array_equal(whole.suggested_label, chunked.suggested_label)
    assert np.allclose(whole.noise_matrix, chunked.noise_matrix, atol=1e-12)
    # With a fit sample smaller than the data, chunking still does not change the result.
    sub_whole = find_label_issues(given, probs, LabelIssueSettings(fit_rows=1200, chunk_rows=5000))
    sub_chunked = find_label_issues(given, probs, LabelIssueSettings(fit_rows=1200, chunk_rows=128))
    assert np.array_equal(sub_whole.is_issue, sub_chunked.is_issue)
    assert np.allclose(sub_whole.score, sub_chunked.score, atol=1e-9)
    # ... and the sample is seeded: the same settings give the same answer.
    again = find_label_issues(given, probs, LabelIssueSettings(fit_rows=1200, chunk_rows=5000))
    assert np.array_equal(again.score, sub_whole.score)


def test_threshold_and_refine_settings() -> None:
    probs, given, _ = planted(seed=6)
    strict = find_label_issues(given, probs, LabelIssueSettings(threshold=0.9))
    loose = find_label_issues(given, probs, LabelIssueSettings(threshold=0.2))
    assert strict.num_issues < loose.num_issues
    assert np.all(loose.is_issue[strict.is_issue])
    plain = find_label_issues(given, probs, LabelIssueSettings(refine_passes=0, solver_iterations=1))
    assert plain.score.shape == given.shape


def test_edge_cases() -> None:
    empty = find_label_issues(np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    assert empty.is_issue.shape == (0,) and empty.noise_matrix.shape == (3, 3)
    # A class no record is given still works (its noise row comes from the prior).
    probs, given, _ = planted(n=1000, k=4, seed=7)
    wide = np.concatenate([probs, np.full((1000, 1), 1e-4)], axis=1)
    res = find_label_issues(given, wide)
    assert res.noise_matrix.shape == (5, 5) and np.isfinite(res.score).all()


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        (np.zeros((4, 1), dtype=int), np.full((4, 2), 0.5), "1-D"),
        (np.zeros(3, dtype=int), np.full((4, 2), 0.5), "3 entries but pred_probs has 4 rows"),
        (np.array([0, 1, 2, 0]), np.full((4, 2), 0.5), r"\[0, 1\].*row 2 holds 2"),
        (np.array([0, -1, 1, 0]), np.full((4, 2), 0.5), "row 1 holds -1"),
        (np.array([0, 0.5, 1, 0]), np.full((4, 2), 0.5), "integer class indices; row 1"),
        (np.array(["a", "b", "a", "b"]), np.full((4, 2), 0.5), "integer class indices"),
        (np.zeros(4, dtype=int), np.full(4, 0.5), "2-D"),
        (np.zeros(4, dtype=int), np.ones((4, 1)), "at least 2 class columns"),
        (np.zeros(2, dtype=int), np.array([[0.5, 0.5], [np.nan, 0.5]]), "row 1 is not a probability"),
        (np.zeros(2, dtype=int), np.array([[0.5, 0.5], [-0.1, 1.1]]), "row 1 is not a probability"),
        (np.zeros(2, dtype=int), np.array([[0.0, 0.0], [0.5, 0.5]]), "row 0 is not a probability"),
        (np.zeros(2, dtype=int), np.array([["a", "b"], ["c", "d"]]), "real numbers"),
    ],
)
def test_bad_inputs_raise_input_error(labels: Any, probs: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        find_label_issues(labels, probs)


def test_bad_row_outside_fit_sample_is_reported() -> None:
    probs, given, _ = planted(n=500, seed=8)
    probs[437] = np.inf
    with pytest.raises(InputError, match="row 437"):
        find_label_issues(given, probs, LabelIssueSettings(fit_rows=100, chunk_rows=64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.0}, "threshold must be a number in \\(0, 1\\)"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"refine_passes": -1}, "refine_passes must be an integer >= 0"),
        ({"refine_passes": 1.5}, "refine_passes"),
        ({"solver_iterations": 0}, "solver_iterations must be an integer >= 1"),
        ({"fit_rows": 0}, "fit_rows"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"chunk_rows": True}, "chunk_rows"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LabelIssueSettings(**kwargs)


def test_settings_argument_type_is_checked() -> None:
    with pytest.raises(ConfigError, match="LabelIssueSettings"):
        find_label_issues([0, 1], [[0.5, 0.5], [0.5, 0.5]], {"threshold": 0.5})  # type: ignore[arg-type]
