"""The slow acceptance run of the learning loop: from an untrained copy of ``spine_vertebra``,
three rounds of "save final labels for more images, train, promote" on the shipped spine CT and MR;
the served model's validation Dice rises every round and ends at 0.7 or more."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from carina.datastore import open_datastore
from carina.io import Volume, load_volume, save_volume
from carina.learning import history, train_from_datastore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "archives" / "spine_vertebra"


def halves_of(image: Volume, label: Volume, folder: Path, stem: str) -> list[tuple[Path, Path]]:
    """The training half cut in two along its longest axis (two more images to annotate)."""
    axis = max(range(3), key=lambda a: image.shape[a])
    middle = image.shape[axis] // 2
    pieces = []
    for part, (start, stop) in enumerate(((0, middle + 8), (middle - 8, image.shape[axis]))):
        for kind, volume in (("image", image), ("label", label)):
            save_volume(volume.crop(axis, start, stop), folder / f"{stem}_{part}_{kind}.nii.gz")
        pieces.append(
            (folder / f"{stem}_{part}_image.nii.gz", folder / f"{stem}_{part}_label.nii.gz")
        )
    return pieces


@pytest.mark.slow
def test_three_rounds_raise_the_validation_dice(tmp_path: Path) -> None:
    from carina.data.msd import export_dataset

    workspace = tmp_path / "ws"
    store = open_datastore(workspace, max_bytes=2**30)
    pieces: dict[str, tuple[str, Path]] = {}
    for modality in ("ct", "mr"):
        data = tmp_path / modality
        export_dataset(f"spine_{modality}_vertebra", data)
        heldout = f"spine_{modality}_vertebra_heldout"
        store.add_image(data / "imagesTr" / f"{heldout}.nii.gz")
        store.set_split(heldout, "validation")
        store.save_label(heldout, data / "labelsTr" / f"{heldout}.nii.gz", saved_by="expert")
        train = f"spine_{modality}_vertebra_train"
        image = load_volume(data / "imagesTr" / f"{train}.nii.gz")
        label = load_volume(data / "labelsTr" / f"{train}.nii.gz")
        for part, (image_file, label_file) in enumerate(halves_of(image, label, data, train)):
            image_id = f"{train}_{part}"
            store.add_image(image_file, image_id=image_id)
            store.set_split(image_id, "training")
            pieces[f"{modality}{part}"] = (image_id, label_file)
    archive = tmp_path / "spine_vertebra"
    shutil.copytree(EXAMPLE, archive, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    config = json.loads((archive / "config" / "config_train.json").read_text())
    config.update(epochs=4, iterations_per_epoch=40)
    (archive / "config" / "config_train.json").write_text(json.dumps(config))
    served: list[float] = []
    rounds = [["ct0"], ["mr0"], ["ct1", "mr1"]]  # more annotated images each round
    for batch in ([pieces[key] for key in keys] for keys in rounds):
        for image_id, label_file in batch:
            store.save_label(image_id, label_file, saved_by="annotator")
        result = train_from_datastore(
            archive, workspace, max_bytes=2**30, data_dir=tmp_path / "data", device="cpu"
        )
        served.append(result.decision.candidate_dice if result.decision.promoted else served[-1])
    print(
        json.dumps(
            {
                "served_dice_by_round": served,
                "history": history(workspace / "models", "spine_vertebra"),
            }
        )
    )
    assert served[0] < served[1] < served[2] and served[2] >= 0.7, served
