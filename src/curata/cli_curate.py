"""Commands of the curation loop: init, curate, plan show, log, show, diff, export, verify, policy.

``register(app)`` adds them to the main ``curata`` app (cli.py). Like the rest of the CLI they parse,
call the public API and print; every CurataError becomes one ``error:`` line and exit code 2
(``verify`` exits 1 when it finds a problem).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from curata.cli_options import EngineOption, RayAddressOption, WorkersOption
from curata.errors import CurataError

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace", "-w", envvar="CURATA_WORKSPACE", help="Workspace folder (versions, audit log, lock)."
    ),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def _short(text: str | None, width: int = 90) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _command(*parts: object) -> str:
    return shlex.join(["curata", *(str(p) for p in parts if p is not None and p != "")])


class _NullStatus:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def print_plan(plan: Any, examples: int = 2) -> None:
    """Print a plan as counts per action and check, with example records and reasons."""
    from curata.curate.plan import plan_examples

    summary = plan.summary()
    table = Table(title=f"plan: {plan.records_in:,} records in, {plan.records_out:,} out")
    table.add_column("action")
    table.add_column("check")
    table.add_column("records", justify="right")
    table.add_column("examples (record: reason)")
    ex = plan_examples(plan, examples)
    for action, per_check in summary.items():
        for check, n in per_check.items():
            shown = "\n".join(
                f"{r['record_id']}: {_short(r['reason'], 70)}" for r in ex.get((action, check), [])
            )
            table.add_row(action, check, f"{n:,}", shown)
    if not summary:
        table.add_row("-", "-", "0", "no finding calls for an action")
    out.print(table)
    for note in plan.notes:
        _warn(note)


def register(app: typer.Typer) -> None:
    """Add the curation commands to ``app``."""
    plan_app = typer.Typer(no_args_is_help=True, help="Review the plan that made a version.")
    app.add_typer(plan_app, name="plan")

    @app.command()
    def init(workspace: WorkspaceOption = Path(".curata")) -> None:
        """Create a workspace (.curata/) for a dataset project: versions, audit log, signal cache."""
        from curata.versions.store import Workspace

        try:
            created = Workspace(workspace).init(_command("init", "--workspace", workspace))
        except CurataError as exc:
            _fail(str(exc))
        out.print(f"{'created' if created else 'already a workspace:'} {workspace.resolve()}")

    @app.command()
    def curate(
        data: Annotated[
            Path, typer.Argument(help="Parquet/CSV/JSONL file or folder, image folder, or HF folder.")
        ],
        policy: Annotated[
            Path | None, typer.Option("--policy", "-p", help="Policy file (default: the shipped policy).")
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
        workspace: WorkspaceOption = Path(".curata"),
        id_column: Annotated[str | None, typer.Option(help="Column holding record ids.")] = None,
        text_column: Annotated[str | None, typer.Option(help="Column holding text.")] = None,
        image_column: Annotated[str | None, typer.Option(help="Column holding image paths or bytes.")] = None,
        label_column: Annotated[str | None, typer.Option(help="Column holding labels.")] = None,
        split_column: Annotated[str | None, typer.Option(help="Column holding split names.")] = None,
        license_column: Annotated[str | None, typer.Option(help="Column holding licences (SPDX).")] = None,
        source_column: Annotated[str | None, typer.Option(help="Column holding sources (URLs).")] = None,
        engine: EngineOption = "local",
        workers: WorkersOption = None,
        ray_address: RayAddressOption = None,
        examples: Annotated[int, typer.Option(help="Example records shown per action and check.")] = 2,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or plan table.")] = False,
    ) -> None:
        """Audit DATA, plan what the policy asks for, and write a new version (or only print the plan)."""
        from curata.curate.apply import curate as run_curate
        from curata.progress import set_progress

        set_progress(not quiet)
        cmd = _command(
            "curate", data, *(("--policy", policy) if policy else ()), *(("--dry-run",) if dry_run else ())
        )
        status = err.status("curating…", spinner="dots") if not quiet and err.is_terminal else None
        try:
            with status or _NullStatus():
                result = run_curate(
                    data,
                    policy,
                    workspace,
                    dry_run,
                    id_column=id_column,
                    text_column=text_column,
                    image_column=image_column,
                    label_column=label_column,
                    split_column=split_column,
                    license_column=license_column,
                    source_column=source_column,
                    engine=engine,
                    workers=workers,
                    ray_address=ray_address,
                    command=cmd,
                    on_step=(lambda text: status.update(f"{text}…")) if status is not None else None,
                    on_warning=_warn,
                )
        except CurataError as exc:
            _fail(str(exc))
        if not quiet:
            print_plan(result.plan, examples)
        if result.dry_run:
            out.print("dry run: nothing was written")
        else:
            out.print(
                f"wrote {result.version} ({result.counts.get('records', 0):,} records, parent "
                f"{result.parent or 'none'}): {result.path}"
            )

    @plan_app.command("show")
    def plan_show(
        version: Annotated[str | None, typer.Argument(help="Version (default: the latest).")] = None,
        workspace: WorkspaceOption = Path(".curata"),
        action: Annotated[str | None, typer.Option(help="Only rows with this action.")] = None,
        check: Annotated[str | None, typer.Option(help="Only rows of this check.")] = None,
        limit: Annotated[int, typer.Option(help="Rows listed (0: summary only).")] = 50,
    ) -> None:
        """Show the plan that made a version: counts per action and check, then its rows."""
        from curata.curate.apply import require_version
        from curata.curate.plan import Plan
        from curata.versions.store import Workspace

        try:
            ws = Workspace(workspace)
            vid = require_version(ws, version)
            v = ws.version(vid)
            table = v.plan()
            records_in = int((v.meta.get("input") or {}).get("records") or 0)
        except CurataError as exc:
            _fail(str(exc))
        out.print(f"{vid}: plan of {v.meta.get('source')}")
        print_plan(Plan(table, records_in))
        rows = [
            r
            for r in table.to_pylist()
            if (action is None or r["action"] == action) and (check is None or r["check"] == check)
        ]
        if limit <= 0 or not rows:
            return
        listing = Table(title=f"{len(rows):,} rows" + (f" (first {limit})" if len(rows) > limit else ""))
        for name in ("record_id", "action", "check", "score", "label", "reason"):
            listing.add_column(name, justify="right" if name == "score" else "left")
        for r in rows[:limit]:
            label = r["old_label"] or ""
            if r["new_label"]:
                label = f"{label} → {r['new_label']}"
            listing.add_row(
                r["record_id"], r["action"], r["check"], f"{r['score']:.2f}", label, _short(r["reason"])
            )
        out.print(listing)

    @app.command("log")
    def log_cmd(
        workspace: WorkspaceOption = Path(".curata"),
        limit: Annotated[int, typer.Option(help="Newest entries shown (0: all).")] = 20,
    ) -> None:
        """Show the audit log: who ran what, when, with which inputs and outputs."""
        from curata.versions.store import Workspace

        try:
            ws = Workspace(workspace)
            ws.require()
            entries = ws.log.entries()
        except CurataError as exc:
            _fail(str(exc))
        shown = entries[-limit:] if limit > 0 else entries
        table = Table(title=f"audit log: {len(entries)} entries")
        for name in ("seq", "time", "user", "command", "inputs", "outputs", "hash"):
            table.add_column(name)

        def digests(values: Any) -> str:
            return _short(", ".join(f"{k} {str(v)[:12]}" for k, v in (values or {}).items()), 60)

        for e in shown:
            table.add_row(
                str(e.get("seq")),
                str(e.get("time", ""))[:19],
                str(e.get("user")),
                _short(str(e.get("command")), 60),
                digests(e.get("inputs")),
                digests(e.get("outputs")),
                str(e.get("hash", ""))[:12],
            )
        out.print(table)

    @app.command()
    def show(
        version: Annotated[str | None, typer.Argument(help="Version (default: the latest).")] = None,
        workspace: WorkspaceOption = Path(".curata"),
    ) -> None:
        """Show a version: parent, source, counts, and what its plan did."""
        from curata.curate.apply import require_version
        from curata.versions.store import Workspace

        try:
            ws = Workspace(workspace)
            v = ws.version(require_version(ws, version))
        except CurataError as exc:
            _fail(str(exc))
        m = v.meta
        counts = m.get("counts") or {}
        out.print(f"[bold]{v.id}[/]  created {m.get('created_at')}  curata {m.get('curata_version')}")
        out.print(f"parent: {m.get('parent') or 'none'}")
        out.print(f"source: {m.get('source')}")
        out.print(f"policy: {(m.get('policy') or {}).get('source')}")
        records_in = (m.get("input") or {}).get("records", "?")
        out.print(
            f"records: {records_in} in source, {counts.get('records', '?')} in {v.id} "
            f"({counts.get('changed', 0)} changed)"
        )
        for key in ("per_split", "per_label"):
            if counts.get(key):
                out.print(
                    f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {n}" for k, n in counts[key].items())
                )
        table = Table(title="plan")
        table.add_column("action")
        table.add_column("check")
        table.add_column("records", justify="right")
        for action, per_check in (m.get("plan_summary") or {}).items():
            for check, n in per_check.items():
                table.add_row(action, check, str(n))
        out.print(table)
        for note in m.get("notes") or []:
            _warn(note)

    @app.command()
    def diff(
        old: Annotated[str, typer.Argument(help="Older version (alone: compared with its source).")],
        new: Annotated[str | None, typer.Argument(help="Newer version.")] = None,
        workspace: WorkspaceOption = Path(".curata"),
        limit: Annotated[int, typer.Option(help="Rows listed (0: all).")] = 100,
    ) -> None:
        """Explain every record removed, added, relabelled or changed between two versions."""
        from curata.versions.diff import diff_versions

        try:
            ws = str(workspace)
            d = diff_versions(ws, None, old) if new is None else diff_versions(ws, old, new)
        except CurataError as exc:
            _fail(str(exc))
        rows = d.rows()
        base = d.old or f"the source of {d.new}"
        counts = ", ".join(f"{n} {k}" for k, n in d.counts().items()) or "no differences"
        out.print(f"{base} → {d.new}: {counts}")
        if not rows:
            return
        shown = rows[:limit] if limit > 0 else rows
        table = Table()
        for name in ("record_id", "change", "check", "label", "reason"):
            table.add_column(name)
        for r in shown:
            label = r["old_label"] or ""
            if r["change"] in ("relabelled", "added") and r["new_label"] != r["old_label"]:
                label = f"{r['old_label'] or ''} → {r['new_label'] or ''}"
            table.add_row(r["record_id"], r["change"], r["check"] or "-", label, _short(r["reason"], 100))
        out.print(table)
        if len(rows) > len(shown):
            out.print(f"… {len(rows) - len(shown)} more (--limit 0 lists all)")

    @app.command()
    def export(
        version: Annotated[str, typer.Argument(help="Version to export.")],
        to: Annotated[Path, typer.Option("--to", help="New or empty folder to write.")],
        fmt: Annotated[
            str, typer.Option("--format", "-f", help="parquet, jsonl, imagefolder or hf.")
        ] = "parquet",
        workspace: WorkspaceOption = Path(".curata"),
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Write a version's records as files (auditable again with `curata audit`)."""
        from curata.progress import progress_bar, set_progress
        from curata.versions.export import export_version

        set_progress(not quiet)
        try:
            with progress_bar(f"exporting {version}", None) as advance:
                result = export_version(
                    workspace,
                    version,
                    to,
                    fmt,
                    command=_command("export", version, "--to", to, "--format", fmt),
                    on_progress=lambda n: advance(n),
                )
        except CurataError as exc:
            _fail(str(exc))
        where = result.path.resolve()
        out.print(f"exported {result.version}: {result.records:,} records as {result.format} to {where}")

    @app.command()
    def card(
        version: Annotated[str | None, typer.Argument(help="Version (default: the latest).")] = None,
        out_dir: Annotated[
            Path, typer.Option("--out", "-o", help="New or empty folder for README.md and croissant.json.")
        ] = Path("card"),
        workspace: WorkspaceOption = Path(".curata"),
    ) -> None:
        """Write the dataset card (README.md, Hugging Face format) and Croissant metadata of a version."""
        from curata.errors import WorkspaceError
        from curata.report.card import write_card
        from curata.versions.files import sha256_file
        from curata.versions.store import VERSION_FILE, Workspace

        ws = Workspace(workspace)
        try:
            ws.require()
            vid = version or ws.latest()
            if vid is None:
                raise WorkspaceError(f"no version in {workspace} yet: run `curata curate` first")
            stored = ws.version(vid)
            head = ws.log.read_head()
            cmd = _command("card", vid, "--out", out_dir)
            paths = write_card(stored.path, out_dir, log_head=str(head["hash"]) if head else None)
            with ws.lock(cmd):
                ws.log.append(
                    cmd,
                    inputs={f"versions/{vid}/{VERSION_FILE}": sha256_file(stored.path / VERSION_FILE)},
                    outputs={f"card:{p.resolve()}": sha256_file(p) for p in paths},
                )
        except CurataError as exc:
            _fail(str(exc))
        out.print(f"dataset card of {vid}: " + ", ".join(str(p) for p in paths))

    @app.command()
    def verify(
        workspace: WorkspaceOption = Path(".curata"),
        sources: Annotated[
            bool,
            typer.Option("--sources", help="Also re-read each version's source and compare content hashes."),
        ] = False,
    ) -> None:
        """Check that the audit log and the stored versions are intact; exit 1 naming what is not."""
        from curata.versions.verify import verify_workspace

        try:
            result = verify_workspace(str(workspace), sources=sources)
        except CurataError as exc:
            _fail(str(exc))
        if result.ok:
            n = len(result.versions)
            out.print(
                f"ok: audit log of {result.entries} entries intact; {n} version(s) match their manifests"
                + (" and sources" if sources else "")
            )
            return
        for p in result.problems:
            err.print(f"[bold red]{p.subject}:[/] {p.message}", soft_wrap=True)
        err.print(f"verify found {len(result.problems)} problem(s)")
        raise typer.Exit(1)

    @app.command("policy")
    def policy_cmd(
        file: Annotated[Path | None, typer.Argument(help="Policy file to validate and summarise.")] = None,
        default: Annotated[bool, typer.Option("--default", help="Print the default policy (YAML).")] = False,
    ) -> None:
        """Print the default policy, or validate a policy file and show what it does per check."""
        from curata.curate.policy import DEFAULT_POLICY_YAML, known_check_names, load_policy

        if default == (file is not None):
            _fail("give a policy FILE to check, or --default to print the default policy")
        if default:
            typer.echo(DEFAULT_POLICY_YAML, nl=False)
            return
        assert file is not None
        try:
            pol = load_policy(file)
        except CurataError as exc:
            _fail(str(exc))
        table = Table(title=f"{file}: valid")
        table.add_column("check")
        table.add_column("action")
        table.add_column("settings")
        for name in known_check_names():
            cp = pol.action_for(name)
            action = cp.action if cp.enabled else "not run"
            settings = ", ".join(f"{k}={v}" for k, v in cp.settings.items())
            listed = "" if name in pol.checks else " (default_action)"
            table.add_row(name, action + listed, settings)
        out.print(table)
