"""The datastore on the workspace: import, versioned labels, status, next image, export, stats, and
bad input refused with the image named and nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from carina.datastore import (
    FINAL,
    ORIGINAL,
    ImageStatus,
    LocalDatastore,
    datastore_stats,
    export_final_labels,
    import_folder,
    open_datastore,
)
from carina.errors import DatastoreError, ImageNotFound
from carina.io import Volume, load_volume, save_volume
from carina.learning import next_image


def snapshot(store: LocalDatastore) -> dict[str, int]:
    return {
        str(p.relative_to(store.root)): p.stat().st_size
        for p in sorted(store.root.rglob("*"))
        if p.is_file()
    }


def test_import_of_an_exported_dataset_keeps_images_labels_and_names(
    store: LocalDatastore, spine_export: Path
) -> None:
    report = import_folder(store, spine_export)
    assert sorted(report.images) == ["spine_ct_heldout", "spine_ct_train"]
    assert sorted(report.labels) == sorted(report.images) and report.skipped == []
    assert store.label_names() == {1: "L2", 2: "L3", 3: "L4"}
    record = store.image("spine_ct_train")
    assert record.status == ImageStatus.LABELLED and record.name == "spine_ct_train.nii.gz"
    truth = load_volume(spine_export / "labelsTr" / "spine_ct_train.nii.gz")
    saved = load_volume(record.labels[FINAL].path)
    assert np.array_equal(saved.array, truth.array) and np.allclose(saved.affine, truth.affine)
    again = import_folder(store, spine_export)
    assert again.images == [] and len(again.skipped) == 2  # already there: skipped, not replaced


def test_labels_are_versions_and_status_follows(store: LocalDatastore, spine_export: Path) -> None:
    record = store.add_image(spine_export / "imagesTr" / "spine_ct_train.nii.gz", image_id="a b/c")
    assert (
        record.status == ImageStatus.UNLABELLED and "/" not in store.image_path("a b/c").parent.name
    )
    label = spine_export / "labelsTr" / "spine_ct_train.nii.gz"
    first = store.save_label("a b/c", label, tag=ORIGINAL, saved_by="model")
    second = store.save_label("a b/c", label, tag=FINAL, saved_by="ann", info={"time_spent": 42})
    third = store.save_label("a b/c", label, tag=FINAL, saved_by="ann")
    assert [v.version for v in store.label_versions("a b/c", FINAL)] == [
        second.version,
        third.version,
    ]
    assert first.path.is_file() and second.path.is_file()
    assert store.image("a b/c").status == ImageStatus.LABELLED
    assert store.approve("a b/c", by="reviewer").status == ImageStatus.APPROVED
    store.save_label("a b/c", label, tag=FINAL, saved_by="ann")
    assert store.image("a b/c").status == ImageStatus.LABELLED  # a newer final needs approval
    stats = datastore_stats(store)
    assert stats["by_status"] == {"labelled": 1} and stats["mean_dice_original_final"] == 1.0


def test_next_image_skips_labelled_and_locked_images(
    store: LocalDatastore, spine_export: Path
) -> None:
    for name in ("spine_ct_train", "spine_ct_heldout"):
        store.add_image(spine_export / "imagesTr" / f"{name}.nii.gz")
    assert next_image(store, "first").id == "spine_ct_train"
    store.lock("spine_ct_train", by="ann")
    with pytest.raises(DatastoreError, match="locked by 'ann'"):
        store.lock("spine_ct_train", by="other")
    assert next_image(store, "first").id == "spine_ct_heldout"
    store.save_label(
        "spine_ct_heldout", spine_export / "labelsTr" / "spine_ct_heldout.nii.gz", saved_by="a"
    )
    assert next_image(store, "random") is None
    with pytest.raises(DatastoreError, match="unknown strategy"):
        next_image(store, "best")


def test_export_and_reimport_round_trip(
    store: LocalDatastore, spine_export: Path, tmp_path: Path
) -> None:
    import_folder(store, spine_export)
    manifest = export_final_labels(store, tmp_path / "out")
    document = json.loads(manifest.read_text())
    assert document["numTraining"] == 2 and document["labels"]["1"] == "L2"
    other = open_datastore(tmp_path / "other", max_bytes=2**30)
    import_folder(other, tmp_path / "out")
    for entry in document["training"]:
        stem = Path(entry["image"]).name.removesuffix(".nii.gz")
        exported = load_volume(other.image(stem).labels[FINAL].path).array
        assert np.array_equal(
            exported, load_volume(store.image(entry["id"]).labels[FINAL].path).array
        )


def test_bad_input_is_refused_with_the_image_named_and_nothing_changed(
    store: LocalDatastore, spine_export: Path, tmp_path: Path
) -> None:
    import_folder(store, spine_export)
    image = load_volume(spine_export / "imagesTr" / "spine_ct_train.nii.gz")
    shifted = tmp_path / "shifted.nii.gz"
    save_volume(
        Volume(np.zeros(image.shape, np.uint8), image.affine @ np.diag([2, 1, 1, 1])), shifted
    )
    wrong_values = tmp_path / "values.nii.gz"
    save_volume(image.with_array(np.full(image.shape, 9, np.uint8)), wrong_values)
    unreadable = tmp_path / "broken.nii.gz"
    unreadable.write_bytes(b"\x1f\x8b not a gzip")
    before = snapshot(store)
    cases = {
        "grid": (lambda: store.save_label("spine_ct_train", shifted, saved_by="x"), "grid"),
        "values": (lambda: store.save_label("spine_ct_train", wrong_values, saved_by="x"), "[9]"),
        "label": (
            lambda: store.save_label("spine_ct_train", unreadable, saved_by="x"),
            "cannot be read",
        ),
        "image": (lambda: store.add_image(unreadable, image_id="broken"), "broken"),
        "tag": (
            lambda: store.save_label("spine_ct_train", shifted, tag="../x", saved_by="x"),
            "tag",
        ),
    }
    for what, (call, expected) in cases.items():
        with pytest.raises(DatastoreError) as caught:
            call()
        assert expected in str(caught.value), what
        assert ("broken" if what == "image" else "spine_ct_train") in str(caught.value), what
    assert snapshot(store) == before
    with pytest.raises(ImageNotFound):
        store.image("nope")


SAVER = """
import sys
from pathlib import Path
from carina.datastore import open_datastore
store = open_datastore(Path(sys.argv[1]), max_bytes=2**30)
store.save_label("spine_ct_train", Path(sys.argv[2]), saved_by=sys.argv[3])
"""


def test_two_processes_saving_at_once_both_keep_their_version(
    store: LocalDatastore, spine_export: Path
) -> None:
    store.add_image(spine_export / "imagesTr" / "spine_ct_train.nii.gz")
    label = spine_export / "labelsTr" / "spine_ct_train.nii.gz"
    workspace = store.root.parent
    savers = [
        subprocess.Popen([sys.executable, "-c", SAVER, str(workspace), str(label), who])
        for who in ("one", "two")
    ]
    assert [p.wait(120) for p in savers] == [0, 0]
    versions = store.label_versions("spine_ct_train", FINAL)
    assert sorted(v.saved_by for v in versions) == ["one", "two"]


def test_two_replicas_see_each_others_changes_at_once(
    store: LocalDatastore, spine_export: Path
) -> None:
    other = open_datastore(store.root.parent, max_bytes=2**30)  # another process's view
    store.add_image(spine_export / "imagesTr" / "spine_ct_train.nii.gz")
    assert [r.id for r in other.images()] == ["spine_ct_train"]
    other.save_label(
        "spine_ct_train", spine_export / "labelsTr" / "spine_ct_train.nii.gz", saved_by="b"
    )
    assert store.image("spine_ct_train").status == ImageStatus.LABELLED
    other.delete_image("spine_ct_train")
    with pytest.raises(ImageNotFound):
        store.image("spine_ct_train")
