"""The audit: read a dataset, compute signals, run checks, write findings and reports."""

from __future__ import annotations

import datetime as dt
import gc
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curata import __version__, outofcore
from curata.checks import base as checks_base
from curata.checks import registered_checks
from curata.checks.base import SEVERITY_RANK, Context, concat_findings, empty_findings
from curata.checks.contamination import ContaminationSettings
from curata.checks.embedding import MIN_OOD_REFERENCE, ModelCheckSettings
from curata.checks.groups import workspace_temp
from curata.checks.semantic import SemanticSettings
from curata.dataset import Dataset, map_to_file
from curata.engine import get_engine
from curata.errors import CheckFailedError, ConfigError, InputError
from curata.io import read_dataset
from curata.licences import LicenceSettings
from curata.report.examples import worst_examples
from curata.report.json import dataset_statistics, score_histograms, write_json
from curata.signals.cache import SignalCache
from curata.signals.embed import EmbedSettings, make_encoder
from curata.signals.pii import PiiSettings
from curata.signals.pipeline import Signals, SignalSettings, compute_signals

FailOn = Literal["error", "warning", "info"]
REPORT_FILES = ("findings.parquet", "report.json", "report.html")
#: Records from which the data's own columns (ids, labels, splits...) are kept in memory-mapped
#: files in the workspace for the run, not in memory (see ``curata.dataset.map_to_file``).
MAP_RECORDS_ROWS = 1_000_000


@dataclass(frozen=True)
class AuditSettings:
    """Everything that changes what an audit finds; recorded in report.json.

    ``ood_reference``: a dataset taken as in-distribution (e.g. the training set a new batch is
    compared with); the ``outlier`` check then also flags the records unlike it. Unlike the
    ``references`` of ``audit()`` (benchmarks checked for contamination), it is embedded with the
    data's encoder.
    """

    signals: SignalSettings = field(default_factory=SignalSettings)
    contamination: ContaminationSettings = field(default_factory=ContaminationSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    model: ModelCheckSettings = field(default_factory=ModelCheckSettings)
    pred_probs: str | None = None
    ood_reference: str | None = None
    semantic: SemanticSettings = field(default_factory=SemanticSettings)
    pii: PiiSettings = field(default_factory=PiiSettings)
    licence: LicenceSettings = field(default_factory=LicenceSettings)
    fail_on: FailOn | None = None
    checks: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    strict: bool = False
    examples_per_check: int = 12

    def __post_init__(self) -> None:
        known = registered_checks()
        for name in (*(self.checks or ()), *self.skip):
            if name not in known:
                raise ConfigError(f"unknown check '{name}': choose from {', '.join(known)}")
        if self.fail_on not in (None, "error", "warning", "info"):
            raise ConfigError(f"--fail-on must be error or warning, got '{self.fail_on}'")
        if self.ood_reference is not None and self.embed.embeddings_file is not None:
            raise ConfigError(
                "--ood-reference cannot be embedded from an --embeddings file (it holds the data's rows "
                "only): give both datasets an --embedding-column, or let an encoder embed both"
            )


@dataclass(frozen=True)
class AuditResult:
    """What an audit produced: the findings table, the report dict, and the exit code."""

    findings: pa.Table
    report: dict[str, Any]
    out: Path
    exit_code: int


def _prepare_out(out: Path) -> None:
    """Create OUT, refusing to write into a folder that holds anything but an earlier audit."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the audit output")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in REPORT_FILES]
        if foreign:
            raise InputError(
                f"--out {out} already holds other files ({', '.join(sorted(foreign)[:3])}): "
                "choose an empty or new folder (curata never overwrites what it did not write)"
            )
    out.mkdir(parents=True, exist_ok=True)


def _reference_roles(overrides: dict[str, str | None]) -> dict[str, str | None]:
    """Use the data's named content columns for references too, when they have them."""
    return {k: v for k, v in overrides.items() if k in ("text_column", "image_column")}


def _read_ood_reference(path: str | Path, dataset: Dataset, overrides: dict[str, str | None]) -> Dataset:
    """Read the in-distribution reference with the data's id and content columns where it has them.

    Falls back to the content columns alone, then to detection (as ``--reference`` does); the
    first error is the one reported. Label and split play no part in the comparison.
    """
    content = _reference_roles(overrides)
    attempts = [{**content, "id_column": overrides.get("id_column")}, content, {}]
    first: InputError | None = None
    for named in attempts:
        try:
            ref = read_dataset(path, **named)
            break
        except InputError as exc:
            first = first or exc
    else:
        assert first is not None
        raise first
    if ref.modality != dataset.modality:
        raise InputError(
            f"--ood-reference {ref.source} holds {ref.modality} but {dataset.source} holds "
            f"{dataset.modality}: name the content column with --text-column or --image-column"
        )
    if ref.num_rows < MIN_OOD_REFERENCE:
        raise InputError(
            f"--ood-reference {ref.source} has {ref.num_rows} records; at least {MIN_OOD_REFERENCE} "
            "are needed to tell what is typical of it"
        )
    return ref


def audit(
    data: str | Path,
    out: str | Path,
    *,
    references: Sequence[str | Path] = (),
    id_column: str | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    license_column: str | None = None,
    source_column: str | None = None,
    settings: AuditSettings | None = None,
    engine: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    workspace: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> AuditResult:
    """Audit ``data`` and write ``findings.parquet``, ``report.json`` and ``report.html`` to ``out``.

    ``on_step`` is called with a short description as each step starts (for progress display).
    ``engine`` is ``local`` or ``ray``; ``ray_address`` names the Ray cluster (``auto``,
    ``HOST:PORT``, ``ray://HOST:PORT``; None starts Ray in this process).
    """
    settings = settings or AuditSettings()
    step = on_step or (lambda _: None)
    out = Path(out)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    step(f"reading {data}")
    roles = dict(
        id_column=id_column,
        text_column=text_column,
        image_column=image_column,
        label_column=label_column,
        split_column=split_column,
        license_column=license_column,
        source_column=source_column,
    )
    workspace_dir = Path(workspace) if workspace else out.resolve().parent / ".curata"
    # Large tables are read straight into mapped files in the workspace (see ``curata.io.tabular``).
    with outofcore.configured(temp_directory=workspace_dir / "tmp"):
        dataset = read_dataset(data, **roles)
        refs: list[Dataset] = []
        for ref_path in references:
            try:
                refs.append(read_dataset(ref_path, **_reference_roles(roles)))
            except InputError:
                refs.append(read_dataset(ref_path))
    # Reading's transient buffers (the Parquet pages of every column read) go back to the system.
    pa.default_memory_pool().release_unused()
    for ref in refs:
        if ref.modality != dataset.modality:
            raise InputError(
                f"reference {ref.source} holds {ref.modality} but {dataset.source} holds {dataset.modality}: "
                "name the content column with --text-column or --image-column"
            )
    ood_ref = None
    if settings.ood_reference is not None:
        step(f"reading {settings.ood_reference}")
        ood_ref = _read_ood_reference(settings.ood_reference, dataset, roles)
    if settings.embed.encoder not in ("auto", "tabular"):
        # A named encoder that cannot read DATA is a usage error, not a failed check.
        make_encoder(settings.embed.encoder, dataset)
    timings["read_s"] = time.perf_counter() - t
    _prepare_out(out)

    t = time.perf_counter()
    step("computing signals")
    eng = get_engine(engine, workers, address=ray_address)
    if dataset.num_rows >= MAP_RECORDS_ROWS:
        dataset = map_to_file(dataset, workspace_dir / "tmp")
        pa.default_memory_pool().release_unused()
    cache = SignalCache(workspace_dir)
    signals = compute_signals(dataset, eng, settings.signals, cache, label="data")
    ref_signals = [
        compute_signals(ref, eng, settings.signals, cache, label=f"reference {i}")
        for i, ref in enumerate(refs, start=1)
    ]
    timings["signals_s"] = time.perf_counter() - t

    t = time.perf_counter()
    context = Context(
        dataset=dataset,
        signals={"data": signals},
        references=[(ref, {"data": s}) for ref, s in zip(refs, ref_signals, strict=True)],
        settings={
            "signals": settings.signals,
            "contamination": settings.contamination,
            "embed": settings.embed,
            "model": settings.model,
            "pred_probs": settings.pred_probs,
            "ood_reference": ood_ref,
            "semantic": settings.semantic,
            "pii": settings.pii,
            "licence": settings.licence,
            # Checks that compute more per-record signals (embeddings, quality) run them through
            # the same engine and cache as the signals above.
            "engine": eng,
            "cache": cache,
            "workspace": workspace_dir,
        },
    )
    findings, check_status = run_checks(context, settings, step)
    timings["checks_s"] = time.perf_counter() - t

    t = time.perf_counter()
    step("writing reports")
    report = build_report(dataset, refs, signals, ref_signals, findings, check_status, settings, context)
    # What only the checks and the statistics needed (signal columns, the shared cross-record
    # results) goes before the findings are written and previewed: over 1 GiB at 10M records.
    release(context)
    del signals, ref_signals
    exit_code = exit_code_for(findings, settings.fail_on)
    worst = _worst_severity(findings)
    report["exit"] = {"fail_on": settings.fail_on, "worst_severity": worst, "code": exit_code}
    pq.write_table(findings, out / "findings.parquet")
    outofcore.release_mapped()
    examples = worst_examples(findings, dataset, refs, settings.examples_per_check)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    report["timings"] = {k: round(v, 4) for k, v in timings.items()}
    write_json(report, out / "report.json")
    from curata.report.html import render_html

    (out / "report.html").write_text(render_html(report, examples), encoding="utf-8")
    return AuditResult(findings, report, out, exit_code)


def release(context: Context) -> None:
    """Drop the context's signals and shared results (the dataset and references stay) and hand
    freed Arrow memory back to the system."""
    context.cache.clear()
    context.signals.clear()
    context.references = [(ref, {}) for ref, _ in context.references]
    gc.collect()
    pa.default_memory_pool().release_unused()


def run_checks(
    context: Context, settings: AuditSettings, on_step: Callable[[str], None] | None = None
) -> tuple[pa.Table, dict[str, dict[str, Any]]]:
    """Run every selected check; a crash becomes a failed status (re-raised with ``strict``)."""
    tables: list[pa.Table] = []
    status: dict[str, dict[str, Any]] = {}
    for name, cls in registered_checks().items():
        check = cls()
        entry: dict[str, Any] = {
            "status": "ok",
            "count": 0,
            "by_severity": {},
            "error": None,
            "reason": None,
            "seconds": 0.0,
            "description": cls.description,
        }
        status[name] = entry
        if (settings.checks is not None and name not in settings.checks) or name in settings.skip:
            entry.update(status="skipped", reason="not selected")
            continue
        reason = check.applies(context)
        if reason is not None:
            entry.update(status="skipped", reason=reason)
            continue
        t = time.perf_counter()
        if on_step is not None:
            on_step(f"check {name}")
        try:
            table = check.run(context)
        except Exception as exc:
            if settings.strict:
                raise CheckFailedError(f"check '{name}' failed: {exc}") from exc
            entry.update(
                status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8)
            )
            table = empty_findings()
        entry["seconds"] = round(time.perf_counter() - t, 4)
        # Signal columns are memory-mapped: hand back the pages this check read before the next.
        outofcore.release_mapped()
        notes = context.cache.get("check_notes", {}).get(name)
        if notes:  # what a check could not look at (e.g. names without the spaCy model)
            entry["notes"] = list(notes)
        entry["count"] = table.num_rows
        if table.num_rows >= checks_base.SPILL_FINDINGS_ROWS and not outofcore.is_mapped(table):
            # Many findings (millions of duplicates) wait on disk, not in memory, for the report.
            table = outofcore.spill_table([table], table.schema, checks_base.spill_folder(context))
        entry["by_severity"] = {
            v["values"]: v["counts"] for v in pc.value_counts(table.column("severity")).to_pylist()
        }
        tables.append(table)
    return concat_findings(tables), status


def _worst_severity(findings: pa.Table) -> str | None:
    if findings.num_rows == 0:
        return None
    worst: str = max(pc.unique(findings.column("severity")).to_pylist(), key=lambda s: SEVERITY_RANK[s])
    return worst


def exit_code_for(findings: pa.Table, fail_on: str | None) -> int:
    """1 when any finding is at or above ``fail_on``, else 0."""
    worst = _worst_severity(findings)
    if fail_on is None or worst is None:
        return 0
    return 1 if SEVERITY_RANK[worst] >= SEVERITY_RANK[fail_on] else 0


def build_report(
    dataset: Dataset,
    refs: list[Dataset],
    signals: Signals,
    ref_signals: list[Signals],
    findings: pa.Table,
    check_status: dict[str, dict[str, Any]],
    settings: AuditSettings,
    context: Context,
) -> dict[str, Any]:
    """The content of report.json (without timings and exit, added by the caller)."""
    stats = dataset_statistics(dataset)
    clusters = context.cache.get("clusters")
    if clusters is not None:
        sizes = clusters.sizes()
        stats["duplicate_cluster_sizes"] = {str(k): v for k, v in sorted(sizes.items())}
    stats["score_histograms"] = score_histograms(findings)
    stats["findings"] = findings.num_rows
    with outofcore.configured(**workspace_temp(context)):
        stats["records_with_findings"] = outofcore.distinct_count(findings.column("record_id"))
    from curata.report.embedding_map import embedding_map
    from curata.report.json import check_statistics

    stats.update(check_statistics(findings))
    stats["embedding_map"] = embedding_map(context, findings, check_status)
    from curata.checks.licence import licence_summary

    licences = licence_summary(dataset)
    if licences is not None:
        stats["licences"] = licences
    if signals.modality == "text" and signals.table.num_rows:
        n_chars = np.asarray(signals.column("n_chars").to_numpy(zero_copy_only=False))
        stats["text_chars"] = {"mean": round(float(n_chars.mean()), 1), "max": int(n_chars.max())}
    if signals.modality == "image" and signals.table.num_rows:
        widths = [w for w in signals.column("width").to_pylist() if w is not None]
        if widths:
            stats["image_width"] = {"min": min(widths), "max": max(widths)}
    return {
        "curata_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": {
            "path": dataset.source,
            "kind": dataset.kind,
            "format": dataset.description.get("format"),
            "num_rows": dataset.num_rows,
            "modality": dataset.modality,
            "description": dataset.description,
        },
        "references": [{"path": r.source, "num_rows": r.num_rows} for r in refs],
        "roles": dataset.roles.as_dict(),
        "settings": _settings_dict(settings),
        "signals": {
            "modality": signals.modality,
            "computed": signals.computed + sum(s.computed for s in ref_signals),
            "cached": signals.cached + sum(s.cached for s in ref_signals),
        },
        "checks": check_status,
        "statistics": stats,
    }


def _settings_dict(settings: AuditSettings) -> dict[str, Any]:
    raw = asdict(settings)
    raw["signals"]["minhash"]["fingerprint"] = settings.signals.minhash.fingerprint()
    raw["signals"]["image"]["fingerprint"] = settings.signals.image.fingerprint()
    return raw
