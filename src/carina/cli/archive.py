"""``carina archive``: scaffold, check, pack and unpack model archives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from carina.cli.console import console

app = typer.Typer(
    help="Model archives (MMAR, MONAI Bundle): new, check, pack, unpack.", no_args_is_help=True
)


@app.command("new")
def new(
    name: Path = typer.Argument(..., help="Folder to create."),
    task: str = typer.Option(
        "segmentation", "--task", help="segmentation, deepgrow or annotation."
    ),
    labels: str = typer.Option("", "--labels", help="Comma-separated label names (segmentation)."),
    dataset: str = typer.Option(
        "spine_ct",
        "--dataset",
        help="Shipped dataset(s) to train on, comma-separated, or the folder of your own "
        "(its dataset.json from `carina dataset init`), recorded in the archive.",
    ),
    dimensions: int = typer.Option(3, "--dimensions", help="3, or 2 for a 2D DeepGrow model."),
) -> None:
    """Create a working archive from a template."""
    from carina.archive.scaffold import scaffold_archive

    names = [label.strip() for label in labels.split(",") if label.strip()]
    datasets = [d.strip() for d in dataset.split(",") if d.strip()]
    root = scaffold_archive(
        name,
        task=task,
        labels=names or None,
        dataset=datasets[0] if len(datasets) == 1 else datasets,
        dimensions=dimensions,
    )
    console.print(f"created {root}; train it with: carina train {root}", highlight=False)


@app.command("check")
def check(
    path: Path = typer.Argument(..., help="Archive folder."),
    untrusted: bool = typer.Option(False, "--untrusted", help="Check as an uploaded archive."),
) -> None:
    """Validate every config and component without training; errors name file and key."""
    from carina.engine.check import check_archive

    report = check_archive(path, trusted=not untrusted)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for line in report.checked:
        console.print(f"[green]ok[/] {line}", highlight=False)


@app.command("pack")
def pack(
    path: Path = typer.Argument(..., help="Archive folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Zip file to write."),
    with_checkpoint: bool = typer.Option(False, help="Include models/checkpoint_last.pt."),
) -> None:
    """Zip an archive with a manifest of sha256 sums."""
    from carina.archive import pack_archive

    console.print(
        f"wrote {pack_archive(path, output, with_checkpoint=with_checkpoint)}", highlight=False
    )


@app.command("unpack")
def unpack(
    source: Path = typer.Argument(..., help="Archive zip."),
    target: Path = typer.Argument(..., help="New folder to unpack into."),
) -> None:
    """Unpack a zip safely (no path traversal, links or bombs) and verify its manifest."""
    from carina.archive import unpack_archive
    from carina.settings import Settings

    root = unpack_archive(source, target, max_bytes=Settings().max_image_bytes)
    console.print(f"unpacked into {root}", highlight=False)


@app.command("plan-check")
def plan_check(
    path: Path = typer.Argument(..., help="Archive folder."),
    images: list[Path] = typer.Argument(..., help="Images to compare on (its validation cases)."),
    device: str | None = typer.Option(None, help="cpu, cuda, ..."),
    bf16: bool = typer.Option(
        False, "--bf16", help="Also check bf16 autocast against fp32 (eval/bf16_check.json)."
    ),
) -> None:
    """Compare the planned inference (whole image, larger windows) with the archive's sliding
    window; record in eval/inference_plan.json whether it may be used (per-label Dice >= 0.99).
    With --bf16, compare bf16 autocast with fp32 as well and time both."""
    from carina.archive import Archive
    from carina.engine.agreement import check_bf16, check_plan
    from carina.engine.backends import native_bf16

    archive = Archive.open(path)
    named: dict[str, Any] = {p.name: p for p in images}
    result = check_plan(archive, named, device=device)
    _show_check(result)
    console.print(
        "passed: the server plans this archive's runs"
        if result.passed
        else f"not passed ({result.reason}): the server runs the archive's sliding window",
        highlight=False,
    )
    if not bf16:
        return
    result = check_bf16(archive, named, device=device)
    _show_check(result)
    seconds = result.seconds
    timing = f"bf16 {seconds['ours']:.2f} s, fp32 {seconds['reference']:.2f} s"
    if not result.passed:
        verdict = f"bf16 not passed ({result.reason}; {timing}): the server computes in fp32"
    elif seconds["ours"] >= seconds["reference"] or not native_bf16():
        native = "" if native_bf16() else "; this CPU has no native bf16 (AVX512-BF16 or AMX)"
        verdict = f"bf16 agrees but is not faster ({timing}{native}): the server computes in fp32"
    else:
        verdict = f"bf16 passed ({timing}): the server computes this archive in bf16 on this CPU"
    console.print(verdict, highlight=False)


def _show_check(result: Any) -> None:
    for name, scores in result.scores.items():
        shown = ", ".join(f"{label} {dice:.4f}" for label, dice in scores.items())
        console.print(f"{name}: {result.plans[name]}: {shown}", highlight=False)
