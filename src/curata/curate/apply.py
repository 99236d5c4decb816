"""``curate``: audit DATA, turn the findings into a plan with a policy, and write a new version."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curata.curate.plan import Plan, build_plan
from curata.curate.policy import Policy, default_policy, licence_settings_reach_audit, load_policy
from curata.errors import InputError, WorkspaceError
from curata.versions.files import canonical_json, sha256_bytes, sha256_file, tree_digests, write_json_atomic
from curata.versions.manifest import build_changes, build_manifest, manifest_counts
from curata.versions.store import VERSION_FILE, Workspace

AUDIT_FILES = ("findings.parquet", "report.json", "report.html")


@dataclass(frozen=True)
class CurateResult:
    """What ``curate`` did: the plan, and (unless a dry run) the version written and its folder."""

    plan: Plan
    policy: Policy
    source: str
    dry_run: bool
    version: str | None = None
    path: Path | None = None
    parent: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    audit_report: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def findings_digest(findings: pa.Table) -> str:
    """SHA-256 of the findings' rows in a canonical order (independent of Parquet encoding)."""
    rows = findings.to_pylist()
    rows.sort(key=lambda r: (r["check"], r["record_id"] or "", r["related_id"] or "", r["message"] or ""))
    return sha256_bytes(canonical_json(rows))


def _created_at() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def curate(
    data: str | Path,
    policy: Policy | str | Path | None = None,
    workspace: str | Path = ".curata",
    dry_run: bool = False,
    *,
    id_column: str | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    license_column: str | None = None,
    source_column: str | None = None,
    engine: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    command: str | None = None,
    on_step: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> CurateResult:
    """Audit ``data`` with the policy's settings, plan the policy's actions, and write a version.

    With ``dry_run`` nothing is written anywhere in the workspace (the audit runs in a temporary
    folder with its own signal cache): the result holds the plan only. Otherwise the new version
    (``v1``, ``v2``, ...; its parent is the workspace's latest version) is built in a staging
    folder and renamed into place under the workspace lock, then recorded in the audit log. The
    source data is never modified.
    """
    from curata.audit import audit
    from curata.io import read_dataset

    step = on_step or (lambda _: None)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    if policy is None:
        pol = default_policy()
    elif isinstance(policy, Policy):
        pol = policy
    else:
        pol = load_policy(policy)
    read = pol.data.merged(
        id_column=id_column,
        text_column=text_column,
        image_column=image_column,
        label_column=label_column,
        split_column=split_column,
        license_column=license_column,
        source_column=source_column,
    )
    settings = pol.audit_settings()
    lic = pol.action_for("licence").settings
    if (lic.get("allow") is not None or lic.get("deny")) and not licence_settings_reach_audit():
        warn(
            "licence allow/deny lists are not applied: this curata's audit does not pass licence "
            "settings to the licence check yet"
        )
    ws = Workspace(workspace)
    source = str(Path(data).resolve())
    step(f"reading {data}")
    dataset = read_dataset(data, **read.as_kwargs())
    duplicates = int(dataset.description.get("duplicate_ids") or 0)
    if duplicates:
        raise InputError(
            f"{data}: {duplicates} record id(s) are used more than once; a plan names records by id, so "
            "curate needs unique ids: name another --id-column, or fix the ids"
        )
    cmd = command or f"curate {data}"

    if dry_run:
        with tempfile.TemporaryDirectory(prefix="curata-dry-run-") as tmp:
            result = audit(
                data,
                Path(tmp) / "audit",
                references=pol.audit.references,
                settings=settings,
                engine=engine,
                workers=workers,
                ray_address=ray_address,
                workspace=Path(tmp) / "cache",
                on_step=on_step,
                **read.as_kwargs(),
            )
        plan = build_plan(result.findings, dataset, pol, result.report.get("checks"))
        for note in plan.notes:
            warn(note)
        return CurateResult(
            plan=plan,
            policy=pol,
            source=source,
            dry_run=True,
            parent=ws.latest() if ws.exists else None,
            audit_report=result.report,
            warnings=tuple(warnings),
        )

    if not ws.exists:
        ws.init()
        warn(f"created the workspace {ws.root}")
    with ws.lock(cmd, on_warning=warn), ws.staging() as staged:
        vid = ws.next_version_id()
        parent = ws.latest()
        audit_dir = staged / "audit"
        result = audit(
            data,
            audit_dir,
            references=pol.audit.references,
            settings=settings,
            engine=engine,
            workers=workers,
            ray_address=ray_address,
            workspace=ws.root,
            on_step=on_step,
            **read.as_kwargs(),
        )
        plan = build_plan(result.findings, dataset, pol, result.report.get("checks"))
        for note in plan.notes:
            warn(note)
        step(f"writing {vid}")
        changes = build_changes(dataset, plan.redactions)
        manifest, input_digest = build_manifest(dataset, plan.dropped(), plan.relabels(), changes, source)
        pq.write_table(manifest, staged / "manifest.parquet")
        pq.write_table(plan.table, staged / "plan.parquet")
        if changes is not None:
            (staged / "changes").mkdir()
            pq.write_table(changes, staged / "changes" / "records.parquet")
        for name in list(audit_dir.iterdir()):
            if name.name not in AUDIT_FILES:
                shutil.rmtree(name) if name.is_dir() else name.unlink()
        counts = manifest_counts(manifest)
        meta: dict[str, Any] = {
            "id": vid,
            "parent": parent,
            "created_at": _created_at(),
            "curata_version": _curata_version(),
            "source": source,
            "policy": pol.as_dict(),
            "plan_summary": plan.summary(),
            "findings_digest": findings_digest(result.findings),
            "counts": counts,
            "input": {
                "records": plan.records_in,
                "digest": input_digest,
                "kind": dataset.kind,
                "modality": dataset.modality,
                "format": dataset.description.get("format"),
                "read": read.as_kwargs(),
                "roles": dataset.roles.as_dict(),
            },
            "notes": list(plan.notes),
            "files": tree_digests(staged, skip=(VERSION_FILE,)),
        }
        write_json_atomic(staged / VERSION_FILE, meta)
        version_digest = sha256_file(staged / VERSION_FILE)
        target = ws.publish(staged, vid)
        try:
            ws.log.append(
                cmd,
                inputs={"data": input_digest, "policy": sha256_bytes(canonical_json(pol.as_dict()))},
                outputs={f"versions/{vid}/{VERSION_FILE}": version_digest},
            )
        except BaseException:
            # A version the log does not record would fail verify: take it back out.
            shutil.rmtree(target, ignore_errors=True)
            raise
    return CurateResult(
        plan=plan,
        policy=pol,
        source=source,
        dry_run=False,
        version=vid,
        path=target,
        parent=parent,
        counts=counts,
        audit_report=result.report,
        warnings=tuple(warnings),
    )


def _curata_version() -> str:
    from curata import __version__

    return __version__


def require_version(ws: Workspace, vid: str | None) -> str:
    """``vid``, or the latest version when None (a one-line error when there is none)."""
    ws.require()
    if vid is not None:
        return ws.version(vid).id
    latest = ws.latest()
    if latest is None:
        raise WorkspaceError(f"{ws.root} holds no version yet: run `curata curate DATA --policy curata.yaml`")
    return latest
