"""Tests for the self-contained HTML report (``curata.report.html``)."""

from __future__ import annotations

import base64
import copy
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curata.report.embedding_map import build_map
from curata.report.html import TEXT_LIMIT, highlight_shared, render_html, safe_image_uri, truncate

from browser import open_page, require_browser

EXTERNAL_ATTR = re.compile(
    r"""\b(?:src|href|xlink:href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.I
)


def png_data_uri(width: int, height: int, rgb: tuple[int, int, int], stripe: bool = False) -> str:
    """Build a tiny RGB PNG as a ``data:`` URI without any imaging library."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            on = stripe and (x // 4 + y // 4) % 2 == 0
            row += bytes((255 - c for c in rgb) if on else rgb)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def record(
    record_id: str,
    *,
    label: str | None = None,
    split: str | None = None,
    text: str | None = None,
    image: str | None = None,
    dataset: str = "data",
) -> dict[str, Any]:
    """One record as the examples carry it."""
    return {
        "record_id": record_id,
        "label": label,
        "split": split,
        "text": text,
        "image": image,
        "dataset": dataset,
    }


def finding(
    rec: dict[str, Any],
    related: dict[str, Any] | None = None,
    *,
    score: float = 0.9,
    severity: str = "warning",
    message: str = "finding",
    group_id: str | None = None,
) -> dict[str, Any]:
    """One example finding with its record details."""
    return {
        "record_id": rec["record_id"],
        "related_id": related["record_id"] if related else None,
        "group_id": group_id,
        "score": score,
        "severity": severity,
        "message": message,
        "record": rec,
        "related": related,
    }


def check_entry(
    count: int,
    status: str = "ok",
    *,
    error: int = 0,
    warning: int = 0,
    info: int = 0,
    err: str | None = None,
    reason: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    """One entry of ``report["checks"]``."""
    return {
        "status": status,
        "count": count,
        "by_severity": {"info": info, "warning": warning, "error": error},
        "error": err,
        "reason": reason,
        "seconds": 0.123,
        "description": description,
    }


SHARED = "The quick brown fox jumps over the lazy dog near the river bank"


def sample_report() -> dict[str, Any]:
    """A full report.json with every section filled in."""
    labels = {f"class_{i:02d}": 400 - 9 * i for i in range(36)}
    labels["cat"] = 900
    splits = {"train": 8000, "val": 1000, "test": 1000}
    by_split: dict[str, dict[str, int]] = {s: {} for s in splits}
    for name, n in labels.items():
        by_split["train"][name] = int(n * 0.8)
        by_split["val"][name] = int(n * 0.1)
        by_split["test"][name] = n - int(n * 0.8) - int(n * 0.1)
    return {
        "curata_version": "0.1.0",
        "created_at": "2026-11-25T22:00:00Z",
        "input": {
            "path": "/data/pets/train.parquet",
            "kind": "tabular",
            "format": "parquet",
            "num_rows": 10000,
            "modality": "text",
        },
        "references": [{"path": "/data/pets/holdout.parquet", "num_rows": 2500}],
        "roles": {"id": "id", "text": "caption", "image": "img", "label": "label", "split": "split"},
        "settings": {"near_duplicates": {"threshold": 0.9, "method": "minhash"}, "fail_on": "error"},
        "checks": {
            "exact_duplicates": check_entry(
                12, error=12, description="Records whose content is byte-for-byte identical."
            ),
            "near_duplicates": check_entry(
                30, warning=25, info=5, description="Records whose content is almost the same."
            ),
            "split_leakage": check_entry(4, error=4, description="The same content in train and test."),
            "corrupt_images": check_entry(2, error=2, description="Images that cannot be decoded."),
            "empty_text": check_entry(3, warning=3, description="Texts that are empty or whitespace."),
            "missing_label": check_entry(5, info=5, description="Records without a label."),
            "outliers": check_entry(
                0,
                "failed",
                err="ValueError: embedding matrix has NaN values",
                description="Records far from all others.",
            ),
            "label_noise": check_entry(
                0,
                "skipped",
                reason="needs at least 2 labels with 20 records",
                description="Likely mislabels.",
            ),
        },
        "statistics": {
            "num_rows": 10000,
            "splits": splits,
            "labels": labels,
            "label_by_split": by_split,
            "duplicate_cluster_sizes": {"2": 40, "3": 9, "4": 3, "7": 1},
            "score_histograms": {
                "exact_duplicates": [0, 0, 0, 0, 0, 0, 0, 0, 0, 12],
                "near_duplicates": [0, 0, 0, 0, 0, 0, 0, 3, 12, 15],
                "split_leakage": [0, 0, 0, 0, 0, 0, 0, 0, 1, 3],
            },
        },
        "timings": {"read_s": 0.8, "signals_s": 3.1, "checks_s": 1.4, "total_s": 5.3},
        "exit": {"fail_on": "error", "worst_severity": "error", "code": 1},
    }


def sample_examples() -> dict[str, list[dict[str, Any]]]:
    """Examples of every layout: text pair, image pair, reference pair and single records."""
    red = png_data_uri(48, 32, (220, 60, 60), stripe=True)
    red2 = png_data_uri(48, 32, (200, 70, 70), stripe=True)
    blue = png_data_uri(24, 24, (40, 90, 200))
    return {
        "exact_duplicates": [
            finding(
                record("r-1", label="cat", split="train", text=SHARED + " today."),
                record("r-2", label="dog", split="train", text="Yesterday " + SHARED + "."),
                score=1.0,
                severity="error",
                message="identical text with a different label",
                group_id="g-1",
            ),
            finding(
                record("r-3", label="cat", split="train", text="<script>alert('pwned')</script> hello there"),
                record("r-4", label="cat", split="val", text="<b>bold</b> hello there"),
                score=0.97,
                severity="error",
                message="dup <img src=x onerror=alert(1)>",
            ),
        ],
        "near_duplicates": [
            finding(
                record("img-10", label="cat", split="train", image=red),
                record("img-11", label="cat", split="train", image=red2),
                score=0.96,
                message="near-identical images (hamming 2)",
                group_id="g-7",
            ),
            finding(
                record("t-1", label="cat", text="x" * 5000 + " tail"),
                record("t-2", label="cat", text="x" * 4000),
                score=0.91,
                severity="info",
                message="long texts",
            ),
        ],
        "split_leakage": [
            finding(
                record("img-20", label="dog", split="test", image=blue),
                record("ref-3", label="dog", split="train", image=blue, dataset="reference 1"),
                score=1.0,
                severity="error",
                message="test image also in the reference set",
            )
        ],
        "corrupt_images": [
            finding(record("img-99", label="cat", split="train"), severity="error", message="cannot decode"),
            finding(
                record("img-98", image="https://example.com/x.png"),
                severity="error",
                message="remote image is never embedded",
            ),
        ],
        "empty_text": [
            finding(record("e-1", label="cat", split="val", text="   "), message="whitespace only"),
            finding(record("e-2", text=""), message="empty"),
        ],
        "missing_label": [
            finding(
                record("m-1", split="train", text="no label here", image=blue),
                severity="info",
                message="no label",
            )
        ],
    }


def zero_report() -> dict[str, Any]:
    """A report where every check ran clean and there are no labels or splits."""
    rep = sample_report()
    rep["checks"] = {
        name: check_entry(0, description=entry["description"]) for name, entry in rep["checks"].items()
    }
    rep["statistics"] = {"num_rows": 10, "splits": {}, "labels": {}, "label_by_split": {}}
    rep["statistics"]["duplicate_cluster_sizes"] = {}
    rep["statistics"]["score_histograms"] = {}
    rep["exit"] = {"fail_on": None, "worst_severity": None, "code": 0}
    rep["references"] = []
    rep["roles"] = {"id": None, "text": "text", "image": None, "label": None, "split": None}
    return rep


def _no_external(html: str) -> None:
    """Assert that no attribute and no CSS ``url()`` points outside the file."""
    assert not EXTERNAL_ATTR.search(html), EXTERNAL_ATTR.search(html)
    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", html):
        assert url.startswith("data:"), url
    assert "@import" not in html
    assert "<link" not in html.lower()


# --------------------------------------------------------------------------- unit tests


def test_renders_full_report() -> None:
    html = render_html(sample_report(), sample_examples())
    assert html.startswith("<!DOCTYPE html>")
    assert "train.parquet" in html
    for name in sample_report()["checks"]:
        assert f'data-check="{name}"' in html
    assert html.count("<svg") >= 4 + 3  # 4 dataset charts + 3 score histograms
    assert "data:image/png;base64," in html
    assert "ValueError: embedding matrix has NaN values" in html
    assert "needs at least 2 labels with 20 records" in html
    assert 'class="badge failed"' in html and 'class="badge skipped"' in html
    assert "reference 1" in html
    assert "other (7)" in html  # 37 labels, top 30 shown
    assert len(html) < 300_000


def test_shared_text_is_marked() -> None:
    html = render_html(sample_report(), sample_examples())
    assert "<mark>The quick brown fox jumps over the lazy dog near the river bank</mark>" in html
    a, b = highlight_shared("alpha beta gamma delta", "zeta beta gamma eta")
    assert str(a) == "alpha <mark>beta gamma</mark> delta"
    assert str(b) == "zeta <mark>beta gamma</mark> eta"


def test_highlight_escapes_and_ignores_punctuation_only_matches() -> None:
    a, b = highlight_shared("<x> & one", "<y> & two")
    assert "<x>" not in str(a) and "&lt;x&gt;" in str(a)
    assert "<mark>" not in str(a) and "<mark>" not in str(b)


def test_user_html_is_escaped() -> None:
    html = render_html(sample_report(), sample_examples())
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "<b>bold</b>" not in html
    assert html.count("<script>") == 1  # only the page's own script


def test_escapes_report_fields() -> None:
    rep = sample_report()
    rep["input"]["path"] = "/data/<script>evil()</script>.csv"
    rep["checks"]["outliers"]["error"] = "<img src=x onerror=alert(1)>"
    rep["statistics"]["labels"]["<svg onload=alert(1)>"] = 5
    html = render_html(rep, sample_examples())
    assert "<script>evil" not in html
    assert "<img src=x" not in html
    assert "<svg onload" not in html


def test_no_external_references() -> None:
    html = render_html(sample_report(), sample_examples())
    _no_external(html)
    assert "example.com" not in html  # a non-data image URI is dropped, not embedded
    assert safe_image_uri("https://example.com/x.png") is None
    assert safe_image_uri("data:text/html;base64,PHNjcmlwdD4=") is None
    assert safe_image_uri(png_data_uri(2, 2, (0, 0, 0))) is not None


def test_long_text_is_truncated() -> None:
    html = render_html(sample_report(), sample_examples())
    assert "x" * 5000 not in html
    assert "more characters" in html
    kept, cut = truncate("word " * 1000)
    assert len(kept) <= TEXT_LIMIT and cut == 5000 - len(kept)


def test_zero_findings() -> None:
    html = render_html(zero_report(), {})
    assert "No findings." in html
    assert "Passed" in html
    assert "No split, label or duplicate statistics" in html
    assert "<svg" not in html
    assert '<details class="card check"' not in html
    _no_external(html)


def test_failed_check_only() -> None:
    rep = zero_report()
    rep["checks"]["outliers"] = check_entry(0, "failed", err="RuntimeError: boom <b>")
    rep["exit"]["code"] = 2
    html = render_html(rep, {})
    assert 'id="check-outliers"' in html
    assert "RuntimeError: boom &lt;b&gt;" in html
    assert "Failed" in html


def test_minimal_report_does_not_crash() -> None:
    html = render_html({"checks": {}}, {})
    assert "No checks ran." in html
    html = render_html({"checks": {"x": {"status": "ok", "count": 1}}}, {"x": [{"record_id": "a"}]})
    assert "x" in html


def test_examples_without_matching_check_are_ignored() -> None:
    ex = copy.deepcopy(sample_examples())
    ex["not_a_check"] = ex["exact_duplicates"]
    html = render_html(sample_report(), ex)
    assert "not_a_check" not in html


# --------------------------------------------------------------------------- model-based checks


def model_report() -> dict[str, Any]:
    """A report with the model-based checks and an embedding map (two clusters, flagged points)."""
    rep = zero_report()
    rep["checks"] = {
        "label_issue": check_entry(3, warning=3, description="Likely wrong labels."),
        "semantic_duplicate": check_entry(2, error=1, warning=1, description="Same meaning."),
        "outlier": check_entry(1, warning=1, description="Records unlike the rest."),
        "low_quality": check_entry(1, warning=1, description="Low quality content."),
        "class_imbalance": check_entry(3, info=3, description="Rare classes."),
        "underrepresented": check_entry(4, info=4, description="Coverage gaps."),
    }
    labels = {"3": 50, "8": 45, "<b>cat</b>": 30, "rare": 3}
    rep["statistics"] = {
        "num_rows": 128,
        "labels": labels,
        "rare_classes": {"rare": 3},
        "sparse_clusters": {"cluster-all-2": {"size": 2, "scope": "all", "reported": 2}},
    }
    rep["settings"] = {"model": {"rare_class_ratio": 0.1, "min_class_records": 5}}
    rng = np.random.default_rng(0)
    vectors = np.vstack([rng.normal(0, 1, (64, 8)) + 6, rng.normal(0, 1, (64, 8)) - 6])
    ids = [f"r{i}" for i in range(127)] + ["<script>x</script>"]
    names = ["3"] * 50 + ["8"] * 45 + ["<b>cat</b>"] * 30 + ["rare"] * 2 + [None]
    flagged = [
        {"check": "label_issue", "record_id": "r1", "severity": "warning", "score": 0.9},
        {"check": "outlier", "record_id": "r70", "severity": "warning", "score": 0.8},
        {"check": "semantic_duplicate", "record_id": "r71", "severity": "error", "score": 1.0},
        {"check": "label_issue", "record_id": "<script>x</script>", "severity": "info", "score": 0.4},
    ]
    rep["statistics"]["embedding_map"] = build_map(vectors, ids, names, flagged, source="pixels-v1-rgb16")
    rep["exit"] = {"fail_on": None, "worst_severity": "error", "code": 0}
    return rep


def model_examples() -> dict[str, list[dict[str, Any]]]:
    """Examples of every model-based check, with the evidence each writes."""
    blue = png_data_uri(24, 24, (40, 90, 200))
    red = png_data_uri(24, 24, (200, 40, 40))

    def with_evidence(item: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
        return {**item, "evidence": json.dumps(evidence)}

    issue = {"suggested_probability": 0.94, "given_label_probability": 0.03, "pred_probs": "5-fold"}
    return {
        "label_issue": [
            with_evidence(
                finding(record("img-3", label="3", split="train", image=blue), score=0.97, message="label 3"),
                {"given_label": "3", "suggested_label": "8", **issue},
            ),
            with_evidence(
                finding(record("txt-1", label="<b>cat</b>", text="a <i>dog</i> barks"), message="label cat"),
                {"given_label": "<b>cat</b>", "suggested_label": "<img src=x>", **issue},
            ),
            with_evidence(finding(record("odd", label="3"), message="no evidence"), {}),
        ],
        "semantic_duplicate": [
            with_evidence(
                finding(
                    record("s-2", label="8", split="test", image=red),
                    record("s-1", label="8", split="train", image=red),
                    score=0.99,
                    severity="error",
                    message="same meaning as s-1; train/test leakage",
                ),
                {"cosine": 0.9912, "cross_split": True, "cluster_size": 2},
            ),
            with_evidence(
                finding(
                    record("s-4", split="train", text="the sky"), record("s-3", split="train", text="sky")
                ),
                {"cosine": 0.96, "cross_split": False, "cluster_size": 2},
            ),
        ],
        "outlier": [
            with_evidence(
                finding(record("o-1", image=blue), record("o-2", image=red), message="unlike the rest"),
                {
                    "mean_neighbour_distance": 0.5684,
                    "median_distance": 0.1203,
                    "robust_z": 7.67,
                    "isolation_ratio": 2.75,
                },
            )
        ],
        "low_quality": [
            with_evidence(
                finding(record("q-1", image=blue), message="image is blurry"),
                {
                    "blur": 12.5,
                    "reasons": ["blurry", "tiny"],
                    "limits": {"blurry": 100.0, "tiny": 8},
                    "width": 4,
                    "height": 5,
                },
            )
        ],
        "class_imbalance": [
            with_evidence(
                finding(record(f"c-{i}", label="rare", image=blue), severity="info", group_id="class-rare"),
                {"class": "rare", "class_size": 3, "largest_class": "3", "largest": 50},
            )
            for i in range(3)
        ],
        "underrepresented": [
            with_evidence(
                finding(
                    record(f"u-{i}", label="8", image=red), severity="info", group_id=f"cluster-all-{i % 2}"
                ),
                {"cluster_size": 2, "clusters": 6, "scope": "all"},
            )
            for i in range(4)
        ],
    }


def section(html: str, check: str) -> str:
    """The HTML of one check's findings section."""
    part = html[html.index(f'id="check-{check}"') :]
    return part[: part.index("</details>")]


def test_label_issue_cards_show_given_and_suggested_labels() -> None:
    html = render_html(model_report(), model_examples())
    cards = re.findall(r'<article class="ex li .*?</article>', section(html, "label_issue"), re.S)
    assert len(cards) == 3
    first = cards[0]
    assert 'title="given: 3 → suggested: 8 (0.94)"' in first
    assert re.search(
        r'class="lab given".*?</i>3</span>.*→.*class="lab suggested".*?</i>8</span>', first, re.S
    )
    assert "(0.94)" in first and "data:image/png;base64," in first and "img-3" in first
    # labels and texts are escaped, and the suggested label gets the map's colour
    assert "&lt;b&gt;cat&lt;/b&gt;" in cards[1] and "&lt;img src=x&gt;" in cards[1]
    assert "<img src=x>" not in html and "<b>cat</b>" not in html and "<i>dog</i>" not in html
    colours = model_report()["statistics"]["embedding_map"]["labels"]
    assert colours.index("8") == 1 and "background:#f28e2b" in first  # palette colour of label 8
    assert "no evidence" in cards[2] and 'class="relabel"' not in cards[2]  # no evidence: the message


def test_semantic_duplicates_are_pairs_with_leakage_marked() -> None:
    html = render_html(model_report(), model_examples())
    pairs = section(html, "semantic_duplicate")
    assert pairs.count('class="pair-grid"') == 2
    assert "s-1" in pairs and "s-2" in pairs
    assert pairs.count('class="tag leak"') == 1 and "leakage train → test" in pairs
    assert "same meaning as" in pairs and "0.991" in pairs


def test_outlier_and_low_quality_show_their_metrics() -> None:
    html = render_html(model_report(), model_examples())
    outlier = section(html, "outlier")
    assert "neighbour distance" in outlier and "0.568" in outlier and "typical 0.12" in outlier
    assert "its nearest record" in outlier
    quality = section(html, "low_quality")
    assert quality.count('<article class="ex li') == 1 and "Lowest quality" in quality
    assert "blur 12.5" in quality and "limit 100" in quality
    assert "4×5 px" in quality and "min side 8" in quality


def test_class_imbalance_chart_and_sparse_clusters() -> None:
    html = render_html(model_report(), model_examples())
    classes = section(html, "class_imbalance")
    assert 'class="class-chart"' in classes and "rare below 5" in classes
    assert classes.count("#e15759") == 1  # the one rare class is red
    assert "class rare" in classes and "3 records" in classes and classes.count('class="ex mini') == 3
    clusters = section(html, "underrepresented")
    assert clusters.count('class="group"') == 2 and "sparse cluster of the data" in clusters
    assert "1 of 6 clusters" in clusters


def test_embedding_map_marks_every_point_and_the_flagged_ones() -> None:
    rep = model_report()
    emap = rep["statistics"]["embedding_map"]
    html = render_html(rep, model_examples())
    svg = html[html.index('<svg class="emap-svg"') :]
    svg = svg[: svg.index("</svg>")]
    assert svg.count('<circle class="p"') == emap["num_points"] == 128
    assert svg.count('<g class="flag"') == 4 and svg.count('<circle class="r ') == 4
    assert '<circle class="r error"' in svg
    assert "r70 · label 8 · flagged: outlier" in svg
    assert "&lt;script&gt;x&lt;/script&gt; · no label · flagged: label_issue" in svg
    assert "<script>x" not in html
    legend = html[html.index('class="emap-legend"') :]
    legend = legend[: legend.index("</ul>")]
    for name in ("3", "8", "&lt;b&gt;cat&lt;/b&gt;", "rare", "no label"):
        assert f'<span class="nm">{name}</span>' in legend
    assert 'data-map-check="label_issue"' in html and 'data-map-check="outlier"' in html
    assert "pixels" in html and "principal component 1" in svg
    _no_external(html)


def test_no_embedding_map_says_why() -> None:
    rep = model_report()
    rep["statistics"]["embedding_map"] = {"available": False, "reason": "outlier was skipped (<few> records)"}
    html = render_html(rep, {})
    assert "No embedding map: outlier was skipped (&lt;few&gt; records)." in html
    assert '<svg class="emap-svg"' not in html
    rep["statistics"]["embedding_map"] = {"available": True, "points": {"x": [1.0]}}
    assert "the map data in report.json is malformed" in render_html(rep, {})
    del rep["statistics"]["embedding_map"]
    assert 'id="emap"' not in render_html(rep, {})


# --------------------------------------------------------------------------- browser test


@pytest.mark.browser
def test_opens_offline_in_chromium(tmp_path: Path) -> None:
    require_browser()
    report, examples = sample_report(), sample_examples()
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(report, examples), encoding="utf-8")

    with open_page(page_file) as (page, log):
        rows = page.locator("#checks-table tbody tr").count()
        assert rows == len(report["checks"])
        assert page.locator("svg.chart").count() >= 7
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths), widths
        assert page.locator(".text mark").count() >= 2

        # the severity filter hides examples of other severities
        page.click("button[data-filter=error]")
        visible = page.eval_on_selector_all(".ex", "els => els.filter(e => !e.hidden).length")
        total = page.locator(".ex").count()
        assert 0 < visible < total
        page.click("button[data-filter=all]")
        page.click("button[data-toggle=close]")
        assert page.eval_on_selector_all("details.check", "els => els.every(e => !e.open)")
        page.click("button[data-toggle=open]")

        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert not log.errors, log.errors
    assert not log.external, log.external
