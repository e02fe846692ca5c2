"""``carina deid``: de-identify DICOM files (PS3.15's basic profile), or verify that nothing
identifying is left."""

from __future__ import annotations

import json
import secrets
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from carina.deid import DeidOptions, DeidReport, PrivateTag


class Option(StrEnum):
    """The options of the profile ``--option`` and ``--no-option`` name."""

    RETAIN_MODIFIED_DATES = "retain-modified-dates"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    RETAIN_SAFE_PRIVATE = "retain-safe-private"


_OPTION = typer.Option(
    [],
    "--option",
    metavar="OPTION",
    help="Turn an option on (repeatable). On by default: retain-modified-dates (113107), "
    "retain-patient-characteristics (113108, ages over 89 as 090Y), clean-descriptors "
    "(113105); off: retain-safe-private (113111, with --safe-private).",
)
_KEY_FILE = typer.Option(
    None,
    "--key-file",
    help="The pseudonyms' secret key (default ~/.config/carina/deid.key; made on first use, "
    "mode 0600). The same key gives the same pseudonyms.",
)


def deid(
    inputs: list[Path] = typer.Argument(
        ..., help="DICOM files or folders (searched recursively; other files are passed over)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Output folder: OUT/<study>/<series>/<instance>.dcm."
    ),
    option: list[Option] = _OPTION,
    no_option: list[Option] = typer.Option(
        [], "--no-option", metavar="OPTION", help="Turn an option off (one of --option's)."
    ),
    safe_harbor: bool = typer.Option(
        False, "--safe-harbor", help="HIPAA Safe Harbor dates: years only, times removed."
    ),
    safe_private: Path | None = typer.Option(
        None,
        "--safe-private",
        help='Private attributes known to be safe: JSON {"CREATOR": ["0019xx0c", ...]}.',
    ),
    keep: list[str] = typer.Option(
        [],
        "--keep",
        metavar="KEYWORD",
        help="Keep this attribute as it is, wherever it is (a keyword; repeatable).",
    ),
    key_file: Path | None = _KEY_FILE,
    report: Path | None = typer.Option(
        None, "--report", help="Where the report goes (default OUT/report.json)."
    ),
    what_if: bool = typer.Option(
        False, "--what-if", help="Write nothing: print the report of what would be done."
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Scan INPUTS for anything identifying left; exit 1 listing each."
    ),
) -> None:
    """De-identify DICOM files by PS3.15's Basic Application Confidentiality Profile, with keyed
    pseudonyms for UIDs, IDs and dates, into OUT; or (--verify) scan files for PHI left."""
    from carina.deid import check_output, load_safe_private

    safe = load_safe_private(safe_private) if safe_private is not None else frozenset()
    if verify:
        _verify(inputs, safe)
        return
    if output is None:
        raise typer.BadParameter("give the output folder with -o OUT", param_hint="-o")
    options = _options(option, no_option, safe_harbor=safe_harbor, keep=keep, safe_private=safe)
    check_output(inputs, output)
    report_path = report or output / "report.json"
    if any(_inside(report_path, given) for given in inputs):
        raise typer.BadParameter("the report cannot go inside an input", param_hint="--report")
    done = _run(inputs, output, options, key_file=key_file, what_if=what_if)
    _summarise(done, output, report_path)
    if done.failures:
        raise typer.Exit(code=1)


def _options(
    enabled: list[Option],
    disabled: list[Option],
    *,
    safe_harbor: bool,
    keep: list[str],
    safe_private: frozenset[PrivateTag],
) -> DeidOptions:
    from carina.deid import DeidOptions

    both = set(enabled) & set(disabled)
    if both:
        raise typer.BadParameter(
            f"both on and off: {', '.join(sorted(both))}", param_hint="--option"
        )
    default = DeidOptions()

    def chosen(name: Option, otherwise: bool) -> bool:
        return True if name in enabled else False if name in disabled else otherwise

    options = DeidOptions(
        retain_modified_dates=chosen(Option.RETAIN_MODIFIED_DATES, default.retain_modified_dates),
        retain_patient_characteristics=chosen(
            Option.RETAIN_PATIENT_CHARACTERISTICS, default.retain_patient_characteristics
        ),
        clean_descriptors=chosen(Option.CLEAN_DESCRIPTORS, default.clean_descriptors),
        retain_safe_private=chosen(Option.RETAIN_SAFE_PRIVATE, default.retain_safe_private),
        safe_harbor=safe_harbor,
        keep=frozenset(keep),
        safe_private=safe_private,
    )
    if options.retain_safe_private and not safe_private:
        raise typer.BadParameter(
            "retain-safe-private needs the list of safe attributes: --safe-private FILE",
            param_hint="--safe-private",
        )
    return options


def _run(
    inputs: list[Path], output: Path, options: DeidOptions, *, key_file: Path | None, what_if: bool
) -> DeidReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from carina.deid import default_key_path, deidentify_files, load_key

    path = key_file or default_key_path()
    if what_if and not path.exists():
        err_console.print(f"no key at {path}: this trial run uses a throwaway key", style="dim")
        key = secrets.token_bytes(32)
    else:
        made = not path.exists()
        key = load_key(path, create=True)
        if made:
            err_console.print(
                f"made a new key at {path} (mode 0600): back it up and keep it secret; the same "
                "key gives the same pseudonyms",
                highlight=False,
            )
    columns = (TextColumn("de-identifying"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("deid", total=None)
        return deidentify_files(
            inputs,
            output,
            key,
            options,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            what_if=what_if,
        )


def _summarise(done: DeidReport, output: Path, report_path: Path) -> None:
    from carina.files import atomic_write_bytes

    document = json.dumps(done.as_dict(), indent=2) + "\n"
    for path, reason in done.failures:
        err_console.print(f"{path}: {reason}", highlight=False, markup=False)
    if done.pixel_warnings:
        err_console.print(
            f"{done.pixel_warnings} instance(s) may show identifying text in their pixels (US, "
            "secondary capture, XA/RF, burned-in annotation): pixels are not cleaned, check them",
            style="yellow",
            highlight=False,
        )
    if done.what_if:
        console.print(document, highlight=False, markup=False, soft_wrap=True)
        return
    report_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(report_path, document.encode("utf-8"))
    console.print(
        f"de-identified {done.written} instance(s) into {output} ({done.not_dicom} file(s) not "
        f"DICOM, {len(done.failures)} failed); report: {report_path}",
        highlight=False,
        markup=False,
    )


def _verify(inputs: list[Path], safe_private: frozenset[PrivateTag]) -> None:
    from carina.deid import scan_files

    for given in inputs:
        if not given.exists():
            raise typer.BadParameter(f"{given}: no such file or folder", param_hint="INPUTS")
    results = scan_files(inputs, safe_private=safe_private)
    findings = [(path, finding) for path, found in results.items() for finding in found]
    for path, finding in findings:
        console.print(f"{path}: {finding}", highlight=False, markup=False, soft_wrap=True)
    if findings:
        err_console.print(
            f"{len(findings)} finding(s) in {len({p for p, _ in findings})} of {len(results)} "
            "DICOM file(s); de-identify with carina deid",
            style="red",
            highlight=False,
        )
        raise typer.Exit(code=1)
    console.print(f"{len(results)} DICOM file(s): nothing identifying found", highlight=False)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())
