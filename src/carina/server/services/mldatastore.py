"""The datastore as MONAI Label's clients see it (``specs/monailabel-api.md`` section 5):
listings, image uploads, labels as the plugins send them (raw ``.bin``, segments named in
``label_info``), downloads, and the next image to annotate. Blocking; runs in a worker pool."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from carina.datastore import (
    FINAL,
    ImageRecord,
    ImageStatus,
    LocalDatastore,
    check_tag,
)
from carina.errors import (
    ConflictError,
    DatastoreError,
    ImageNotFound,
    ImageReadError,
    NotFoundError,
    RequestError,
)
from carina.io import Volume, load_volume
from carina.io.formats import suffix_of
from carina.kinds import Guidance
from carina.server.services.inference import Upload, known_suffix
from carina.server.services.registry import ModelRegistry

log = logging.getLogger("carina.server")


# -- datastore ------------------------------------------------------------------------------------


def listing(store: LocalDatastore, output: str | None) -> Any:
    """``GET /datastore/``: counts (``stats``, the default), every object (``all``: images and
    label tags with their info, never a server path) or the training pairs (``train``: ids)."""
    records = store.images()
    if output in (None, "", "stats"):
        tags: dict[str, int] = {}
        for record in records:
            for tag in record.labels:
                tags[tag] = tags.get(tag, 0) + 1
        completed = sum(r.status != ImageStatus.UNLABELLED for r in records)
        return {"total": len(records), "completed": completed, "label_tags": tags}
    if output == "train":
        return [{"image": r.id, "label": r.id, "tag": FINAL} for r in records if FINAL in r.labels]
    if output == "all":
        names = store.label_names()
        return {
            "name": "datastore",
            "description": "Carina datastore",
            "objects": {r.id: object_entry(r, names) for r in records},
        }
    raise RequestError(f"output must be all, train or stats, not {output[:32]!r}")


def object_entry(record: ImageRecord, names: dict[int, str]) -> dict[str, Any]:
    """One image of ``GET /datastore/?output=all`` (Slicer reads an ``original`` label's
    ``info.params.label_names``)."""
    labels = {}
    for tag, version in record.labels.items():
        info = dict(version.info)
        params = dict(info.get("params") or {})
        if "label_names" not in params and names:
            params["label_names"] = {name: value for value, name in sorted(names.items())}
        info["params"] = params
        info.update(ts=int(version.saved_at.timestamp()), user=version.saved_by)
        labels[tag] = {"ext": ".nii.gz", "info": info}
    image_info = {**public_info(record), "name": record.name, "status": str(record.status)}
    return {"image": {"ext": image_ext(record), "info": image_info}, "labels": labels}


def public_info(record: ImageRecord) -> dict[str, Any]:
    """The image's metadata for clients (who holds it, approval, what uploaders sent)."""
    info = dict(record.info)
    info["ts"] = int(record.imported_at.timestamp())
    if record.split:
        info["split"] = record.split
    return info


def image_ext(record: ImageRecord) -> str:
    """The stored image's suffix (``.zip`` for a DICOM series, sent zipped)."""
    return suffix_of(Path(record.name)) or ".nii.gz"


def add_image(
    store: LocalDatastore, upload: Upload, image_id: str | None, info: dict[str, Any]
) -> ImageRecord:
    """``PUT /datastore/image``: add the uploaded image (id: ``image``, else the file's stem).
    The same image sent again (Slicer uploads before each save) is kept as it is.

    Raises:
        ConflictError: another image already has that id.
        DatastoreError: the image cannot be read or the id is not allowed.
    """
    suffix = known_suffix(upload.filename) or ".nii.gz"
    name = upload.filename[: -len(suffix)] if upload.filename.lower().endswith(suffix) else ""
    image_id = image_id or name or upload.filename
    if not image_id:
        raise RequestError("give the image id as ?image=ID (or a file name)")
    staged = upload.path.with_name(f"{upload.path.name}-image{suffix}")
    upload.path.replace(staged)
    try:
        existing = store.image(image_id)
    except ImageNotFound:
        return store.add_image(staged, image_id=image_id, info=info)
    stored = store.image_path(image_id)
    if stored.is_file() and _digest(stored) == _digest(staged):
        return existing
    raise ConflictError(
        f"image {image_id[:64]!r} is already in the datastore with other content; delete it first"
    )


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum(path: Path) -> str:
    """``SHA256:<hex>`` of a stored file (what Slicer compares before downloading again)."""
    return f"SHA256:{_digest(path)}"


def label_volume(
    store: LocalDatastore, image_id: str, upload: Upload, params: dict[str, Any], max_bytes: int
) -> Volume:
    """The label a client uploaded, on its image's grid with the datastore's label values:
    a raw ``.bin`` (uint8 in the image's shape, column fastest) takes the image's geometry; a
    label whose ``label_info`` names its segments is remapped by name to the datastore's values.

    Raises:
        ImageNotFound: no such image.
        DatastoreError: an unreadable label, a wrong size, or segment names the datastore lacks.
    """
    image = store.volume(image_id)
    if upload.filename.lower().endswith(".bin"):
        data = np.fromfile(upload.path, dtype=np.uint8)
        if data.size != int(np.prod(image.shape)):
            raise DatastoreError(
                f"image {image_id[:64]!r}: the .bin label has {data.size} voxels, the image "
                f"{int(np.prod(image.shape))} ({'x'.join(map(str, image.shape))})"
            )
        label = image.with_array(data.reshape(image.shape, order="F"))
    else:
        label, named_segments = _uploaded_label(image_id, image, upload, max_bytes)
        params = {"label_info": named_segments, **params}
    return remap_by_name(
        image_id, label, params.get("label_info"), adopted_names(store, params.get("label_info"))
    )


def _uploaded_label(
    image_id: str, image: Volume, upload: Upload, max_bytes: int
) -> tuple[Volume, list[dict[str, Any]] | None]:
    """An uploaded label file and, for a DICOM SEG (what OHIF saves), its segments' names: the
    SEG is read on the image's grid (it may hold only the frames its segments touch)."""
    from carina.io.dicom_seg import read_seg, segment_names, segmentation_of

    suffix = known_suffix(upload.filename) or ".nii.gz"
    named = upload.path.with_name(f"{upload.path.name}-label{suffix}")
    upload.path.replace(named)
    try:
        seg = segmentation_of(named)
        if seg is None:
            return load_volume(named, max_bytes=max_bytes), None
        segments = [{"name": n, "idx": v} for v, n in segment_names(seg).items()]
        return read_seg(named, reference=image), segments
    except ImageReadError as exc:
        raise DatastoreError(
            f"image {image_id[:64]!r}: the label cannot be read: {exc.reason}"
        ) from exc


def adopted_names(store: LocalDatastore, label_info: Any) -> dict[int, str]:
    """The datastore's label names; a datastore without any takes those of the first label
    that names its segments (``label_info``), so that later labels are checked against them."""
    names = store.label_names()
    if names or not isinstance(label_info, list):
        return names
    found = {
        entry["idx"]: str(entry.get("name"))
        for entry in label_info
        if isinstance(entry, dict)
        and isinstance(entry.get("idx"), int)
        and not isinstance(entry.get("idx"), bool)
        and 0 < entry["idx"] < 65536
        and str(entry.get("name", "")).lower() not in ("", "background")
    }
    if found:
        store.set_label_names(found)
    return store.label_names()


def remap_by_name(image_id: str, label: Volume, label_info: Any, names: dict[int, str]) -> Volume:
    """``label`` with its values changed from the client's segment numbers to the datastore's,
    matched by name (``label_info``: ``[{"name", "idx"}]`` as Slicer sends it). Unchanged when
    the client names nothing or the datastore has no names.

    Raises:
        DatastoreError: a segment name the datastore does not have.
    """
    if not names or not isinstance(label_info, list) or not label_info:
        return label
    by_name = {name.lower(): value for value, name in names.items()}
    array = np.asarray(label.array)
    out = np.zeros(array.shape, dtype=np.uint16 if max(names) > 255 else np.uint8)
    for entry in label_info:
        if not isinstance(entry, dict):
            raise DatastoreError(f"image {image_id[:64]!r}: label_info entries are objects")
        name = str(entry.get("name", ""))
        index = entry.get("idx", entry.get("id"))
        if not isinstance(index, int) or isinstance(index, bool):
            raise DatastoreError(f"image {image_id[:64]!r}: label_info {name!r} has no integer idx")
        if name.lower() == "background":
            continue
        if name.lower() not in by_name:
            known = ", ".join(n for _, n in sorted(names.items()))
            raise DatastoreError(
                f"image {image_id[:64]!r}: segment {name[:64]!r} is not a label of this "
                f"datastore ({known})"
            )
        out[array == index] = by_name[name.lower()]
    return label.with_array(out)


def image_file(store: LocalDatastore, image_id: str, scratch: Path) -> tuple[Path, str]:
    """The image's file to send and its file name (a DICOM series folder is zipped)."""
    record = store.image(image_id)
    path = store.image_path(image_id)
    if path.is_dir():
        target = scratch / "series.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
            for member in sorted(path.rglob("*")):
                if member.is_file():
                    archive.write(member, member.relative_to(path).as_posix())
        return target, record.name
    return path, record.name


def label_file(store: LocalDatastore, image_id: str, tag: str) -> tuple[Path, str]:
    """The latest ``tag`` label's file and a file name for it.

    Raises:
        NotFoundError: the image has no such label.
    """
    check_tag(tag)
    record = store.image(image_id)
    latest = store.latest_label(image_id, tag)
    if latest is None:
        raise NotFoundError(f"image {image_id[:64]!r} has no {tag!r} label")
    stem = (
        record.name[: -len(image_ext(record))]
        if record.name.endswith(image_ext(record))
        else record.name
    )
    return latest.path, f"{stem}.nii.gz"


def label_info(store: LocalDatastore, image_id: str, tag: str) -> dict[str, Any]:
    """The latest ``tag`` label's info (who, when, what the client sent)."""
    check_tag(tag)
    latest = store.latest_label(image_id, tag)
    if latest is None:
        raise NotFoundError(f"image {image_id[:64]!r} has no {tag!r} label")
    return {
        **latest.info,
        "version": latest.version,
        "user": latest.saved_by,
        "ts": int(latest.saved_at.timestamp()),
    }


def dataset_zip(store: LocalDatastore, scratch: Path) -> Path:
    """Every final label with its image, as the zip of an MSD dataset folder."""
    from carina.datastore import export_final_labels

    folder = export_final_labels(store, scratch / "dataset")
    target = scratch / "dataset.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for member in sorted(folder.rglob("*")):
            if member.is_file():
                archive.write(member, member.relative_to(folder).as_posix())
    return target


# -- active learning ------------------------------------------------------------------------------


def next_sample(
    store: LocalDatastore,
    registry: ModelRegistry,
    strategy: str,
    body: dict[str, Any],
    *,
    holder: str,
    device: str | None,
) -> dict[str, Any]:
    """``POST /activelearning/{strategy}``: the next image by ``strategy`` (``{}`` when every
    image is labelled), locked for ``holder`` for an hour so that another annotator is offered
    another one; ``holder``'s previous lock is released. No server path, no patient data.

    Raises:
        DatastoreError: an unknown strategy, or a model-based one without a model.
    """
    from carina.learning import STRATEGIES, next_image

    if strategy not in STRATEGIES:
        raise NotFoundError(f"no strategy {strategy[:64]!r}; choose one of {', '.join(STRATEGIES)}")
    model = None
    if strategy in ("uncertainty", "entropy"):
        model = scoring_model(registry, body.get("model"))
    for record in store.images():
        lock = record.info.get("lock")
        if isinstance(lock, dict) and lock.get("by") == holder:
            store.unlock(record.id)
    chosen = next_image(store, strategy, model=model, device=device)
    if chosen is None:
        return {}
    store.lock(chosen.id, by=holder)
    path = store.image_path(chosen.id)
    answer: dict[str, Any] = {"id": chosen.id, "name": chosen.name, "strategy": strategy}
    if path.is_file():
        answer["checksum"] = checksum(path)
    return answer


def scoring_model(registry: ModelRegistry, name: Any) -> Path:
    """The folder of the segmentation model that scores images: ``name``, else the first
    trainable one.

    Raises:
        NotFoundError: no such model, or no segmentation model installed.
    """
    candidates = [info for info in registry.models() if info.kind.guidance == Guidance.NONE]
    if isinstance(name, str) and name:
        candidates = [info for info in candidates if info.name == name]
    if not candidates:
        raise NotFoundError("no segmentation model to score the images with")
    return registry.folder / candidates[0].name
