"""``carina zoo build NAME``: train a zoo archive from its example config and the shipped data."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.archive import Archive, write_manifest
from carina.archive.pack import archive_files, sha256_file
from carina.engine.train import TrainOptions, train_archive
from carina.errors import ArchiveError
from carina.kinds import validate_archive
from carina.zoo.index import (
    ARCHIVES,
    INDEX_PATH,
    ZooEntry,
    load_index,
    save_index,
    zoo_archive_path,
)

#: The example archives, when Carina runs from a clone.
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "archives"


@dataclass
class BuildResult:
    """The built archive and its metric."""

    path: Path
    metrics: dict[str, Any]
    entry: ZooEntry


def build_source(name: str) -> Path:
    """The config to build from: the example archive in a clone, else the shipped archive's own.

    Raises:
        ArchiveError: neither exists.
    """
    for candidate in (EXAMPLES / name, zoo_archive_path(name)):
        if (candidate / "config" / "config_train.json").is_file():
            return candidate
    raise ArchiveError(f"no example config to build {name!r} from")


def build_archive(
    name: str,
    *,
    output: Path,
    data_dir: Path,
    overrides: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> BuildResult:
    """Train ``name`` from its example config, validate it, and write it into the zoo folder
    ``output``.

    The archive (configs, docs, ``models/model.pt``, ``eval/metrics.json``, ``manifest.json``) goes
    to ``output/archives/NAME`` and its entry into ``output/index.json``: the layout of the
    package's zoo (``src/carina/zoo`` in a clone), which is written only when it is ``output``.

    Raises:
        ArchiveError, ConfigError: no config, or training problems.
    """
    source = build_source(name)
    with tempfile.TemporaryDirectory(prefix=f"carina-build-{name}-") as tmp:
        work = Path(tmp) / name
        shutil.copytree(
            source,
            work,
            ignore=shutil.ignore_patterns("models", "eval", "logs", ".cache", "manifest.json"),
        )
        archive = Archive.open(work, overrides=overrides)
        train_archive(archive, TrainOptions(data_dir=data_dir, progress=progress))
        return package_archive(work, name, output=output, data_dir=data_dir)


def package_archive(trained: Path, name: str, *, output: Path, data_dir: Path) -> BuildResult:
    """Validate a trained archive folder and write it as the archive ``name`` of the zoo folder
    ``output``.

    The second half of :func:`build_archive`: held-out metrics (``eval/metrics.json`` and the
    README's metrics section), no training leftovers (last checkpoint, logs), the manifest, and the
    entry in ``output/index.json``. ``trained`` itself is left as it is.

    Raises:
        ArchiveError, ConfigError: not a trained archive, or ``output/archives/NAME`` is a folder
            that is not an archive.
    """
    target = output / ARCHIVES.name / name
    if target.exists() and not (target / "config").is_dir():
        raise ArchiveError(f"{target} is not an archive to replace; choose another output folder")
    with tempfile.TemporaryDirectory(prefix=f"carina-package-{name}-") as tmp:
        work = Path(tmp) / name
        shutil.copytree(
            trained, work, ignore=shutil.ignore_patterns("eval", "logs", ".cache", "manifest.json")
        )
        (work / "models" / "checkpoint_last.pt").unlink(missing_ok=True)
        validate_archive(Archive.open(work), data_dir=data_dir)
        _write_metrics_section(work / "docs" / "README.md", work / "eval" / "metrics.json")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(work, target)
    write_manifest(target)
    metrics = json.loads((target / "eval" / "metrics.json").read_text())
    index = output / INDEX_PATH.name
    entries = load_index(index)
    known = entries.get(name) or load_index().get(name)
    entries[name] = _zoo_entry(target, name, metrics, known_license=known.license if known else "")
    save_index(entries, index)
    return BuildResult(target, metrics, entries[name])


def _zoo_entry(target: Path, name: str, metrics: dict[str, Any], *, known_license: str) -> ZooEntry:
    """The index entry of the archive at ``target`` (``known_license`` when its config names
    none)."""
    serving = Archive.open(target).serving_config()
    return ZooEntry(
        name=name,
        version=serving.version,
        type=serving.type,
        labels=serving.labels,
        description=serving.description,
        sha256=sha256_file(target / "manifest.json"),
        size=sum((target / f).stat().st_size for f in archive_files(target))
        + (target / "manifest.json").stat().st_size,
        metrics={
            "mean_dice": metrics["mean_dice"],
            "per_label": metrics["per_label"],
            "split": metrics["split"],
        },
        source=f"carina zoo build {name} (examples/archives/{name}; data {metrics['dataset']})",
        license=serving.license or known_license,
    )


_BEGIN = "<!-- metrics: written by carina zoo build -->"
_END = "<!-- /metrics -->"


def _write_metrics_section(readme: Path, metrics_path: Path) -> None:
    """Put the measured metrics between the README's markers (left alone without markers)."""
    if not readme.is_file():
        return
    text = readme.read_text()
    if _BEGIN not in text or _END not in text:
        return
    metrics = json.loads(metrics_path.read_text())
    rows = [f"| {name} | {score:.3f} |" for name, score in metrics["per_label"].items()]
    table = "\n".join(
        [
            "| structure | Dice |",
            "|---|---|",
            *rows,
            f"| **mean** | **{metrics['mean_dice']:.3f}** |",
            "",
            f"Split `{metrics['split']}` of `{metrics['dataset']}`; carina "
            f"{metrics['carina_version']}, torch {metrics['torch_version']}, MONAI "
            f"{metrics['monai_version']}, seed "
            f"{metrics['seed']}, {metrics['created'][:10]}.",
        ]
    )
    start = text.index(_BEGIN) + len(_BEGIN)
    readme.write_text(text[:start] + "\n" + table + "\n" + text[text.index(_END) :])
