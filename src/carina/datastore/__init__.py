"""The datastore: images and versioned labels on the workspace, shared by every replica.

``LocalDatastore`` keeps them in ``WORKSPACE/datastore/``; ``DicomwebDatastore`` takes the
images from a PACS (DICOMweb) and keeps the rest there too. ``open_datastore`` opens the one the
settings or the workspace name. ``import_folder`` and ``export_final_labels`` move data in and
out; ``datastore_stats`` reports how the annotation goes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from carina.datastore.dicomweb import DicomwebDatastore
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
from carina.errors import ConfigError
from carina.files import atomic_write_bytes

if TYPE_CHECKING:
    from carina.settings import Settings

#: The workspace file that names the datastore's source (and its label names).
SOURCE_FILE = Path("datastore") / "datastore.json"


def open_datastore(
    workspace: Path, *, max_bytes: int, settings: Settings | None = None
) -> LocalDatastore:
    """The datastore of a workspace: local (``WORKSPACE/datastore/``) or a PACS, as
    ``CARINA_DATASTORE`` or else the workspace (``carina datastore source``) says.

    Raises:
        ConfigError: a source that is neither ``local`` nor a ``dicomweb+http(s)://`` URL.
    """
    from carina.settings import Settings

    settings = settings or Settings()
    source = datastore_source(workspace, settings)
    root = Path(workspace) / "datastore"
    if source == "local":
        return LocalDatastore(root, max_bytes=max_bytes)
    from carina.io.dicomweb import DicomwebAuth, DicomwebClient

    password, token = settings.dicomweb_password, settings.dicomweb_token
    auth = DicomwebAuth(
        user=settings.dicomweb_user,
        password=password.get_secret_value() if password else "",
        token=token.get_secret_value() if token else "",
    )
    from carina.deid.guard import PhiGuard

    return DicomwebDatastore(
        root,
        client=DicomwebClient(source, auth=auth, timeout=settings.dicomweb_timeout),
        guard=PhiGuard.from_settings(settings, Path(workspace)),
        cache=Path(workspace) / "cache" / "dicomweb",
        cache_bytes=settings.dicomweb_cache_mib << 20,
        max_bytes=max_bytes,
    )


def datastore_source(workspace: Path, settings: Settings) -> str:
    """``local`` or the PACS's ``dicomweb+...`` URL: the setting, else the workspace's choice.

    Raises:
        ConfigError: neither.
    """
    source = settings.datastore
    path = Path(workspace) / SOURCE_FILE
    if not source and path.is_file():
        source = json.loads(path.read_text()).get("source")
    return check_source(source or "local")


def check_source(source: str) -> str:
    """``source`` when it names a datastore (``local``, ``dicomweb+http(s)://host/path``).

    Raises:
        ConfigError: anything else (the accepted forms named).
    """
    if source == "local" or source.startswith(("dicomweb+http://", "dicomweb+https://")):
        return source.rstrip("/")
    raise ConfigError(
        "datastore",
        "",
        f"{source[:80]!r} is not a datastore Carina knows: use 'local' or "
        "'dicomweb+https://host/dicom-web' (a DICOMweb service root)",
    )


def set_datastore_source(workspace: Path, source: str) -> str:
    """Make ``source`` the workspace's datastore (kept in ``WORKSPACE/datastore/datastore.json``).

    Raises:
        ConfigError: not a datastore source (:func:`check_source`).
    """
    source = check_source(source)
    path = Path(workspace) / SOURCE_FILE
    document = json.loads(path.read_text()) if path.is_file() else {}
    document["source"] = source
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(document, indent=2).encode())
    return source


__all__ = [
    "FINAL",
    "ORIGINAL",
    "SPLITS",
    "Datastore",
    "DicomwebDatastore",
    "ImageRecord",
    "ImageStatus",
    "ImportReport",
    "LabelVersion",
    "LocalDatastore",
    "check_image_id",
    "check_source",
    "check_tag",
    "datastore_source",
    "datastore_stats",
    "export_final_labels",
    "image_score",
    "import_folder",
    "open_datastore",
    "set_datastore_source",
]
