"""The ``label_issue`` check: labels that out-of-sample predictions confidently contradict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curata.checks.base import Check, Context, FindingsBuilder, register
from curata.checks.embedding import (
    embeddings_unavailable,
    model_settings,
    shared_embeddings,
    shared_neighbours,
)
from curata.signals.probs import PredProbs, cross_validated_probs, label_classes, load_pred_probs


def shared_pred_probs(context: Context) -> PredProbs:
    """The run's out-of-sample probabilities: the user's file, else made by cross-validation."""

    def compute() -> PredProbs:
        labels = context.dataset.labels()
        classes = label_classes(labels)
        path = context.settings.get("pred_probs")
        if path:
            return load_pred_probs(Path(path), context.dataset, classes)
        code = {c: i for i, c in enumerate(classes)}
        y = np.array([-1 if v is None else code[v] for v in labels], dtype=np.int64)
        emb = shared_embeddings(context)
        y = np.where(emb.ok, y, -1)
        nb = shared_neighbours(context)
        probs = cross_validated_probs(
            emb.vectors, y, len(classes), knn_index=nb.index, seed=model_settings(context).seed
        )
        return PredProbs(probs, classes, f"5-fold logistic regression + kNN vote on {emb.source}")

    probs: PredProbs = context.shared("pred_probs", compute)
    return probs


def _unpredictable(context: Context) -> str | None:
    """A reason to skip when curata's own predictions are no better than always guessing the
    largest class: then a disagreement says nothing about the label."""
    pred = shared_pred_probs(context)
    code = {c: i for i, c in enumerate(pred.classes)}
    y = np.array([-1 if v is None else code[v] for v in context.dataset.labels()], dtype=np.int64)
    rows = np.flatnonzero((y >= 0) & np.isfinite(pred.probs).all(axis=1))
    if len(rows) == 0:
        return "no labelled record with content"
    accuracy = float((pred.probs[rows].argmax(axis=1) == y[rows]).mean())
    baseline = float(np.bincount(y[rows]).max() / len(rows))
    margin = max(0.05, 2.0 * float(np.sqrt(baseline * (1.0 - baseline) / len(rows))))
    if accuracy < baseline + margin:
        return (
            f"labels are not predictable from the content (out-of-sample accuracy {accuracy:.2f}, "
            f"always guessing the largest class {baseline:.2f}), so disagreements say nothing; "
            "give --pred-probs from a model that fits the task"
        )
    return None


@register
class LabelIssueCheck(Check):
    """Confident learning on out-of-sample predicted probabilities (the user's or curata's)."""

    name = "label_issue"
    description = "Likely wrong labels: out-of-sample predictions confidently name another class."

    def applies(self, context: Context) -> str | None:
        """Needs labels of two or more classes, and predicted probabilities or content to make them."""
        labels = [v for v in context.dataset.labels() if v is not None]
        if len(set(labels)) < 2:
            return "no label column with two or more classes"
        if context.settings.get("pred_probs"):
            return None
        reason = embeddings_unavailable(context, 20)
        if reason is not None:
            return reason
        return _unpredictable(context)

    def run(self, context: Context) -> pa.Table:
        """One finding per likely label error, with the suggested label and its probability."""
        from curata.label_issues import find_label_issues

        pred = shared_pred_probs(context)
        labels = context.dataset.labels()
        code = {c: i for i, c in enumerate(pred.classes)}
        y = np.array([-1 if v is None else code[v] for v in labels], dtype=np.int64)
        rows = np.flatnonzero((y >= 0) & np.isfinite(pred.probs).all(axis=1))
        out = FindingsBuilder(self.name)
        if len(rows) < 2:
            return out.table()
        result = find_label_issues(y[rows], pred.probs[rows])
        ids = context.record_ids
        for pos in np.flatnonzero(result.is_issue):
            row = int(rows[pos])
            given = pred.classes[y[row]]
            suggested = pred.classes[int(result.suggested_label[pos])]
            p_given = float(pred.probs[row, y[row]])
            p_suggested = float(result.suggested_prob[pos])
            score = float(result.score[pos])
            out.add(
                ids[row],
                score=score,
                severity="warning" if score >= 0.5 else "info",
                message=(
                    f"label '{given}' looks wrong: predicted '{suggested}' with probability "
                    f"{p_suggested:.2f} ('{given}': {p_given:.2f})"
                ),
                evidence={
                    "given_label": given,
                    "suggested_label": suggested,
                    "suggested_probability": round(p_suggested, 4),
                    "given_label_probability": round(p_given, 4),
                    "pred_probs": pred.source,
                },
            )
        return out.table()
