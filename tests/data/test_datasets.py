"""The shipped datasets: label values, the held-out split, and the MSD export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carina.data import DATASETS, export_dataset, get_dataset, locate_sample, split_heldout
from carina.errors import DatasetError
from carina.io import load_volume


@pytest.mark.parametrize("name", list(DATASETS))
def test_export_aligns_labels_with_images_voxel_for_voxel(tmp_path: Path, name: str) -> None:
    spec = get_dataset(name)
    manifest = export_dataset(name, tmp_path)
    document = json.loads(manifest.read_text())
    assert document["labels"] == {str(k): v for k, v in spec.labels.items()}
    assert len(document["training"]) == len(document["validation"]) == 1
    full = spec.build()
    axis = document["split"]["axis"]
    assert full.label.axis_codes[axis] in "LR"
    parts = []
    for entry in document["training"] + document["validation"]:
        image = load_volume(tmp_path / entry["image"])
        label = load_volume(tmp_path / entry["label"])
        assert image.shape == label.shape
        np.testing.assert_array_equal(image.affine, label.affine)
        # Find where this half sits in the full volume and compare voxel for voxel.
        corner = np.linalg.solve(full.image.affine, image.affine @ [0, 0, 0, 1])
        start = round(float(corner[axis]))
        index = [slice(None)] * 3
        index[axis] = slice(start, start + image.shape[axis])
        np.testing.assert_array_equal(label.array, full.label.array[tuple(index)])
        np.testing.assert_allclose(image.array, full.image.array[tuple(index)], rtol=1e-6)
        assert set(np.unique(label.array)) == set(spec.labels)
        parts.append((start, image.shape[axis]))
    (train_start, train_size), (heldout_start, heldout_size) = parts
    assert train_start == 0 and heldout_start == train_size == document["split"]["index"]
    assert train_size + heldout_size == full.image.shape[axis]


def test_spine_ct_label_values_follow_the_source_mask() -> None:
    case = get_dataset("spine_ct").build()
    source = load_volume(locate_sample("spine_ct_vertebrae")).array
    for value, original in ((1, 21), (2, 22), (3, 23)):
        np.testing.assert_array_equal(case.label.array == value, source == original)
    assert case.image.array.dtype == np.int16 and case.image.array.min() < -900


def test_spine_mr_maps_discs_and_endplates() -> None:
    source = load_volume(locate_sample("spine_mr_vertebrae")).array
    full = get_dataset("spine_mr").build().label.array
    np.testing.assert_array_equal(full == 4, np.isin(source, [105, 205]))
    np.testing.assert_array_equal(full == 3, np.isin(source, [7, 207]))
    vertebra = get_dataset("spine_mr_vertebra").build().label.array
    np.testing.assert_array_equal(vertebra == 1, np.isin(source, [5, 6, 7, 207]))


def test_brain_tissue_rules_at_two_millimetres() -> None:
    case = get_dataset("brain_mr").build()
    assert case.image.spacing == pytest.approx((2.0, 2.0, 2.0))
    t1 = load_volume(locate_sample("mni152_t1"))
    # The 2 mm voxel (10, 20, 30) is the mean of the 1 mm block starting at (20, 40, 60).
    block = t1.array[20:22, 40:42, 60:62].astype(np.float64).mean()
    assert case.image.array[10, 20, 30] == pytest.approx(block, rel=1e-6)
    centre = case.image.affine @ [10, 20, 30, 1]
    np.testing.assert_allclose(centre, t1.affine @ [20.5, 40.5, 60.5, 1])
    gm = load_volume(locate_sample("mni152_gm")).array[:196, :232, :188].astype(float)
    wm = load_volume(locate_sample("mni152_wm")).array[:196, :232, :188].astype(float)
    gm2 = gm.reshape(98, 2, 116, 2, 94, 2).mean(axis=(1, 3, 5)) / 255
    wm2 = wm.reshape(98, 2, 116, 2, 94, 2).mean(axis=(1, 3, 5)) / 255
    np.testing.assert_array_equal(case.label.array == 1, (gm2 >= 0.5) & (gm2 >= wm2))
    np.testing.assert_array_equal(case.label.array == 2, (wm2 >= 0.5) & (wm2 > gm2))


def test_split_is_at_the_middle_plane_of_the_left_right_axis() -> None:
    spec = get_dataset("spine_ct")
    split = split_heldout(spec.build(), spec.labels)
    assert (split.axis, split.axis_code, split.index) == (2, "R", 36)
    assert split.train.image.shape == (73, 47, 36) and split.heldout.image.shape == (73, 47, 37)


def test_export_refuses_a_folder_holding_another_dataset(tmp_path: Path) -> None:
    export_dataset("spine_ct_vertebra", tmp_path)
    before = (tmp_path / "dataset.json").read_bytes()
    with pytest.raises(DatasetError, match="already holds 'spine_ct_vertebra'"):
        export_dataset("spine_mr_vertebra", tmp_path)
    assert (tmp_path / "dataset.json").read_bytes() == before
    export_dataset("spine_ct_vertebra", tmp_path)  # the same dataset again is fine


def test_unknown_names() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'liver'"):
        get_dataset("liver")
    with pytest.raises(DatasetError, match="unknown sample"):
        locate_sample("liver_ct")
