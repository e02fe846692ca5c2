"""Model archives (MMAR and MONAI Bundle): layout, typed configs, syntax translation, pack/unpack.

``Archive.open(path, trusted=...)`` is the entry point; see :mod:`carina.archive.archive`.
"""

from carina.archive.archive import (
    Archive,
    ResolvedConfig,
    ServingPipeline,
    TrainConfig,
    parse_override,
)
from carina.archive.layout import ArchiveKind, ArchiveLayout
from carina.archive.pack import pack_archive, unpack_archive, verify_manifest, write_manifest
from carina.archive.schema import ModelType, ServingConfig, TrainSettings

__all__ = [
    "Archive",
    "ArchiveKind",
    "ArchiveLayout",
    "ModelType",
    "ResolvedConfig",
    "ServingConfig",
    "ServingPipeline",
    "TrainConfig",
    "TrainSettings",
    "pack_archive",
    "parse_override",
    "unpack_archive",
    "verify_manifest",
    "write_manifest",
]
