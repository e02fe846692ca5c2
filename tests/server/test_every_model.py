"""Every shipped and test model, given a corrupt image and images it was not made for (a CT model
on MR, a 2D image on a 3D model), answers a result or a 4xx that names the problem, through both
APIs: never a 500. Broken Bundles (an unknown component, a reference to nothing, a step that
raises on some images) are named with their file and key or step; the other models keep serving."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from carina.data import locate_sample
from carina.server import create_app
from carina.settings import Settings
from carina.zoo import install_archive
from carina.zoo.index import load_index
from tests.engine.zoo_bundles import deepedit_bundle, segmentation_bundle, swin_bundle

#: A transform that refuses images whose intensities are not CT's (an MR image).
HU_CHECK = '''

class RequireHounsfieldd(MapTransform):
    """Refuse an image that is not a CT (intensities below -500 HU somewhere)."""

    def __init__(self, keys):
        super().__init__(keys)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            if float(d[key].min()) > -500:
                raise ValueError("this bundle segments CT: the image has no air below -500 HU")
        return d
'''


def edit_inference(root: Path, change: object) -> Path:
    path = root / "configs" / "inference.json"
    content = json.loads(path.read_text())
    change(content)  # type: ignore[operator]
    path.write_text(json.dumps(content))
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("every_model")
    for name in sorted(load_index()):
        install_archive(name, folder)
    models = folder / "models"
    segmentation_bundle(models / "bundle_seg")
    deepedit_bundle(models / "bundle_deepedit")
    swin_bundle(models / "bundle_swin")
    unknown = segmentation_bundle(models / "broken_target")
    edit_inference(
        unknown, lambda c: c["preprocessing"]["transforms"][2].update(_target_="Orientationdd")
    )
    dangling = segmentation_bundle(models / "broken_reference")
    edit_inference(dangling, lambda c: c["inferer"].update(roi_size="@no_such_id"))
    ct_only = segmentation_bundle(models / "ct_only")
    with (ct_only / "scripts" / "transforms.py").open("a") as scripts:
        scripts.write(HU_CHECK)
    edit_inference(
        ct_only,
        lambda c: c["preprocessing"]["transforms"].insert(
            2, {"_target_": "scripts.transforms.RequireHounsfieldd", "keys": "@image_key"}
        ),
    )
    return folder


@pytest.fixture(scope="module")
def client(workspace: Path) -> Iterator[TestClient]:
    settings = Settings(workspace=workspace, preload_models=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def images(tmp: Path) -> dict[str, bytes]:
    """A corrupt file, an MR image, a 2D image (all named .nii.gz)."""
    flat = nib.Nifti1Image(
        np.random.default_rng(0).normal(size=(48, 40)).astype(np.float32), np.eye(4)
    )
    return {
        "corrupt": b"\x1f\x8b" + bytes(range(256)) * 8,
        "mr": locate_sample("spine_mr_image").read_bytes(),
        "2d": gzip.compress(flat.to_bytes()),
    }


def guidance(image: str) -> dict[str, object]:
    """Clicks and extreme points inside each image (a DExtr3D model needs six)."""
    shape = (48, 40, 1) if image == "2d" else nib.load(locate_sample("spine_mr_image")).shape[:3]
    centre = [n // 2 for n in shape]
    extremes = [
        [max(0, c - d) if i == axis else c for i, c in enumerate(centre)]
        for axis in range(3)
        for d in (4, -4)
    ]
    return {"foreground": [centre], "background": [], "points": extremes, "current_point": centre}


MODELS = [
    *sorted(load_index()), "bundle_seg", "bundle_deepedit", "bundle_swin",
]  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
def test_no_model_answers_500_on_images_it_was_not_made_for(
    client: TestClient, model: str, tmp_path: Path
) -> None:
    seen = {}
    for name, data in images(tmp_path).items():
        params = json.dumps(guidance(name))
        aiaa = client.post(
            f"/v1/inference?model={model}",
            files={"datapoint": ("image.nii.gz", data)},
            data={"params": params},
        )
        label = client.post(
            f"/infer/{model}",
            params={"output": "image"},
            files={"file": ("image.nii.gz", data)},
            data={"params": params},
        )
        for api, answer in (("aiaa", aiaa), ("monailabel", label)):
            seen[(name, api)] = answer.status_code
            assert answer.status_code < 500, f"{model} {name} {api}: {answer.text[:400]}"
            if answer.status_code >= 400:
                body = answer.json()
                message = json.dumps(body)
                assert "Traceback" not in message
    assert seen[("corrupt", "aiaa")] == 400 and seen[("corrupt", "monailabel")] == 400
    if model == "deepgrow_2d":  # a 2D model works on a planar image (its clicks: [i, j, 0])
        assert seen[("2d", "aiaa")] == 200
    else:
        assert seen[("2d", "aiaa")] >= 400, "a 2D image is not a 3D model's input"


def test_broken_bundles_are_named_and_the_others_serve(client: TestClient) -> None:
    ct = locate_sample("spine_ct_image").read_bytes()
    mr = locate_sample("spine_mr_image").read_bytes()

    def segment(model: str, data: bytes) -> tuple[int, str]:
        answer = client.post(
            f"/v1/segmentation?model={model}", files={"image": ("image.nii.gz", data)}
        )
        return answer.status_code, answer.text

    status, text = segment("broken_target", ct)
    assert status == 400 and "inference.json: preprocessing" in text
    assert "unknown component 'Orientationdd' (did you mean 'Orientationd'?)" in text
    status, text = segment("broken_reference", ct)
    assert status == 400 and "inference.json: inferer" in text and "no_such_id" in text
    assert segment("ct_only", ct)[0] == 200
    status, text = segment("ct_only", mr)
    assert status == 422 and "ct_only" in text and "RequireHounsfieldd" in text
    assert "no air below -500 HU" in text
    assert segment("bundle_seg", ct)[0] == 200
