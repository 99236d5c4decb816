"""The command line: parses options, calls the public API, prints a short summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from curata import __version__
from curata.cli_options import EngineOption, RayAddressOption, WorkersOption
from curata.errors import CurataError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="curata: audit, curate and document the datasets models are trained on.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def audit(
    data: Annotated[
        str,
        typer.Argument(
            help="Parquet/CSV/JSONL file or folder, image folder, or HF folder; or an s3:// / gs:// "
            "file or folder of tables."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for findings and reports.")],
    reference: Annotated[
        list[str] | None,
        typer.Option(
            "--reference",
            "-r",
            help="Reference dataset(s) to check contamination against (local or s3:// / gs://).",
        ),
    ] = None,
    ood_reference: Annotated[
        str | None,
        typer.Option(
            help="Dataset taken as in-distribution (e.g. the training set): the outlier check also "
            "flags records unlike it."
        ),
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Column holding record ids.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding text.")] = None,
    image_column: Annotated[str | None, typer.Option(help="Column holding image paths or bytes.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding labels.")] = None,
    split_column: Annotated[str | None, typer.Option(help="Column holding split names.")] = None,
    license_column: Annotated[str | None, typer.Option(help="Column holding licences (SPDX).")] = None,
    source_column: Annotated[str | None, typer.Option(help="Column holding sources (URLs).")] = None,
    fail_on: Annotated[
        str | None, typer.Option(help="Exit 1 when a finding is at or above this severity (error|warning).")
    ] = None,
    engine: EngineOption = "local",
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    workspace: Annotated[
        Path | None, typer.Option(help="Signal cache folder (default: .curata beside OUT).")
    ] = None,
    checks: Annotated[str | None, typer.Option(help="Comma-separated checks to run (default: all).")] = None,
    skip: Annotated[str | None, typer.Option(help="Comma-separated checks to skip.")] = None,
    min_jaccard: Annotated[float, typer.Option(help="Text near-duplicate Jaccard threshold.")] = 0.8,
    min_cosine: Annotated[
        float | None,
        typer.Option(
            help="Semantic-duplicate cosine similarity threshold (default: automatic, at least 0.95, "
            "higher where the embeddings crowd together)."
        ),
    ] = None,
    ngram: Annotated[int, typer.Option(help="Word n-gram size for n-gram contamination.")] = 13,
    min_ngram_overlap: Annotated[
        float,
        typer.Option(
            help="Share of a record's n-grams found in a reference to count (0 = any, the GPT-3 rule)."
        ),
    ] = 0.0,
    encoder: Annotated[
        str,
        typer.Option(
            help="Encoder for embeddings: auto (by modality and what is installed), minilm, tfidf-svd, "
            "efficientnet-lite0, ssl, pixels or tabular."
        ),
    ] = "auto",
    embeddings: Annotated[
        Path | None, typer.Option(help="Your own embeddings: a .npy file, one row per record.")
    ] = None,
    embedding_column: Annotated[
        str | None, typer.Option(help="Column holding your own embeddings (lists of numbers).")
    ] = None,
    pred_probs: Annotated[
        Path | None,
        typer.Option(
            help="Out-of-sample predicted probabilities: .npy (rows x classes, classes sorted) "
            "or a table with record_id and one column per class."
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Re-raise a check that crashes instead of reporting it.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary table.")] = False,
) -> None:
    """Audit DATA and write findings.parquet, report.json and report.html to OUT."""
    from dataclasses import replace

    from curata.audit import AuditSettings
    from curata.audit import audit as run_audit
    from curata.checks.contamination import ContaminationSettings
    from curata.checks.semantic import SemanticSettings
    from curata.progress import set_progress
    from curata.signals.embed import EmbedSettings
    from curata.signals.pipeline import SignalSettings
    from curata.signals.text import MinHashSettings

    set_progress(not quiet)
    if fail_on not in (None, "error", "warning"):
        _fail(f"--fail-on must be 'error' or 'warning', got '{fail_on}'")
    try:
        base = SignalSettings()
        settings = AuditSettings(
            signals=replace(base, minhash=replace(MinHashSettings(), min_jaccard=min_jaccard)),
            contamination=ContaminationSettings(ngram=ngram, min_ngram_overlap=min_ngram_overlap),
            embed=EmbedSettings(
                encoder=encoder,
                embeddings_file=None if embeddings is None else str(embeddings),
                embedding_column=embedding_column,
            ),
            fail_on=fail_on,  # type: ignore[arg-type]
            checks=tuple(c.strip() for c in checks.split(",") if c.strip()) if checks else None,
            skip=tuple(c.strip() for c in skip.split(",") if c.strip()) if skip else (),
            strict=strict,
            pred_probs=None if pred_probs is None else str(pred_probs),
            ood_reference=None if ood_reference is None else str(ood_reference),
            semantic=SemanticSettings(min_cosine=min_cosine),
        )
        status = err.status("auditing…", spinner="dots") if not quiet and err.is_terminal else None
        with status or _NullContext():
            result = run_audit(
                data,
                out_dir,
                references=reference or (),
                id_column=id_column,
                text_column=text_column,
                image_column=image_column,
                label_column=label_column,
                split_column=split_column,
                license_column=license_column,
                source_column=source_column,
                settings=settings,
                engine=engine,
                workers=workers,
                ray_address=ray_address,
                workspace=workspace,
                on_step=(lambda text: status.update(f"{text}…")) if status is not None else None,
            )
    except CurataError as exc:
        _fail(str(exc))
    if not quiet:
        print_summary(result.report, result.out)
    raise typer.Exit(result.exit_code)


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def print_summary(report: dict[str, object], out_dir: Path) -> None:
    """Print the per-check counts table and the report path."""
    table = Table(title=f"curata audit: {report['input']['num_rows']:,} records")  # type: ignore[index]
    table.add_column("check")
    table.add_column("status")
    table.add_column("findings", justify="right")
    for name, entry in report["checks"].items():  # type: ignore[attr-defined]
        status = entry["status"]
        shown = {"ok": "[green]ok[/]", "failed": "[red]failed[/]", "skipped": "[dim]skipped[/]"}[status]
        count = str(entry["count"]) if status == "ok" else (entry.get("reason") or entry.get("error") or "")
        table.add_row(name, shown, count)
    out.print(table)
    out.print(f"report: {(out_dir / 'report.html').resolve()}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where the demo data and report go.")] = Path(
        "demo-out"
    ),
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Build a demo dataset from real data with planted problems, audit it, compare."""
    from curata.demo import run_demo

    try:
        code = run_demo(out_dir, workers=workers, console=out)
    except CurataError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command()
def embed(
    data: Annotated[
        Path, typer.Argument(help="Parquet/CSV/JSONL file or folder, image folder, or HF folder.")
    ],
    train_ssl: Annotated[
        bool,
        typer.Option("--train-ssl", help="Train the self-supervised image encoder on DATA (or reuse it)."),
    ] = False,
    encoder: Annotated[
        str,
        typer.Option(
            help="Encoder: auto, minilm, tfidf-svd, efficientnet-lite0, ssl, pixels or tabular "
            "(--train-ssl implies ssl)."
        ),
    ] = "auto",
    workspace: Annotated[
        Path, typer.Option(help="Folder for the trained encoders and the embedding cache.")
    ] = Path(".curata"),
    epochs: Annotated[int | None, typer.Option(help="SSL training epochs (default 30).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fit sample and of SSL training.")] = 0,
    id_column: Annotated[str | None, typer.Option(help="Column holding record ids.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding text.")] = None,
    image_column: Annotated[str | None, typer.Option(help="Column holding image paths or bytes.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Compute (and cache) DATA's embeddings; with --train-ssl, first train the self-supervised
    image encoder on DATA and store it in the workspace, where later runs (and audit's auto
    encoder) find it."""
    import time

    from curata.engine import get_engine
    from curata.io import read_dataset
    from curata.progress import set_progress
    from curata.signals.cache import SignalCache
    from curata.signals.embed import EmbedSettings, compute_embeddings
    from curata.signals.embed.ssl import SslEncoder

    set_progress(not quiet)
    if train_ssl and encoder not in ("auto", SslEncoder.name):
        _fail(f"--train-ssl trains the ssl encoder; it cannot be combined with --encoder {encoder}")
    if epochs is not None and not (train_ssl or encoder == SslEncoder.name):
        _fail("--epochs only applies to the ssl encoder (--train-ssl)")
    started = time.perf_counter()
    try:
        dataset = read_dataset(data, id_column=id_column, text_column=text_column, image_column=image_column)
        settings = EmbedSettings(encoder=SslEncoder.name if train_ssl else encoder, seed=seed)
        chosen = None
        if train_ssl or encoder == SslEncoder.name:
            chosen = SslEncoder(seed=seed) if epochs is None else SslEncoder(epochs=epochs, seed=seed)
        state_dir = workspace / "encoders"
        result = compute_embeddings(
            dataset, settings, get_engine("local", workers), SignalCache(workspace), state_dir, chosen
        )
    except CurataError as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - started
    rows, dim = result.vectors.shape
    out.print(
        f"embeddings {result.source}: {rows:,} rows x {dim} dims ({int(result.ok.sum()):,} encoded, "
        f"{result.cached:,} from cache) in {seconds:.1f}s; stored in {workspace.resolve()}",
        soft_wrap=True,
    )


@app.command()
def version() -> None:
    """Print the curata version."""
    out.print(__version__)


def main() -> None:
    """Entry point of the ``curata`` command."""
    from curata.outofcore import use_returning_memory_pool

    use_returning_memory_pool()
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # a full disk, or a file removed or unreadable while a command runs
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)


from curata.cli_curate import register as _register_curation  # noqa: E402

_register_curation(app)

if __name__ == "__main__":
    main()
