"""The whole loop on data made in code: audit -> dry run -> curate -> diff -> export -> audit -> card ->
verify.

Planted: an exact duplicate in train, a train record leaked into test, flipped labels (with
out-of-sample probabilities from a "model" that knows the true topic). Also the bad-input paths
through the CLI: invalid policy, missing version, export into a non-empty folder, concurrent curate.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from curata.cli import app
from curata.versions import Workspace, diff_versions

runner = CliRunner()
CHECK_TOOL = Path("/work/shared/tools/check_findings.py")
#: The embedding checks are switched off: the test gives its own predicted probabilities and stays fast.
SKIP = "outlier,semantic_duplicate,underrepresented"
TOPICS: dict[str, list[str]] = {
    "fruit": [
        "apple",
        "banana",
        "cherry",
        "grape",
        "lemon",
        "mango",
        "olive",
        "peach",
        "pear",
        "plum",
        "berry",
        "melon",
        "orange",
        "kiwi",
        "lime",
        "fig",
    ],
    "nature": [
        "river",
        "mountain",
        "forest",
        "ocean",
        "desert",
        "valley",
        "meadow",
        "canyon",
        "glacier",
        "volcano",
        "prairie",
        "lake",
        "island",
    ],
    "tech": [
        "engine",
        "server",
        "kernel",
        "compiler",
        "socket",
        "thread",
        "cache",
        "vector",
        "tensor",
        "matrix",
        "router",
        "packet",
        "binary",
    ],
}
FLIPPED = ("r007", "r011", "r022", "r038", "r044", "r061")
POLICY = """\
version: 1
default_action: flag
audit:
  pred_probs: probs.parquet
checks:
  exact_duplicate: {action: drop}
  near_duplicate: {action: drop, min_jaccard: 0.8}
  split_leakage: {action: drop}
  label_issue: {action: relabel, min_confidence: 0.8}
  low_quality: {action: keep}
  outlier: {action: flag, enabled: false}
  semantic_duplicate: {action: flag, enabled: false}
  underrepresented: {action: flag, enabled: false}
"""


def make_text_project(root: Path) -> Path:
    """``root/data.parquet`` (93 records, problems planted), ``probs.parquet`` and ``curata.yaml``."""
    rng = random.Random(0)
    classes = list(TOPICS)
    rows: list[dict[str, Any]] = []
    true: dict[str, str] = {}
    for i in range(90):
        topic = classes[i % 3]
        rid = f"r{i:03d}"
        rows.append(
            {
                "id": rid,
                "text": " ".join(rng.choice(TOPICS[topic]) for _ in range(25)),
                "label": topic,
                "split": "test" if i % 5 == 0 else "train",
            }
        )
        true[rid] = topic
    for rid in FLIPPED:
        row = rows[int(rid[1:])]
        row["label"] = classes[(classes.index(str(row["label"])) + 1) % 3]
    rows.append({**rows[1], "id": "dup1"})  # exact duplicate of r001, both train
    true["dup1"] = true["r001"]
    rows.append({**rows[3], "id": "leak1", "split": "test"})  # r003 (train) leaked into test
    true["leak1"] = true["r003"]
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data.parquet")
    probs = []
    for rid, topic in true.items():
        p = rng.uniform(0.85, 0.98)
        probs.append({"record_id": rid, **{c: p if c == topic else (1 - p) / 2 for c in classes}})
    pq.write_table(pa.Table.from_pylist(probs), root / "probs.parquet")
    (root / "curata.yaml").write_text(POLICY)
    return root


def invoke(*args: str) -> Any:
    res = runner.invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res


def audit_findings(data: Path, out: Path, probs: Path) -> list[dict[str, Any]]:
    res = invoke(
        "audit",
        str(data),
        "--out",
        str(out),
        "--pred-probs",
        str(probs),
        "--skip",
        SKIP,
        "-q",
        "--workers",
        "1",
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["checks"]["label_issue"]["status"] == "ok", report["checks"]["label_issue"]
    check_contract(out)
    rows: list[dict[str, Any]] = pq.read_table(out / "findings.parquet").to_pylist()
    return rows


def check_contract(out: Path) -> None:
    if not CHECK_TOOL.exists():
        return
    proc = subprocess.run(
        [sys.executable, str(CHECK_TOOL), str(out)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def of(findings: list[dict[str, Any]], check: str) -> set[str]:
    return {f["record_id"] for f in findings if f["check"] == check}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_line_error(res: Any) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return str(lines[0])


def test_the_whole_loop_on_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_text_project(tmp_path / "project")
    monkeypatch.chdir(root)
    data, probs, ws = root / "data.parquet", root / "probs.parquet", root / ".curata"
    source = data.read_bytes()

    # 1. audit: the planted problems are found.
    before = audit_findings(data, tmp_path / "audit-before", probs)
    assert of(before, "exact_duplicate") == {"dup1", "leak1"}
    assert of(before, "split_leakage") == {"leak1"}
    assert len(of(before, "label_issue") & set(FLIPPED)) >= 2

    # 2. dry run: the plan is printed, nothing is written.
    assert invoke("init").exit_code == 0
    empty = snapshot(ws)
    res = invoke("curate", "data.parquet", "--policy", "curata.yaml", "--dry-run", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "dry run: nothing was written" in res.output
    assert "exact_duplicate" in res.output and "split_leakage" in res.output and "relabel" in res.output
    assert snapshot(ws) == empty

    # 3. curate: v1.
    res = invoke("curate", "data.parquet", "--policy", "curata.yaml", "--workers", "1", "-q")
    assert res.exit_code == 0, res.output
    assert "wrote v1" in res.output
    for cmd in (("show", "v1"), ("plan", "show"), ("log",)):
        assert invoke(*cmd).exit_code == 0

    # 4. diff: every removal and relabel names its check and reason.
    d = {r["record_id"]: r for r in diff_versions(str(ws), None, "v1").rows()}
    assert d["dup1"]["change"] == "removed" and d["dup1"]["check"] == "exact_duplicate"
    assert "kept r001" in d["dup1"]["reason"]
    assert d["r003"]["change"] == "removed" and d["r003"]["check"] == "split_leakage"
    assert "leak1" not in d  # the test copy stays
    relabelled = {rid for rid, r in d.items() if r["change"] == "relabelled"}
    assert relabelled and relabelled <= set(FLIPPED)
    assert all(d[rid]["check"] == "label_issue" and d[rid]["reason"] for rid in relabelled)
    res = invoke("diff", "v1")
    assert res.exit_code == 0 and "removed" in res.output and "split_leakage" in res.output

    # 5. export and audit each export: the dropped problems are gone.
    formats = ["parquet", "jsonl"]
    try:
        import datasets  # noqa: F401

        formats.append("hf")
    except ImportError:
        pass  # the hf export is covered where the datasets package is installed
    for fmt in formats:
        res = invoke("export", "v1", "--to", f"export-{fmt}", "--format", fmt, "-q")
        assert res.exit_code == 0, res.output
        after = audit_findings(root / f"export-{fmt}", tmp_path / f"audit-{fmt}", probs)
        assert of(after, "exact_duplicate") == set(), fmt
        assert of(after, "split_leakage") == set(), fmt
        assert not of(after, "label_issue") & relabelled, fmt
        ids = {r["record_id"] for r in after} | set(_exported_ids(root / f"export-{fmt}"))
        assert "leak1" in ids and "r003" not in ids and "dup1" not in ids
    assert data.read_bytes() == source

    # 6. card: README.md (Hugging Face card) and croissant.json from what was measured, logged.
    res = invoke("card", "v1", "--out", "card")
    assert res.exit_code == 0, res.output
    card = (root / "card" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["size_categories"] == ["n<1K"] and "text-classification" in header["task_categories"]
    assert "split_leakage" in card and "exact_duplicate" in card
    head = json.loads((ws / "log.head").read_text())
    assert "card v1" in json.loads((ws / "log.jsonl").read_text().splitlines()[-1])["command"]
    assert json.loads((root / "card" / "croissant.json").read_text())["conformsTo"].endswith("croissant/1.0")
    assert head["seq"] >= 4
    res = invoke("card", "v1", "--out", "card")  # the folder now holds a card: replaced, not refused
    assert res.exit_code == 0, res.output
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "notes.txt").write_text("mine")
    res = invoke("card", "v1", "--out", "elsewhere")
    assert res.exit_code == 2 and (root / "elsewhere" / "notes.txt").read_text() == "mine"

    # 7. verify: intact, then a tampered log entry, then a tampered version file.
    res = invoke("verify")
    assert res.exit_code == 0 and res.output.startswith("ok:"), res.output
    log = ws / "log.jsonl"
    original = log.read_bytes()
    lines = original.decode().splitlines()
    entry = json.loads(lines[1])
    entry["user"] = "mallory@elsewhere"
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    res = invoke("verify")
    assert res.exit_code == 1
    assert "entry 2 (line 2" in res.output and "edited" in res.output
    log.write_bytes(original)
    assert invoke("verify").exit_code == 0

    manifest = ws / "versions" / "v1" / "manifest.parquet"
    table = pq.read_table(manifest)
    labels = table.column("label").to_pylist()
    labels[0] = "tech" if labels[0] != "tech" else "fruit"
    pq.write_table(table.set_column(table.column_names.index("label"), "label", pa.array(labels)), manifest)
    res = invoke("verify")
    assert res.exit_code == 1
    assert "v1/manifest.parquet was edited" in res.output


def _exported_ids(folder: Path) -> list[str]:
    from curata.io import read_dataset

    return [str(x) for x in read_dataset(folder).record_ids.to_pylist()]


# ---------------------------------------------------------------- images (sklearn digits)


def _png(pixels: np.ndarray) -> bytes:
    img = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L").resize(
        (32, 32), Image.Resampling.BICUBIC
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_the_loop_on_an_image_folder(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "digits"
    rng = random.Random(0)
    picked = [i for i in range(len(digits.target)) if digits.target[i] in (0, 1, 7)][:120]
    flip = {0: 1, 1: 7, 7: 0}
    probs: list[dict[str, Any]] = []

    def add(rel: str, pixels: np.ndarray, true: int, also: str | None = None) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(pixels))
        p = rng.uniform(0.85, 0.98)
        row = {str(c): p if c == true else (1 - p) / 2 for c in (0, 1, 7)}
        probs.extend({"record_id": r, **row} for r in (rel, also) if r)

    for k, i in enumerate(picked):
        split = "test" if k % 5 == 0 else "train"
        true = int(digits.target[i])
        shown = flip[true] if k in (6, 13, 27, 41) else true
        # A relabelled image moves to its true class folder, so its exported id is that path.
        add(f"{split}/{shown}/{i:05d}.png", digits.images[i], true, f"{split}/{true}/{i:05d}.png")
    dup_i, leak_i = picked[1], picked[3]
    add(f"train/{digits.target[dup_i]}/{dup_i:05d}_copy.png", digits.images[dup_i], int(digits.target[dup_i]))
    add(
        f"test/{digits.target[leak_i]}/{leak_i:05d}_leak.png",
        digits.images[leak_i],
        int(digits.target[leak_i]),
    )
    pq.write_table(pa.Table.from_pylist(probs), tmp_path / "probs.parquet")
    policy = tmp_path / "curata.yaml"
    policy.write_text(POLICY.replace("audit:\n", "audit:\n  encoder: pixels\n"))
    ws = tmp_path / ".curata"

    res = invoke("curate", str(root), "-p", str(policy), "-w", str(ws), "--workers", "1", "-q")
    assert res.exit_code == 0, res.output
    plan = {r["record_id"]: r for r in Workspace(ws).version("v1").plan().to_pylist()}
    copy = f"train/{digits.target[dup_i]}/{dup_i:05d}_copy.png"
    train_leaked = next(r for r in plan if r.endswith(f"{leak_i:05d}.png"))
    assert plan[copy]["action"] == "drop" and plan[copy]["check"] == "exact_duplicate"
    assert plan[train_leaked]["action"] == "drop" and plan[train_leaked]["check"] == "split_leakage"
    relabels = {rid: r["new_label"] for rid, r in plan.items() if r["action"] == "relabel"}
    assert relabels

    res = invoke(
        "export", "v1", "--to", str(tmp_path / "out"), "--format", "imagefolder", "-w", str(ws), "-q"
    )
    assert res.exit_code == 0, res.output
    for rid, label in relabels.items():
        split, _, name = rid.split("/")
        assert (tmp_path / "out" / split / str(label) / name).is_file()
        assert not (tmp_path / "out" / rid).exists()
    assert (tmp_path / "out" / f"test/{digits.target[leak_i]}/{leak_i:05d}_leak.png").is_file()
    after = audit_findings(tmp_path / "out", tmp_path / "audit-after", tmp_path / "probs.parquet")
    assert of(after, "exact_duplicate") == set() and of(after, "split_leakage") == set()
    assert invoke("verify", "-w", str(ws)).exit_code == 0


# ---------------------------------------------------------------- bad input through the CLI


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_text_project(tmp_path_factory.mktemp("curated") / "project")
    res = invoke(
        "curate",
        str(root / "data.parquet"),
        "-p",
        str(root / "curata.yaml"),
        "-w",
        str(root / ".curata"),
        "-q",
        "--workers",
        "1",
    )
    assert res.exit_code == 0, res.output
    return root


def test_invalid_policy_is_one_line_naming_the_line(curated: Path) -> None:
    ws = curated / ".curata"
    before = snapshot(ws)
    bad = curated / "bad.yaml"
    bad.write_text(
        "checks:\n  exact_duplicate: drop\n  near_duplicate:\n    action: drop\n    min_jaccard: 2\n"
    )
    res = invoke("curate", str(curated / "data.parquet"), "-p", str(bad), "-w", str(ws))
    assert res.exit_code == 2
    assert f"{bad}:5: checks.near_duplicate.min_jaccard must be a number in (0, 1], got 2" in one_line_error(
        res
    )
    bad.write_text("checks:\n  exact_duplicate: {action: drop, keep: first}\n")
    res = invoke(
        "curate", str(curated / "data.parquet"), "-p", str(bad), "-w", str(tmp_path_ws := curated / "fresh")
    )
    assert res.exit_code == 2 and f"{bad}:2: unknown key 'keep'" in one_line_error(res)
    assert snapshot(ws) == before and not tmp_path_ws.exists()


def test_missing_version_is_one_line(curated: Path) -> None:
    ws = str(curated / ".curata")
    for args in (
        ("show", "v9"),
        ("diff", "v1", "v9"),
        ("export", "v9", "--to", str(curated / "x")),
        ("plan", "show", "v9"),
        ("card", "v9", "--out", str(curated / "card")),
    ):
        res = invoke(*args, "-w", ws)
        assert res.exit_code == 2, args
        assert "no version 'v9'" in one_line_error(res) and "versions: v1" in res.output
    res = invoke("show", "-w", str(curated / "nowhere"))
    assert res.exit_code == 2 and "run `curata init`" in one_line_error(res)


def test_export_into_a_non_empty_folder_is_refused(curated: Path) -> None:
    ws = curated / ".curata"
    target = curated / "occupied"
    target.mkdir()
    (target / "notes.txt").write_text("not curata's")
    log_before = (ws / "log.jsonl").read_bytes()
    res = invoke("export", "v1", "--to", str(target), "-w", str(ws))
    assert res.exit_code == 2 and "is not empty" in one_line_error(res)
    assert snapshot(target) == {"notes.txt": b"not curata's"}
    assert (ws / "log.jsonl").read_bytes() == log_before
    assert not [p for p in curated.iterdir() if p.name.startswith(".occupied")]


def test_concurrent_curate_is_refused_while_the_lock_is_held(curated: Path) -> None:
    ws_dir = curated / ".curata"
    ws = Workspace(ws_dir)
    before = snapshot(ws_dir)
    with ws.lock("curata curate elsewhere"):
        res = invoke(
            "curate", str(curated / "data.parquet"), "-p", str(curated / "curata.yaml"), "-w", str(ws_dir)
        )
        assert res.exit_code == 2
        message = one_line_error(res)
        assert "is locked by pid" in message and "curata curate elsewhere" in message
    after = snapshot(ws_dir)
    assert after == before and ws.version_ids() == ["v1"]
