"""The datastore: images and versioned labels on the workspace, shared by every replica.

``LocalDatastore`` keeps them in ``WORKSPACE/datastore/``; a DICOMweb backend will implement
the same methods. ``import_folder`` and ``export_final_labels`` move data in and out;
``datastore_stats`` reports how the annotation goes.
"""

from pathlib import Path

from carina.datastore.folders import ImportReport, export_final_labels, import_folder
from carina.datastore.local import LocalDatastore
from carina.datastore.records import (
    FINAL,
    ORIGINAL,
    SPLITS,
    Datastore,
    ImageRecord,
    ImageStatus,
    LabelVersion,
    check_image_id,
    check_tag,
)
from carina.datastore.stats import datastore_stats, image_score


def open_datastore(workspace: Path, *, max_bytes: int) -> LocalDatastore:
    """The datastore of a workspace (``WORKSPACE/datastore/``)."""
    return LocalDatastore(Path(workspace) / "datastore", max_bytes=max_bytes)


__all__ = [
    "FINAL",
    "ORIGINAL",
    "SPLITS",
    "Datastore",
    "ImageRecord",
    "ImageStatus",
    "ImportReport",
    "LabelVersion",
    "LocalDatastore",
    "check_image_id",
    "check_tag",
    "datastore_stats",
    "export_final_labels",
    "image_score",
    "import_folder",
    "open_datastore",
]
