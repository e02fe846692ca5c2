"""Where things are inside a model archive (paths only; nothing is read here).

The layout is fixed by DESIGN.md's contracts: ``config/`` (train, validation, serving, batch
inference, environment), ``models/`` (weights, last checkpoint, exports), ``eval/``, ``docs/`` and
``manifest.json``. A MONAI Bundle (``configs/metadata.json``) and an nnU-Net v2 results folder
(``dataset.json``, ``plans.json``, ``fold_N/``) are recognised as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from carina.errors import ArchiveError, RequestError


class ArchiveKind(StrEnum):
    """What kind of folder an archive is."""

    MMAR = "mmar"
    BUNDLE = "bundle"
    NNUNET = "nnunet"


#: Folders whose presence means the archive carries code of its own.
CODE_FOLDERS = ("custom", "BYOC", "scripts")
#: Written into an archive installed over HTTP: it stays untrusted data whenever it is loaded
#: (its content says whether an admin was allowed to upload code with it).
UPLOAD_MARKER = ".carina-upload.json"
#: Model names: what ``model=`` carries and the folder name under ``models/``.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Settings Carina keeps beside an nnU-Net results folder's own files (folds, mirroring).
NNUNET_SETTINGS = "carina.json"


@dataclass(frozen=True)
class ArchiveLayout:
    """The paths of one archive rooted at ``root``."""

    root: Path

    @property
    def config_dir(self) -> Path:
        """``config/``."""
        return self.root / "config"

    @property
    def train_config(self) -> Path:
        """``config/config_train.json``: training."""
        return self.config_dir / "config_train.json"

    @property
    def validation_config(self) -> Path:
        """``config/config_validation.json``: validation metrics and inferer."""
        return self.config_dir / "config_validation.json"

    @property
    def serving_config(self) -> Path:
        """``config/config_aiaa.json``: what the annotation server loads."""
        return self.config_dir / "config_aiaa.json"

    @property
    def inference_config(self) -> Path:
        """``config/config_inference.json``: batch inference (optional)."""
        return self.config_dir / "config_inference.json"

    @property
    def environment(self) -> Path:
        """``config/environment.json``: variables."""
        return self.config_dir / "environment.json"

    @property
    def models_dir(self) -> Path:
        """``models/``."""
        return self.root / "models"

    @property
    def weights(self) -> Path:
        """``models/model.pt``: best weights, a state dict."""
        return self.models_dir / "model.pt"

    @property
    def last_checkpoint(self) -> Path:
        """``models/checkpoint_last.pt``: last epoch with optimizer state, for ``--resume``."""
        return self.models_dir / "checkpoint_last.pt"

    @property
    def torchscript(self) -> Path:
        """``models/model.ts``."""
        return self.models_dir / "model.ts"

    @property
    def onnx(self) -> Path:
        """``models/model.onnx``."""
        return self.models_dir / "model.onnx"

    @property
    def eval_dir(self) -> Path:
        """``eval/``."""
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        """``eval/metrics.json``."""
        return self.eval_dir / "metrics.json"

    @property
    def per_case_metrics(self) -> Path:
        """``eval/metrics_per_case.csv``."""
        return self.eval_dir / "metrics_per_case.csv"

    @property
    def logs_dir(self) -> Path:
        """``logs/``: TensorBoard event files."""
        return self.root / "logs"

    @property
    def docs(self) -> Path:
        """``docs/README.md``."""
        return self.root / "docs" / "README.md"

    @property
    def manifest(self) -> Path:
        """``manifest.json``: sha256 of every file, written by pack."""
        return self.root / "manifest.json"

    @property
    def bundle_metadata(self) -> Path:
        """``configs/metadata.json`` of a MONAI Bundle."""
        return self.root / "configs" / "metadata.json"

    @property
    def bundle_inference(self) -> Path:
        """``configs/inference.json`` of a MONAI Bundle."""
        return self.root / "configs" / "inference.json"

    @property
    def bundle_train(self) -> Path:
        """``configs/train.json`` of a MONAI Bundle."""
        return self.root / "configs" / "train.json"

    @property
    def nnunet_plans(self) -> Path:
        """``plans.json`` of an nnU-Net v2 results folder."""
        return self.root / "plans.json"

    @property
    def nnunet_dataset(self) -> Path:
        """``dataset.json`` of an nnU-Net v2 results folder (labels, channels, file ending)."""
        return self.root / "dataset.json"

    @property
    def nnunet_settings(self) -> Path:
        """``carina.json``: how Carina runs an nnU-Net folder (folds, mirroring, checkpoint)."""
        return self.root / NNUNET_SETTINGS

    def nnunet_folds(self) -> list[str]:
        """The ``fold_*`` folders of an nnU-Net results folder (``0``, ``1``, ..., ``all``)."""
        folds = [p.name[5:] for p in self.root.glob("fold_*") if p.is_dir()]
        return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))

    def kind(self) -> ArchiveKind:
        """MMAR, Bundle or nnU-Net, from which config files exist.

        Raises:
            ArchiveError: none of ``config/``, ``configs/metadata.json`` or nnU-Net's
                ``dataset.json`` with ``fold_*/`` is there.
        """
        if self.bundle_metadata.is_file():
            return ArchiveKind.BUNDLE
        if self.config_dir.is_dir():
            return ArchiveKind.MMAR
        if self.nnunet_dataset.is_file() and self.nnunet_folds():
            return ArchiveKind.NNUNET
        raise ArchiveError(
            f"{self.root.name}: not a model archive (no config/ folder, no "
            "configs/metadata.json, no nnU-Net dataset.json with fold_N/ folders)"
        )


def find_root(folder: Path) -> Path:
    """The archive root inside ``folder``: itself, or its single wrapping sub-folder."""
    if (folder / "config").is_dir() or (folder / "configs").is_dir():
        return folder
    if (folder / "dataset.json").is_file() and any(folder.glob("fold_*")):
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def check_model_name(name: str) -> str:
    """``name`` if it is a safe model name (letters, digits, ``_ . -``; no path), else an error.

    Raises:
        RequestError: an empty, too long or unsafe name (``..``, ``/``, ``\\``).
    """
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise RequestError(
            f"invalid model name {name[:64]!r}: use letters, digits, '_', '.' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name
