"""What a served model is (its card), whether it can be served, and adding one to a workspace.

``carina model add PATH|ZIP`` is the operator's trust decision for a model that carries code (a
MONAI Bundle with ``$`` expressions, ``imports`` and ``scripts/``): it is checked the way the server
will load it (configs, imports, requirements, weights into the network), then installed in one
rename under ``W/models/<name>/``. ``carina model check NAME`` runs the same check on an installed
model. The model card (:func:`model_card`) is what ``/v1/models`` and ``carina model list`` show.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from carina.archive import Archive, ArchiveKind, ServingConfig
from carina.archive.bundle_code import import_statements
from carina.archive.layout import UPLOAD_MARKER, check_model_name, find_root
from carina.archive.pack import install_folder, unpack_archive
from carina.archive.security import find_code_files, find_code_in_configs
from carina.errors import ArchiveError
from carina.files import owned_folder
from carina.kinds import KINDS, Kinds, kind_of
from carina.zoo.index import load_index

#: Top-level modules of Python itself, which are not listed among a Bundle's needs.
_STDLIB = frozenset(sys.stdlib_module_names)
#: The largest unzipped model ``carina model add`` unpacks (nnU-Net ensembles are large).
MAX_MODEL_BYTES = 32 * 2**30


class ModelSource(StrEnum):
    """Where an installed model came from."""

    ZOO = "zoo"
    """Carina's zoo (``carina zoo install``), unchanged."""
    BUNDLE = "bundle"
    """A MONAI Bundle (the MONAI Model Zoo's format)."""
    NNUNET = "nnunet"
    """An nnU-Net v2 results folder."""
    UPLOAD = "upload"
    """Uploaded through the admin API."""
    ARCHIVE = "archive"
    """A Carina or Clara archive put in the workspace (trained here, copied, ``model add``)."""


@dataclass(frozen=True)
class ModelCard:
    """What a served model is, for people choosing one.

    Attributes:
        format: ``carina`` (its own archive), ``bundle``, ``nnunet``, ``torchscript`` or ``onnx``
            (an export without training config).
    """

    name: str
    kind: str
    labels: list[str]
    description: str
    version: str
    license: str
    source: ModelSource
    format: str

    def as_dict(self) -> dict[str, Any]:
        """The card as JSON-ready values."""
        return {**asdict(self), "source": self.source.value}


def model_card(name: str, archive: Archive, spec: ServingConfig) -> ModelCard:
    """The card of ``archive`` installed as ``name`` (reads a few small files, no torch)."""
    root = archive.layout.root
    zoo_license = _zoo_license(name, root)
    if (root / UPLOAD_MARKER).is_file() or (root.parent / UPLOAD_MARKER).is_file():
        source = ModelSource.UPLOAD
    elif zoo_license is not None:
        source = ModelSource.ZOO
    elif archive.kind == ArchiveKind.BUNDLE:
        source = ModelSource.BUNDLE
    elif archive.kind == ArchiveKind.NNUNET:
        source = ModelSource.NNUNET
    else:
        source = ModelSource.ARCHIVE
    return ModelCard(
        name=name,
        kind=spec.type,
        labels=list(spec.labels),
        description=spec.description,
        version=spec.version,
        license=spec.license or zoo_license or "",
        source=source,
        format=_format(archive, spec),
    )


def _format(archive: Archive, spec: ServingConfig) -> str:
    if archive.kind != ArchiveKind.MMAR:
        return archive.kind.value
    layout = archive.layout
    if spec.network_def is None and not layout.train_config.is_file():
        return "torchscript" if layout.torchscript.is_file() else "onnx"
    return "carina"


def _zoo_license(name: str, root: Path) -> str | None:
    """The zoo index's licence when ``root`` is the zoo archive ``name`` unchanged, else None."""
    entry = load_index().get(name)
    manifest = root / "manifest.json"
    if entry is None or not manifest.is_file():
        return None
    if hashlib.sha256(manifest.read_bytes()).hexdigest() != entry.sha256:
        return None
    return entry.license


@dataclass
class ModelCheck:
    """What ``carina model add`` and ``carina model check`` found.

    Attributes:
        card: the model's card.
        needs: the packages its configs import (beyond Python's own), all present.
        code: the code of its own it runs (``$`` expressions, ``scripts/``): trusted by the
            operator who added it.
        checked: what was built and loaded.
    """

    card: ModelCard
    needs: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)


def check_model(root: Path, *, name: str, trusted: bool = True, kinds: Kinds = KINDS) -> ModelCheck:
    """Load the model at ``root`` the way the server will: configs, requirements, imports,
    components, weights into its network.

    Raises:
        ConfigError: a config, requirement or import problem, naming the file and key.
        ArchiveError: weights that do not fit the network, a folder that is not a model.
        UntrustedCodeError: ``trusted`` is False and the model holds code.
    """
    archive = Archive.open(root, trusted=trusted)
    spec = archive.serving_config()
    kind = kind_of(archive, spec, kinds)
    checked = [f"{_config_name(archive)}: a {spec.type} model, labels {spec.labels or '(any)'}"]
    runner = kind.load(archive, "cpu")
    checked.append("its pipeline builds and its weights load into its network")
    report = ModelCheck(model_card(name, archive, runner.spec), checked=checked)
    if archive.kind == ArchiveKind.BUNDLE:
        content = json.loads(archive.layout.bundle_inference.read_text())
        modules = {s.split()[1].split(".")[0] for _, s in import_statements(content)}
        report.needs = sorted(m for m in modules if m not in _STDLIB and m != "scripts")
        report.code = find_code_in_configs(archive.layout) + find_code_files(archive.layout.root)
    return report


def _config_name(archive: Archive) -> str:
    return {
        ArchiveKind.BUNDLE: "configs/inference.json",
        ArchiveKind.NNUNET: "dataset.json + plans.json",
    }.get(archive.kind, "config/config_aiaa.json")


def add_model(
    source: Path, models: Path, *, name: str | None = None, replace: bool = False
) -> tuple[Path, ModelCheck]:
    """Check the model folder or zip ``source`` and install it as ``models/<name>``.

    The name defaults to the folder's (the zip's stem). Nothing is installed unless the check
    passes; an installed model of that name is replaced only with ``replace``, in one rename.

    Raises:
        ArchiveError: no such folder or zip, a name taken, or a model that cannot be served (with
            the check's :class:`~carina.errors.ConfigError` when a config is at fault).
        RequestError: an unsafe name.
    """
    if not source.exists():
        raise ArchiveError(f"{source}: no such folder or zip")
    chosen = check_model_name(name or _default_name(source))
    if (models / chosen).exists() and not replace:
        raise ArchiveError(
            f"a model named {chosen!r} is installed already: pass --replace to replace it, "
            "or --name to add this one beside it"
        )
    staging = owned_folder(models, f".{chosen}.add")
    try:
        if source.is_dir():
            root = find_root(source)
        elif zipfile.is_zipfile(source):
            root = find_root(unpack_archive(source, staging / chosen, max_bytes=MAX_MODEL_BYTES))
        else:
            raise ArchiveError(f"{source.name}: neither a model folder nor a zip")
        report = check_model(root, name=chosen)
        target = install_folder(root, models, chosen, copy=source.is_dir())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    installed = Archive.open(target)
    report.card = model_card(chosen, installed, installed.serving_config())
    return target, report


def _default_name(source: Path) -> str:
    if source.is_file():
        return source.name.removesuffix(".zip")
    root = find_root(source)
    if (root / "plans.json").is_file() and root.name.count("__") == 2:
        return root.parent.name  # nnU-Net: Dataset001_Name/Trainer__Plans__config
    return root.name
