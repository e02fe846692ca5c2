"""The PHI guard at each entry point: identified DICOM (and NIfTI, NRRD, names) refused with 422
naming the attributes, never their values; a de-identified series accepted; ``deid-on-ingest``
keeps only the de-identified copy; ``warn`` takes it; every outcome audited without values."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import pydicom
import pytest
from fastapi.testclient import TestClient

from carina.data import locate_sample
from carina.data.dicom_series import write_dicom_series
from carina.io import load_volume
from carina.server.app import create_app
from carina.settings import Settings
from tests.servers import ADMIN_TOKEN

MODEL = "spine_ct_vertebrae"
NAME, MRN = "Doe^Jane", "88765432"


def zipped(folder: Path) -> bytes:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return packed.getvalue()


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """The shipped CT as a de-identified series and as an identified one (zips)."""
    clean = tmp_path_factory.mktemp("clean")
    write_dicom_series(load_volume(locate_sample("spine_ct_image")), clean)
    identified = tmp_path_factory.mktemp("identified")
    for path in sorted(clean.iterdir()):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, MRN, "19610412"
        ds.InstitutionName = "St Elsewhere Hospital"
        del ds.PatientIdentityRemoved
        ds.save_as(identified / path.name)
    return zipped(clean), zipped(identified)


def app_client(workspace: Path, **settings: object) -> TestClient:
    config = Settings(
        workspace=workspace, admin_token=ADMIN_TOKEN, preload_models=False, **settings
    )  # type: ignore[arg-type]
    return TestClient(create_app(config), raise_server_exceptions=False)


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    with app_client(workspace) as test_client:
        yield test_client


def audit_lines(workspace: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in (workspace / "audit").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]


def refused(answer: object, *tags: str) -> str:
    assert answer.status_code == 422, answer.text  # type: ignore[attr-defined]
    text = answer.text  # type: ignore[attr-defined]
    for tag in tags:
        assert tag in text
    assert "Doe" not in text and MRN not in text and "Elsewhere" not in text
    assert "carina deid" in text
    return str(text)


def test_identified_dicom_is_refused_at_every_entry_point(
    client: TestClient, series: tuple[bytes, bytes], workspace: Path
) -> None:
    _, identified = series
    part = ("series.zip", identified)
    refused(
        client.post(f"/v1/segmentation?model={MODEL}", files={"datapoint": part}),
        "PatientName",
        "PatientID",
        "PatientIdentityRemoved",
    )
    refused(client.put("/session/", files={"image": part}), "PatientName")
    refused(client.post(f"/infer/{MODEL}", files={"file": part}), "InstitutionName")
    refused(client.put("/datastore/?image=case", files={"file": part}), "PatientBirthDate")
    assert client.get("/datastore/?output=all").json()["objects"] == {}
    events = [e for e in audit_lines(workspace) if e["action"] == "phi_refused"]
    assert len(events) == 4
    assert "PatientName" in json.dumps(events) and "Doe" not in json.dumps(events)


def test_a_deidentified_series_is_accepted(client: TestClient, series: tuple[bytes, bytes]) -> None:
    clean, _ = series
    answer = client.put("/datastore/?image=case", files={"file": ("series.zip", clean)})
    assert answer.status_code == 200, answer.text
    answer = client.post(f"/infer/{MODEL}?image=case&output=json")
    assert answer.status_code == 200, answer.text


def test_labels_nifti_nrrd_and_names_are_looked_at(
    client: TestClient, series: tuple[bytes, bytes], tmp_path: Path
) -> None:
    clean, _ = series
    assert client.put("/datastore/?image=case", files={"file": ("s.zip", clean)}).status_code == 200
    label = nib.load(locate_sample("spine_ct_vertebrae"))
    label.header["descrip"] = f"MRN {MRN}".encode()
    nib.save(label, tmp_path / "label.nii.gz")
    part = ("label.nii.gz", (tmp_path / "label.nii.gz").read_bytes())
    refused(client.put("/datastore/label?image=case", files={"label": part}), "NIfTI descrip")
    nrrd = b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 1\nencoding: raw\n"
    nrrd += f"PatientName:={NAME}\n\n".encode() + b"\0"
    refused(client.put("/datastore/?image=other", files={"file": ("x.nrrd", nrrd)}), "header")
    image = locate_sample("spine_ct_image").read_bytes()
    refused(
        client.put("/datastore/?image=Doe^Jane", files={"file": ("ct.nii.gz", image)}),
        "image id",
    )
    refused(
        client.put("/datastore/?image=ok", files={"file": ("Doe^Jane.nii.gz", image)}),
        "file name",
    )


def test_deid_on_ingest_keeps_only_the_deidentified_copy(
    workspace: Path, series: tuple[bytes, bytes]
) -> None:
    _, identified = series
    with app_client(workspace, phi_guard="deid-on-ingest") as client:
        answer = client.put("/datastore/?image=case", files={"file": ("s.zip", identified)})
        assert answer.status_code == 200, answer.text
        refused(
            client.put("/datastore/?image=Doe^Jane", files={"file": ("s.zip", identified)}),
            "image id",
        )
    stored = list((workspace / "datastore" / "images").rglob("image.zip"))
    assert len(stored) == 1
    data = stored[0].read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [archive.read(name) for name in archive.namelist()]
    assert members and all(b"Doe" not in m and MRN.encode() not in m for m in members)
    first = pydicom.dcmread(io.BytesIO(members[0]))
    assert first.PatientIdentityRemoved == "YES"
    key = workspace / "secrets" / "deid.key"
    assert key.is_file() and key.stat().st_mode & 0o077 == 0
    events = [e for e in audit_lines(workspace) if e["action"] == "phi_deidentified"]
    assert events and "Doe" not in json.dumps(events)


def test_warn_takes_it_and_audits(workspace: Path, series: tuple[bytes, bytes]) -> None:
    _, identified = series
    with app_client(workspace, phi_guard="warn") as client:
        answer = client.put("/datastore/?image=case", files={"file": ("s.zip", identified)})
        assert answer.status_code == 200, answer.text
    events = [e for e in audit_lines(workspace) if e["action"] == "phi_warned"]
    assert len(events) == 1 and "PatientName" in json.dumps(events)
    with app_client(workspace, phi_allow=["PatientName"]) as client:
        text = refused(client.post(f"/infer/{MODEL}", files={"file": ("s.zip", identified)}))
        assert "PatientName" not in text and "PatientID" in text


def test_an_admin_may_let_one_request_through_with_a_reason(
    workspace: Path, series: tuple[bytes, bytes]
) -> None:
    from carina.auth import Role, UserStore

    _, identified = series
    UserStore(workspace).add("ann", "a long test password", [Role.ANNOTATOR])
    part = {"file": ("s.zip", identified)}
    override = {"X-Carina-PHI-Override": "IRB 2026-114: consented research scan"}
    with app_client(workspace) as client:
        token = client.post(
            "/auth/token", data={"username": "ann", "password": "a long test password"}
        ).json()["access_token"]
        annotator = {**override, "Authorization": f"Bearer {token}"}
        answer = client.post(f"/infer/{MODEL}?output=json", files=part, headers=annotator)
        assert answer.status_code == 403, answer.text
        admin = {**override, "Authorization": f"Bearer {ADMIN_TOKEN}"}
        answer = client.post(f"/infer/{MODEL}?output=json", files=part, headers=admin)
        assert answer.status_code == 200, answer.text
    events = [e for e in audit_lines(workspace) if e["action"] == "phi_override"]
    assert len(events) == 1 and "IRB 2026-114" in json.dumps(events)
    assert "PatientName" in json.dumps(events) and "Doe" not in json.dumps(events)
