"""``carina archive check``: build every config and component of an archive without training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from carina.archive import Archive, ArchiveKind
from carina.engine.network import load_network
from carina.engine.train import TrainOptions, check_training


@dataclass
class CheckReport:
    """What was checked, and the notes (legacy rewrites, ignored sections)."""

    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_archive(path: Path, *, trusted: bool = True, data_dir: Path | None = None) -> CheckReport:
    """Validate an archive: configs parse and validate, components build, data and weights load.

    Untrusted archives (uploads) are checked as the server would load them: code is refused, and
    only serving matters (their training data is not here).

    Raises:
        ConfigError, ArchiveError, UntrustedCodeError: the first problem found.
    """
    archive = Archive.open(path, trusted=trusted)
    report = CheckReport()
    if archive.kind == ArchiveKind.MMAR and archive.layout.train_config.is_file() and trusted:
        options = TrainOptions(data_dir=data_dir) if data_dir else TrainOptions()
        report.notes += check_training(archive, options)
        report.checked.append("config_train.json: components build, data found, labels match")
        space = archive.search_space()
        if space:
            names = ", ".join(param.name for param in space.params)
            report.checked.append(f"config_train.json: AutoML search over {names}")
        archive.validation_config()
        report.checked.append("config_validation.json")
    serving = archive.serving_pipeline()
    resolved = serving.resolved
    for key in ("preprocessing", "inferer", "postprocessing"):
        if resolved.content.get(key) is not None:
            resolved.instantiate(key)
    report.notes += resolved.notes
    report.checked.append(
        f"{resolved.file}: {serving.settings.type} model, labels {serving.settings.labels}"
    )
    weights = archive.layout.root / serving.settings.model_file
    if weights.is_file() or archive.layout.torchscript.is_file():
        load_network(
            resolved, weights, torchscript=archive.layout.torchscript, onnx=archive.layout.onnx
        )
        report.checked.append("weights load into the network")
    else:
        report.notes.append(f"no {serving.settings.model_file} yet: train the archive")
    return report
