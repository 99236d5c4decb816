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
        ({"reading": "mean"}, "reading must be auto, noise_rows or profiles"),
        ({"sharpness": 0.5}, "sharpness must be None or a number in \\[1, 16\\]"),
        ({"sharpness": True}, "sharpness"),
        ({"select_rows": 0}, "select_rows"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LabelIssueSettings(**kwargs)


def test_settings_argument_type_is_checked() -> None:
    with pytest.raises(ConfigError, match="LabelIssueSettings"):
        find_label_issues([0, 1], [[0.5, 0.5], [0.5, 0.5]], {"threshold": 0.5})  # type: ignore[arg-type]


def soft_predictions(
    n: int = 3000, k: int = 5, flip_rate: float = 0.2, own: float = 0.5, conc: float = 20.0, seed: int = 0
) -> Arrays:
    """(pred_probs, given, true) from an imprecise model: a record of true class ``c`` is predicted
    about ``own`` on ``c`` and the rest spread evenly (whatever its label), a Dirichlet draw with
    concentration ``conc``; ``flip_rate`` of the labels moved to a uniformly drawn other class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    given = true.copy()
    flips = rng.choice(n, int(flip_rate * n), replace=False)
    given[flips] = (true[flips] + rng.integers(1, k, flips.size)) % k
    profile = np.full((k, k), (1.0 - own) / (k - 1))
    np.fill_diagonal(profile, own)
    probs = np.stack([rng.dirichlet(conc * profile[c]) for c in true])
    return probs, given.astype(np.int64), true.astype(np.int64)


def test_soft_predictions_are_read_through_profiles_and_sharpened() -> None:
    # A weak model puts ~0.5 on the true class even for clean records, and a few percent on the wrong
    # given label of a flipped one; reading that as evidence for the label (noise rows, no
    # sharpening: the former estimator) keeps most wrong labels.
    probs, given, true = soft_predictions()
    truth = given != true
    res = find_label_issues(given, probs)
    assert res.reading == "profiles" and res.sharpness > 1.0
    precision, recall = precision_recall(res.is_issue, truth)
    assert precision >= 0.95 and recall >= 0.93, (precision, recall)
    # The profiles are the mean predictions (about 0.5 on the diagonal), the noise matrix the flips.
    assert np.all(np.abs(np.diag(res.profiles) - 0.5) < 0.08)
    assert np.all(np.abs(np.diag(res.noise_matrix) - 0.8) < 0.06)
    old = find_label_issues(given, probs, LabelIssueSettings(reading="noise_rows", sharpness=1.0))
    assert old.reading == "noise_rows" and old.sharpness == 1.0
    assert precision_recall(old.is_issue, truth)[1] < 0.3
    # The chosen candidate is the one under which the given labels are most probable.
    for reading in ("noise_rows", "profiles"):
        for g in (1.0, 2.0):
            other = find_label_issues(given, probs, LabelIssueSettings(reading=reading, sharpness=g))
            assert other.label_log_likelihood <= res.label_log_likelihood + 1e-12
    # The score still ranks: no ties between the flagged records' scores flatten it to 0/1.
    assert np.unique(res.score[res.is_issue]).size > 0.9 * res.num_issues


def test_scattered_predictions_around_noise_rows_are_sharpened() -> None:
    # Predictions scattered around the noise rows: the chosen sharpening finds the flips the plain
    # reading (noise rows, no sharpening) keeps, without false alarms.
    probs, given, true = planted(flip_rate=0.25, sharp=30.0, seed=4)
    truth = given != true
    res = find_label_issues(given, probs)
    plain = find_label_issues(given, probs, LabelIssueSettings(reading="noise_rows", sharpness=1.0))
    assert res.sharpness > 1.0
    precision, recall = precision_recall(res.is_issue, truth)
    assert precision >= 0.98 and recall >= 0.97, (precision, recall)
    assert recall > precision_recall(plain.is_issue, truth)[1] + 0.1


def test_lone_flips_among_clean_records_are_found() -> None:
    # 1% of labels flipped, predictions sharp on the true class: every flip is clearly wrong.  The
    # EM must not drift to "no noise" and keep them (the former estimator found 0-1 of the 20).
    rng = np.random.default_rng(11)
    n, k = 2000, 5
    true = rng.integers(0, k, n)
    profile = np.full((k, k), 0.1 / (k - 1))
    np.fill_diagonal(profile, 0.9)
    probs = np.stack([rng.dirichlet(100.0 * profile[c]) for c in true])
    given = true.copy()
    flips = rng.choice(n, 20, replace=False)
    given[flips] = (true[flips] + rng.integers(1, k, flips.size)) % k
    res = find_label_issues(given, probs)
    assert res.is_issue[flips].all(), np.sort(res.score[flips])[:5]
    assert res.num_issues <= 22
    assert np.array_equal(res.suggested_label[flips], true[flips])


def test_candidate_selection_on_a_sample_is_seeded() -> None:
    probs, given, _ = soft_predictions(n=2500, seed=3)
    small = LabelIssueSettings(select_rows=800)
    a = find_label_issues(given, probs, small)
    b = find_label_issues(given, probs, small)
    assert np.array_equal(a.score, b.score) and (a.reading, a.sharpness) == (b.reading, b.sharpness)
    # Chosen on 800 rows, fitted on all: about the same flags as choosing on all rows.
    full = find_label_issues(given, probs, LabelIssueSettings(select_rows=10_000))
    assert (a.is_issue != full.is_issue).mean() < 0.02
    # A fixed reading and sharpness skip the selection.
    fixed = find_label_issues(given, probs, LabelIssueSettings(reading="profiles", sharpness=2.0))
    assert (fixed.reading, fixed.sharpness) == ("profiles", 2.0)
