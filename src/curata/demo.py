"""The demo: real data with planted problems, audited, with what was found beside what was planted."""

from __future__ import annotations

import inspect
import io
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance
from rich.console import Console
from rich.table import Table

SEED = 7


@dataclass
class Planted:
    """Problems planted on purpose: check name -> record ids expected in its findings."""

    expected: dict[str, set[str]] = field(default_factory=dict)

    def add(self, check: str, record_id: str) -> None:
        self.expected.setdefault(check, set()).add(record_id)


# ---------------------------------------------------------------- images: sklearn digits


def _digit_png(pixels: np.ndarray) -> Image.Image:
    img = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L")
    return img.resize((32, 32), Image.Resampling.BICUBIC)


def _encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def build_image_demo(root: Path) -> tuple[Path, Path, Planted]:
    """Write sklearn digits as ``split/class/NNNNN.png`` plus a reference set, with planted problems."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = random.Random(SEED)
    data_dir, ref_dir = root / "digits", root / "digits-benchmark"
    planted = Planted()
    order = list(range(len(digits.target)))
    rng.shuffle(order)
    test_ids = set(order[: len(order) // 5])
    paths: dict[int, str] = {}
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "test" if i in test_ids else "train"
        rel = f"{split}/{label}/{i:05d}.png"
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(_encode(_digit_png(pixels)))
        paths[i] = rel
    train = [i for i in order if i not in test_ids]
    picks = iter(train)

    def copy(i: int, split: str, label: int, name: str, data: bytes) -> str:
        rel = f"{split}/{label}/{name}"
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(data)
        return rel

    for _ in range(8):  # exact duplicates: the same picture re-encoded as lossless WebP
        i = next(picks)
        rel = copy(
            i,
            "train",
            digits.target[i],
            f"{i:05d}_copy.webp",
            _encode(_digit_png(digits.images[i]), "WEBP", lossless=True),
        )
        planted.add("exact_duplicate", rel)
    for _ in range(8):  # near duplicates: resized and brightened
        i = next(picks)
        img = _digit_png(digits.images[i]).resize((48, 48), Image.Resampling.BICUBIC)
        img = ImageEnhance.Brightness(img).enhance(1.08)
        rel = copy(i, "train", digits.target[i], f"{i:05d}_edited.png", _encode(img))
        planted.add("near_duplicate", rel)
    for _ in range(8):  # leakage: training images copied into test
        i = next(picks)
        rel = copy(i, "test", digits.target[i], f"{i:05d}_leaked.png", _encode(_digit_png(digits.images[i])))
        planted.add("split_leakage", rel)
        planted.add("exact_duplicate", rel)
    for _ in range(6):  # conflicting labels: the same picture filed under another class
        i = next(i for i in picks if digits.target[i] < 9)
        # A higher class folder sorts after the original, so the copy is the one reported.
        wrong = rng.randrange(int(digits.target[i]) + 1, 10)
        rel = copy(i, "train", wrong, f"{i:05d}_relabelled.png", _encode(_digit_png(digits.images[i])))
        planted.add("conflicting_labels", rel)
        planted.add("exact_duplicate", rel)
    for k in range(4):  # corrupt files: truncated PNGs and random bytes
        i = next(picks)
        good = _encode(_digit_png(digits.images[i]))
        bad = good[: len(good) // 2] if k < 2 else bytes(rng.randrange(256) for _ in range(300))
        rel = copy(i, "train", digits.target[i], f"broken-{k}.png", bad)
        planted.add("corrupt", rel)
    rel = copy(0, "train", 0, "empty.png", b"")
    planted.add("empty", rel)
    rel = f"train/{order[0]:05d}-unlabelled.png"
    (data_dir / rel).write_bytes(_encode(_digit_png(digits.images[order[0]])))
    planted.add("missing_label", rel)
    # A "public benchmark" some of whose images were scraped into the training data.
    ref_dir.mkdir(parents=True, exist_ok=True)
    for k in range(10):
        i = next(picks)
        (ref_dir / "0").mkdir(exist_ok=True)
        (ref_dir / "0" / f"bench-{k}.png").write_bytes(_encode(_digit_png(digits.images[i])))
        planted.add("contamination", paths[i])
    return data_dir, ref_dir, planted


# ---------------------------------------------------------------- text: real paragraphs


def real_paragraphs(min_chars: int = 60) -> list[str]:
    """Real English paragraphs that ship with the dependencies: sklearn's dataset descriptions and
    the docstrings of standard-library modules (and their classes' methods)."""
    import importlib

    import sklearn.datasets

    texts: list[str] = []
    descr = Path(sklearn.datasets.__file__).parent / "descr"
    for f in sorted(descr.glob("*.rst")):
        texts.extend(f.read_text(encoding="utf-8").split("\n\n"))
    for name in STDLIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - a trimmed Python build
            continue
        for _, obj in sorted(inspect.getmembers(mod), key=lambda kv: kv[0]):
            objects = [obj]
            if inspect.isclass(obj) and getattr(obj, "__module__", "") == mod.__name__:
                objects += [m for _, m in sorted(vars(obj).items(), key=lambda kv: kv[0]) if callable(m)]
            for o in objects:
                doc = inspect.getdoc(o) if callable(o) else None
                if doc:
                    texts.extend(doc.split("\n\n"))
    seen: set[str] = set()
    out = []
    for t in texts:
        t = " ".join(t.split())
        if len(t) >= min_chars and t not in seen and not t.startswith((">>>", "..", "|", "=", ":")):
            seen.add(t)
            out.append(t)
    return out


STDLIB_MODULES = (
    "argparse",
    "ast",
    "asyncio",
    "bisect",
    "calendar",
    "collections",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "inspect",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "random",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "zipfile",
)


def _mutate(text: str, rng: random.Random, edits: int) -> str:
    """Swap ``edits`` pairs of neighbouring words (a light edit that survives normalisation)."""
    words = text.split()
    for _ in range(edits):
        j = rng.randrange(len(words) - 1)
        words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def build_text_demo(root: Path) -> tuple[Path, Path, Planted]:
    """Write real paragraphs as Parquet (id, text, label, split) with planted problems."""
    rng = random.Random(SEED)
    paragraphs = real_paragraphs()
    rng.shuffle(paragraphs)
    n_base = min(1200, len(paragraphs) - 80)
    base = paragraphs[:n_base]
    rows: list[dict[str, str | None]] = []
    planted = Planted()
    for k, text in enumerate(base):
        rows.append(
            {
                "id": f"doc-{k:05d}",
                "text": text,
                "label": "sklearn" if "dataset" in text.lower() else "stdlib",
                "split": "test" if k % 5 == 0 else "train",
            }
        )
    train_rows = [r for r in rows if r["split"] == "train"]
    src: Iterator[dict[str, str | None]] = iter(train_rows)

    def add(text: str | None, split: str, label: str | None, check: str | None, tag: str) -> str:
        rid = f"{tag}-{len(rows):05d}"
        rows.append({"id": rid, "text": text, "label": label, "split": split})
        if check:
            planted.add(check, rid)
        return rid

    for _ in range(10):
        r = next(src)
        add(f"  {str(r['text']).upper()} ", "train", r["label"], "exact_duplicate", "dup")
    for _ in range(10):
        r = next(r for r in src if len(str(r["text"])) >= 200)
        add(_mutate(str(r["text"]), rng, 1), "train", r["label"], "near_duplicate", "near")
    for _ in range(8):
        r = next(src)
        rid = add(str(r["text"]), "test", r["label"], "split_leakage", "leak")
        planted.add("exact_duplicate", rid)
    for _ in range(5):
        r = next(src)
        other = "stdlib" if r["label"] == "sklearn" else "sklearn"
        rid = add(str(r["text"]), "train", other, "conflicting_labels", "conflict")
        planted.add("exact_duplicate", rid)
    for blank in ("", "   ", None):
        add(blank, "train", "stdlib", "empty", "empty")
    for _ in range(4):
        r = next(src)
        add(str(r["text"]) + " (restated)", "train", None, "missing_label", "nolabel")
    dup_id = str(rows[1]["id"])
    rows.append(
        {
            "id": dup_id,
            "text": "An extra record that reuses an existing id by mistake.",
            "label": "stdlib",
            "split": "train",
        }
    )
    planted.add("duplicate_id", dup_id)
    # A held-out benchmark: unseen paragraphs plus a few that leaked into the training rows.
    bench = [{"id": f"bench-{k}", "text": t} for k, t in enumerate(paragraphs[n_base : n_base + 60])]
    for k in range(6):
        r = next(src)
        bench.append({"id": f"bench-leak-{k}", "text": str(r["text"])})
        planted.add("contamination", str(r["id"]))
    long_bench = [b["text"] for b in bench if len(str(b["text"]).split()) >= 20]
    for k in range(4):  # a 16-word span of a benchmark item quoted inside a training record
        quote = " ".join(str(long_bench[k]).split()[:16])
        rid = add(f"As the benchmark says: {quote} and so on.", "train", "stdlib", "contamination", "quote")
        del rid
    data_path = root / "paragraphs.parquet"
    ref_path = root / "paragraphs-benchmark.jsonl"
    pq.write_table(pa.Table.from_pylist(rows), data_path)
    ref_path.write_text("".join(json.dumps(b) + "\n" for b in bench), encoding="utf-8")
    return data_path, ref_path, planted


# ---------------------------------------------------------------- run


def compare(planted: Planted, findings: pa.Table) -> list[tuple[str, int, int, int]]:
    """Per check: (name, planted, planted and found, found in total)."""
    found: dict[str, set[str]] = {}
    for check, rid in zip(
        findings.column("check").to_pylist(), findings.column("record_id").to_pylist(), strict=True
    ):
        found.setdefault(check, set()).add(rid)
    names = sorted(set(planted.expected) | set(found))
    return [
        (
            n,
            len(planted.expected.get(n, set())),
            len(planted.expected.get(n, set()) & found.get(n, set())),
            len(found.get(n, set())),
        )
        for n in names
    ]


def run_demo(out: Path, workers: int | None = None, console: Console | None = None) -> int:
    """Build both demo datasets under ``out``, audit them, print found vs planted; 0 if all found."""
    from curata.audit import audit

    console = console or Console()
    data_root = out / "data"
    if data_root.exists():
        shutil.rmtree(data_root)
    data_root.mkdir(parents=True)
    missed = 0
    for name, build in (("images", build_image_demo), ("text", build_text_demo)):
        data, ref, planted = build(data_root)
        report_dir = out / f"report-{name}"
        if report_dir.exists():
            shutil.rmtree(report_dir)
        console.print(f"[bold]auditing {name}[/]: {data} (reference {ref.name})")
        result = audit(data, report_dir, references=[ref], workers=workers, workspace=out / ".curata")
        table = Table(title=f"{name}: planted vs found")
        for col in ("check", "planted", "planted & found", "found in total"):
            table.add_column(col, justify="left" if col == "check" else "right")
        for check, n_planted, n_hit, n_found in compare(planted, result.findings):
            missed += n_planted - n_hit
            style = "green" if n_hit == n_planted else "red"
            table.add_row(check, str(n_planted), f"[{style}]{n_hit}[/]", str(n_found))
        console.print(table)
        console.print(f"report: {(report_dir / 'report.html').resolve()}")
    console.print(
        "[green]every planted problem was found[/]"
        if missed == 0
        else f"[red]{missed} planted problem(s) were not found[/]"
    )
    return 0 if missed == 0 else 1
