"""Results as DICOM SEG through both APIs: AIAA ``result_extension=.dcm`` on an uploaded series and
on a session, MONAI Label ``output=dicom_seg``, ``carina infer --format dicom-seg``; each SEG
references the series and reads back equal to the label map; a NIfTI image gets a clear 400."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carina.cli.main import app
from carina.data import locate_sample
from carina.data.dicom_series import write_dicom_series
from carina.io import load_volume
from carina.io.dicom_seg import read_seg
from carina.server.app import create_app
from carina.settings import Settings
from tests.server.test_bad_input import error_of
from tests.servers import ADMIN_TOKEN

MODEL = "spine_ct_vertebrae"


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    settings = Settings(workspace=workspace, admin_token=ADMIN_TOKEN, preload_models=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The shipped spine CT as a DICOM series folder, and the same as a zip."""
    folder = tmp_path_factory.mktemp("series")
    write_dicom_series(load_volume(locate_sample("spine_ct_image")), folder)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return folder, packed.getvalue()


def label_map(client: TestClient, data: bytes, suffix: str) -> np.ndarray:
    """The model's NIfTI answer for the same upload: what the SEG must hold."""
    answer = client.post(
        f"/v1/segmentation?model={MODEL}&output=image",
        files={"datapoint": ("ct.zip", data)},
        data={"params": json.dumps({"result_extension": suffix})},
    )
    assert answer.status_code == 200, answer.text
    return answer.content  # type: ignore[no-any-return]


def check_seg(content: bytes, folder: Path, expected: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "answer.dcm"
    path.write_bytes(content)
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG"
    source = pydicom.dcmread(next(folder.iterdir()))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["L2", "L3", "L4"]
    back = read_seg(path, reference=load_volume(folder))
    assert np.array_equal(back.array, expected)


def test_aiaa_result_extension_dcm_on_an_upload_and_a_session(
    client: TestClient, series: tuple[Path, bytes], tmp_path: Path
) -> None:
    folder, data = series
    (tmp_path / "labels.nii.gz").write_bytes(label_map(client, data, ".nii.gz"))
    expected = load_volume(tmp_path / "labels.nii.gz").array
    assert expected.max() > 0
    check_seg(label_map(client, data, ".dcm"), folder, expected, tmp_path)

    created = client.put("/session/", files={"image": ("ct.zip", data)})
    assert created.status_code == 200, created.text
    session = created.json()["session_id"]
    answer = client.post(
        f"/v1/segmentation?model={MODEL}&session_id={session}&output=image",
        data={"params": json.dumps({"result_extension": ".dcm"})},
    )
    assert answer.status_code == 200, answer.text
    check_seg(answer.content, folder, expected, tmp_path)


def test_monai_label_output_dicom_seg(
    client: TestClient, series: tuple[Path, bytes], tmp_path: Path
) -> None:
    folder, data = series
    (tmp_path / "labels.nii.gz").write_bytes(label_map(client, data, ".nii.gz"))
    answer = client.post(
        f"/infer/{MODEL}?output=dicom_seg",
        files={"file": ("ct.zip", data)},
        data={"params": "{}"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert answer.status_code == 200, answer.text
    check_seg(answer.content, folder, load_volume(tmp_path / "labels.nii.gz").array, tmp_path)


def test_a_seg_of_an_image_that_is_not_dicom_is_a_clear_400(client: TestClient) -> None:
    nifti = Path(locate_sample("spine_ct_image")).read_bytes()
    answer = client.post(
        f"/v1/segmentation?model={MODEL}",
        files={"datapoint": ("ct.nii.gz", nifti)},
        data={"params": json.dumps({"result_extension": ".dcm"})},
    )
    status, _, message = error_of(answer)
    assert status == 400 and "DICOM series" in message, message


def test_carina_infer_format_dicom_seg(
    series: tuple[Path, bytes], workspace: Path, tmp_path: Path
) -> None:
    folder, _ = series
    archive = workspace / "models" / MODEL
    runner = CliRunner()
    done = runner.invoke(
        app, ["infer", str(archive), str(folder), "-o", str(tmp_path), "--format", "dicom-seg"]
    )
    assert done.exit_code == 0, done.output
    seg = next(tmp_path.glob("*_seg.dcm"))
    plain = runner.invoke(app, ["infer", str(archive), str(folder), "-o", str(tmp_path / "n")])
    assert plain.exit_code == 0, plain.output
    expected = load_volume(next((tmp_path / "n").glob("*_seg.nii.gz"))).array
    assert np.array_equal(read_seg(seg, reference=load_volume(folder)).array, expected)
    refused = runner.invoke(
        app,
        ["infer", str(archive), str(locate_sample("spine_ct_image")), "-o", str(tmp_path),
         "--format", "dicom-seg"],
    )  # fmt: skip
    assert refused.exit_code != 0 and "DICOM series" in refused.output + str(refused.exception)
