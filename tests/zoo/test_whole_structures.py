"""Whole structures from one click, through the AIAA API of a real server: one DeepGrow 3D click at
the deepest voxel of each whole vertebra (both halves) of the shipped CT (L2-L4) and MR (C5-C7).

This measures coverage, not generalisation: a whole vertebra includes the half that trained the
model. That the model generalises is what the held-out tests (``test_interactive_models.py``)
measure; here, that one click gives the whole structure (its processes, both sides), which the
window the model sees and its training on whole vertebrae made from half ones decide.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from carina.client import Client
from carina.data import locate_sample
from carina.interactive.guidance import deepest_point
from carina.io import load_volume
from carina.zoo import install_archive, load_index
from tests.servers import ADMIN_TOKEN, start_server
from tests.zoo.conftest import dice

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("deepgrow_3d" not in load_index(), reason="deepgrow_3d is not in the zoo"),
]

#: image sample, mask sample, vertebra label values (TPTBox numbering: 21-23 = L2-L4, 5-7 = C5-C7)
CASES = {
    "spine_ct": ("spine_ct_image", "spine_ct_vertebrae", (21, 22, 23)),
    "spine_mr": ("spine_mr_image", "spine_mr_vertebrae", (5, 6, 7)),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    workspace = tmp_path_factory.mktemp("workspace")
    install_archive("deepgrow_3d", workspace)
    running = start_server(workspace, env={"CARINA_DEVICE": "cpu", "CARINA_GRACE_PERIOD": "1"})
    try:
        with Client(running.url, admin_token=ADMIN_TOKEN) as opened:
            yield opened
    finally:
        running.stop()


#: The one vertebra still short of 0.80: MR C5 (0.754), cut by the field of view at the top of the
#: MR, whose spinous process the model misses. Strict: the test says so when it starts passing.
SHORT = {("spine_mr", 5): "MR C5 reaches Dice 0.754 of the 0.80 asked (its spinous process)"}


@pytest.mark.parametrize(
    ("dataset", "value"),
    [
        pytest.param(
            dataset,
            value,
            marks=[pytest.mark.xfail(strict=True, reason=SHORT[(dataset, value)])]
            if (dataset, value) in SHORT
            else [],
        )
        for dataset, (_, _, values) in sorted(CASES.items())
        for value in values
    ],
)
def test_one_click_gives_the_whole_vertebra(
    client: Client, dataset: str, value: int, tmp_path: Path
) -> None:
    image_sample, mask_sample, _ = CASES[dataset]
    image = Path(locate_sample(image_sample))
    truth = load_volume(locate_sample(mask_sample)).array == value
    output = tmp_path / f"{value}.nii.gz"
    client.deepgrow("deepgrow_3d", image, [deepest_point(truth)], [], output=output)
    mask = load_volume(output).array > 0
    assert mask.shape == truth.shape
    score = dice(mask, truth)
    assert score >= 0.80, f"{dataset} label {value}: Dice {score:.3f}"
