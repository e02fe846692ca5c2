"""Transfer learning: load matching pretrained weights and freeze layers for a first phase."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import torch

from carina.archive.layout import ArchiveLayout
from carina.engine.network import load_state_dict


@dataclass
class TransferReport:
    """What loading pretrained weights did, tensor by tensor.

    Attributes:
        source: the weights file.
        loaded: names copied (same name and shape).
        reshaped: ``(name, pretrained shape, new shape)`` where the shapes differ (e.g. a new
            number of output labels): those keep their fresh initialisation at the new shape.
        skipped: names in the pretrained weights that the network does not have.
        missing: names the network has that the pretrained weights lack (fresh initialisation).
    """

    source: Path
    loaded: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        out = [f"pretrained weights from {self.source.name}: {len(self.loaded)} tensors loaded"]
        out += [
            f"skipped, shape differs (initialised fresh): {n} {list(a)} -> {list(b)}"
            for n, a, b in self.reshaped
        ]
        if self.skipped:
            out.append(f"skipped (not in this network): {', '.join(self.skipped)}")
        if self.missing:
            out.append(
                f"not in the pretrained weights (initialised fresh): {', '.join(self.missing)}"
            )
        return out


def pretrained_weights_path(source: Path) -> Path:
    """The weights file of ``source``: an archive folder's ``models/model.pt``, or the file."""
    return ArchiveLayout(source).weights if source.is_dir() else source


def load_pretrained(network: torch.nn.Module, source: Path) -> TransferReport:
    """Copy every pretrained tensor whose name and shape match into ``network``.

    Raises:
        ArchiveError: the weights cannot be loaded as weights only.
    """
    path = pretrained_weights_path(source)
    pretrained = load_state_dict(path)
    report = TransferReport(source=path)
    own = network.state_dict()
    update = {}
    for name, tensor in own.items():
        if name not in pretrained:
            report.missing.append(name)
        elif pretrained[name].shape == tensor.shape:
            update[name] = pretrained[name]
            report.loaded.append(name)
        else:
            report.reshaped.append((name, tuple(pretrained[name].shape), tuple(tensor.shape)))
    report.skipped = [name for name in pretrained if name not in own]
    network.load_state_dict(update, strict=False)
    return report


def freeze(network: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Stop gradients of the parameters whose names match any glob pattern; returns them."""
    frozen = []
    for name, parameter in network.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def unfreeze(network: torch.nn.Module, names: list[str]) -> None:
    """Let the named parameters train again."""
    wanted = set(names)
    for name, parameter in network.named_parameters():
        if name in wanted:
            parameter.requires_grad_(True)
