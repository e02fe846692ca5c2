"""The table of model kinds, and what goes through it: loading a runner, scoring an archive.

Adding a kind is one module (its runner, ``load``, and a :class:`~carina.kinds.base.ModelKind`)
and one line in :data:`KINDS`. A server takes the table it serves as an argument, so a test or a
deployment may serve a kind of its own without touching this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from carina.archive import Archive
from carina.archive.schema import ServingConfig
from carina.errors import ConfigError
from carina.kinds.base import ModelKind, Runner, serving_file
from carina.kinds.deepedit import DEEPEDIT
from carina.kinds.deepgrow import DEEPGROW
from carina.kinds.dextr3d import DEXTR3D
from carina.kinds.segmentation import SEGMENTATION

if TYPE_CHECKING:
    from carina.engine.evaluate import ValidationResult

Kinds = Mapping[str, ModelKind]

#: Every kind Carina serves, by the serving config's ``type`` (``others``: AIAA's generic type,
#: served as a segmentation).
KINDS: Kinds = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            SEGMENTATION,
            dataclasses.replace(SEGMENTATION, name="others"),
            DEEPGROW,
            DEXTR3D,
            DEEPEDIT,
        )
    }
)


def kind_of(archive: Archive, spec: ServingConfig, kinds: Kinds = KINDS) -> ModelKind:
    """The kind that serves ``archive`` (whose serving config is ``spec``), after checking that
    the kind can serve it.

    Raises:
        ConfigError: no kind serves its ``type``, or the kind's check fails (naming the key).
    """
    kind = kinds.get(spec.type)
    if kind is None:
        raise ConfigError(
            serving_file(archive),
            "type",
            f"{spec.type!r} is not a kind this server runs ({', '.join(kinds)})",
        )
    kind.check(archive, spec)
    return kind


def load_runner(
    root: Path, *, device: str | None, trusted: bool, kinds: Kinds = KINDS
) -> tuple[ModelKind, Runner]:
    """The kind and the loaded runner of the archive at ``root``.

    Raises:
        ConfigError, ArchiveError, UntrustedCodeError: the archive cannot be served.
    """
    archive = Archive.open(root, trusted=trusted)
    kind = kind_of(archive, archive.serving_config(), kinds)
    return kind, kind.load(archive, device)


def validate_archive(
    archive: Archive,
    *,
    dataset: Path | None = None,
    data_dir: Path,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
    kinds: Kinds = KINDS,
) -> ValidationResult:
    """Score ``archive`` on its validation cases the way its kind is scored (the training
    config's ``task``); writes ``eval/metrics.json`` and the per-case CSV.

    Raises:
        ConfigError: no kind scores the task.
        ArchiveError, ImageReadError: a weights or data problem.
    """
    from carina.engine.evaluate import validate_archive as score_cases

    task = archive.train_config().settings.task
    kind = kinds.get(task)
    if kind is None or kind.scorer is None:
        raise ConfigError(
            archive.layout.train_config.name, "task", f"{task!r} models cannot be validated"
        )
    return score_cases(
        archive,
        scorer=kind.scorer,
        dataset=dataset,
        data_dir=data_dir,
        device=device,
        progress=progress,
    )
