"""A DICOMweb datastore on a real Orthanc holding the shipped CT: Carina lists it by its
SeriesInstanceUID, fetches it once into the shared cache, segments it through the AIAA and MONAI
Label APIs as DICOM SEG, stores the saved label in the PACS with STOW-RS, QIDO finds it and it reads
back equal to the label map; a PACS that is down gives 502 and keeps no half-saved label."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from carina.data import locate_sample
from carina.data.dicom_series import write_dicom_series
from carina.datastore import DicomwebDatastore, open_datastore, set_datastore_source
from carina.errors import ConfigError, DatastoreError, ImageNotFound
from carina.io import load_volume
from carina.io.dicom_seg import read_seg
from carina.io.dicomweb import DicomwebAuth, DicomwebClient
from carina.learning.training_set import write_training_set
from carina.server.app import create_app
from carina.settings import Settings
from tests.orthanc import PASSWORD, USER, Orthanc, running_orthanc
from tests.servers import ADMIN_TOKEN, free_port

pytestmark = pytest.mark.integration
MODEL = "spine_ct_vertebrae"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, Path]]:
    """Orthanc holding the shipped CT as a series (the folder it was written from)."""
    folder = tmp_path_factory.mktemp("series")
    write_dicom_series(load_volume(locate_sample("spine_ct_image")), folder)
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as orthanc:
        with DicomwebClient(orthanc.url, auth=DicomwebAuth(USER, PASSWORD)) as client:
            client.store(sorted(folder.iterdir()))
        yield orthanc, folder


def settings_for(workspace: Path, url: str) -> Settings:
    return Settings(
        workspace=workspace,
        admin_token=ADMIN_TOKEN,
        preload_models=False,
        datastore=f"dicomweb+{url}",
        dicomweb_user=USER,
        dicomweb_password=PASSWORD,  # type: ignore[arg-type]
        dicomweb_timeout=5,
    )


@pytest.fixture
def client(workspace: Path, pacs: tuple[Orthanc, Path]) -> Iterator[TestClient]:
    settings = settings_for(workspace, pacs[0].url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def series_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def check_stored_seg(
    orthanc: Orthanc, folder: Path, expected: np.ndarray, tmp_path: Path, seg_series: str
) -> None:
    """QIDO finds the SEG series ``seg_series`` in the series' study; it references the series
    and reads back equal to ``expected``."""
    source = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    study = source.StudyInstanceUID
    with DicomwebClient(orthanc.url, auth=DicomwebAuth(USER, PASSWORD)) as pacs:
        segs = pacs.search_series(study, Modality="SEG", SeriesInstanceUID=seg_series)
        assert [s.SeriesInstanceUID for s in segs] == [seg_series]
        data = pacs.retrieve_series_files(study, seg_series)
    (tmp_path / "stored.dcm").write_bytes(data[0])
    stored = pydicom.dcmread(tmp_path / "stored.dcm")
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert [s.SegmentLabel for s in stored.SegmentSequence] == ["L2", "L3", "L4"]
    back = read_seg(tmp_path / "stored.dcm", reference=load_volume(folder))
    assert np.array_equal(back.array, expected)


def test_monailabel_lists_segments_and_stores_a_seg_in_the_pacs(
    client: TestClient, pacs: tuple[Orthanc, Path], workspace: Path, tmp_path: Path
) -> None:
    orthanc, folder = pacs
    uid = series_uid(folder)
    listed = client.get("/datastore/?output=all").json()["objects"]
    assert uid in listed and listed[uid]["image"]["ext"] == ".zip"

    answer = client.post(f"/infer/{MODEL}?image={uid}&output=dicom_seg")
    assert answer.status_code == 200, answer.text
    cache = list((workspace / "cache" / "dicomweb").iterdir())
    assert len(cache) == 1 and len(list(cache[0].iterdir())) == len(list(folder.iterdir()))
    (tmp_path / "answer.dcm").write_bytes(answer.content)
    labels = read_seg(tmp_path / "answer.dcm", reference=load_volume(folder)).array
    assert labels.max() == 3

    saved = client.put(
        f"/datastore/label?image={uid}&tag=final",
        files={"label": ("seg.dcm", answer.content)},
    )
    assert saved.status_code == 200, saved.text
    info = client.get(f"/datastore/label/info?label={uid}&tag=final").json()
    check_stored_seg(orthanc, folder, labels, tmp_path, info["dicom_seg"]["series"])
    listed = client.get("/datastore/?output=all").json()["objects"]
    assert "final" in listed[uid]["labels"]
    # the SEG is a result, not an image to annotate
    assert list(listed) == [uid]


def test_aiaa_segments_the_fetched_series_as_a_seg(
    client: TestClient, pacs: tuple[Orthanc, Path], tmp_path: Path
) -> None:
    orthanc, folder = pacs
    uid = series_uid(folder)
    zipped = client.get(f"/datastore/image?image={uid}")
    assert zipped.status_code == 200
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert len(archive.namelist()) == len(list(folder.iterdir()))
    answer = client.post(
        f"/v1/segmentation?model={MODEL}&output=image",
        files={"datapoint": ("series.zip", zipped.content)},
        data={"params": json.dumps({"result_extension": ".dcm"})},
    )
    assert answer.status_code == 200, answer.text
    (tmp_path / "aiaa.dcm").write_bytes(answer.content)
    labels = read_seg(tmp_path / "aiaa.dcm", reference=load_volume(folder)).array
    with DicomwebClient(orthanc.url, auth=DicomwebAuth(USER, PASSWORD)) as pacs_client:
        pacs_client.store([tmp_path / "aiaa.dcm"])
    made = pydicom.dcmread(tmp_path / "aiaa.dcm", stop_before_pixels=True).SeriesInstanceUID
    check_stored_seg(orthanc, folder, labels, tmp_path, made)


def test_a_pacs_that_is_down_gives_502_and_keeps_nothing(
    workspace: Path, pacs: tuple[Orthanc, Path], tmp_path: Path
) -> None:
    _, folder = pacs
    uid = series_uid(folder)
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    settings = settings_for(workspace, down)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        listed = test_client.get("/datastore/?output=all")
        assert listed.status_code == 502, listed.text
        assert down.removeprefix("http://") in listed.text, listed.text
        label = test_client.put(
            f"/datastore/label?image={uid}&tag=final",
            files={"label": ("label.nii.gz", locate_sample("spine_ct_vertebrae").read_bytes())},
        )
        assert label.status_code == 502
    assert not (workspace / "datastore" / "images").exists() or not any(
        (workspace / "datastore" / "images").rglob("*.nii.gz")
    )


def test_the_cache_is_bounded_and_non_dicom_is_refused(
    workspace: Path, pacs: tuple[Orthanc, Path], tmp_path: Path
) -> None:
    orthanc, folder = pacs
    uid = series_uid(folder)
    other = tmp_path / "mr"
    other.mkdir()
    write_dicom_series(load_volume(locate_sample("spine_mr_image")), other, modality="MR")
    settings = settings_for(workspace, orthanc.url)
    store = open_datastore(workspace, max_bytes=2**30, settings=settings)
    assert isinstance(store, DicomwebDatastore)
    store.add_image(other, image_id="spine MR")  # STOW-RS; the id becomes the series UID
    mr_uid = series_uid(other)
    assert store.image(mr_uid).info["name"] == "spine MR"
    assert {uid, mr_uid} <= {r.id for r in store.images()}

    size = sum(p.stat().st_size for p in folder.iterdir())
    store.cache_bytes = size + 1024  # room for the CT alone
    first = store.image_path(uid)
    assert store.image_path(uid) == first  # fetched once
    store.image_path(mr_uid)
    assert not first.exists()  # the least recently used series went

    # the learning loop's training set: the series pinned in the job's folder, labels as saved
    store.cache_bytes = 1 << 30
    for image_id in (uid, mr_uid):
        volume = store.volume(image_id)
        bright = np.asarray(volume.array) > np.percentile(volume.array, 95)
        store.save_label(image_id, volume.with_array(bright.astype(np.uint8)), saved_by="ada")
        assert "dicom_seg" in store.latest_label(image_id, "final").info  # type: ignore[union-attr]
    store.set_split(uid, "training")
    store.set_split(mr_uid, "validation")
    manifest = json.loads(write_training_set(store, tmp_path / "job").read_text())
    pinned = [entry["image"] for part in ("training", "validation") for entry in manifest[part]]
    assert len(pinned) == 2 and all(str(tmp_path / "job") in path for path in pinned)
    shutil.rmtree(store.cache)  # evicted: the job still has its series
    shapes = sorted(load_volume(Path(path)).shape for path in pinned)
    assert shapes == sorted([load_volume(folder).shape, load_volume(other).shape])

    store.cache_bytes = 1024
    with pytest.raises(DatastoreError, match="more than the cache holds"):
        store.image_path(uid)
    with pytest.raises(DatastoreError, match="takes DICOM series only"):
        store.add_image(locate_sample("spine_ct_image"), image_id="case")
    with pytest.raises(DatastoreError, match="keeps its images"):
        store.delete_image(uid)
    with pytest.raises(ImageNotFound):
        store.image("1.2.3.4")
    store.close()


def test_the_workspace_names_its_datastore(workspace: Path, pacs: tuple[Orthanc, Path]) -> None:
    orthanc, _ = pacs
    with pytest.raises(ConfigError, match="dicomweb\\+https://"):
        set_datastore_source(workspace, "https://pacs/dicom-web")
    set_datastore_source(workspace, f"dicomweb+{orthanc.url}")
    env = Settings(workspace=workspace, dicomweb_user=USER, dicomweb_password=PASSWORD)  # type: ignore[arg-type]
    store = open_datastore(workspace, max_bytes=2**30, settings=env)
    assert isinstance(store, DicomwebDatastore) and store.url == orthanc.url
    store.set_label_names({1: "L2"})  # the label names keep the source
    again = open_datastore(workspace, max_bytes=2**30, settings=env)
    assert isinstance(again, DicomwebDatastore) and again.label_names() == {1: "L2"}
    local = env.model_copy(update={"datastore": "local"})
    assert type(open_datastore(workspace, max_bytes=2**30, settings=local)).__name__ == (
        "LocalDatastore"
    )


def test_monai_label_client_on_a_pacs_datastore(
    pacs: tuple[Orthanc, Path], model_store: Path, tmp_path: Path
) -> None:
    """MONAI Label's own client against ``carina serve --datastore dicomweb+...``."""
    from tests.server.test_monailabel_client import TOOLS_PYTHON
    from tests.servers import start_server

    if not TOOLS_PYTHON.is_file():
        pytest.fail("MONAI Label's client is not installed: run `make tools`")
    orthanc, folder = pacs
    uid = series_uid(folder)
    workspace = tmp_path / "workspace"
    shutil.copytree(model_store, workspace / "models")
    env = {"CARINA_DICOMWEB_USER": USER, "CARINA_DICOMWEB_PASSWORD": PASSWORD}
    server = start_server(workspace, env=env, args=["--datastore", f"dicomweb+{orthanc.url}"])
    try:
        script = Path(__file__).with_name("monailabel_dicomweb_run.py")
        work = tmp_path / "client"
        work.mkdir()
        done = subprocess.run(
            [str(TOOLS_PYTHON), str(script), server.url, uid, str(work)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert uid in out["images"]
    assert out["infer_file"] == ".dcm"
    assert out["infer_label_names"] == {"L2": 1, "L3": 2, "L4": 3}
    assert out["save"]["image"] == uid and out["tags"] == ["final"]
    labels = read_seg(Path(out["result"]), reference=load_volume(folder)).array
    check_stored_seg(orthanc, folder, labels, tmp_path, out["stored_seg"]["series"])


def test_an_identified_series_from_the_pacs_never_enters_the_cache(
    client: TestClient, pacs: tuple[Orthanc, Path], workspace: Path, tmp_path: Path
) -> None:
    orthanc, _ = pacs
    folder = tmp_path / "identified"
    folder.mkdir()
    write_dicom_series(load_volume(locate_sample("spine_ct_image")), folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = "Doe^Jane", "88765432"
        del ds.PatientIdentityRemoved
        ds.save_as(path)
    with DicomwebClient(orthanc.url, auth=DicomwebAuth(USER, PASSWORD)) as pacs_client:
        pacs_client.store(sorted(folder.iterdir()))
    answer = client.post(f"/infer/{MODEL}?image={series_uid(folder)}&output=json")
    assert answer.status_code == 422, answer.text
    assert "PatientName" in answer.text and "Doe" not in answer.text
    assert "CARINA_PHI_GUARD=warn" in answer.text
    cache = workspace / "cache" / "dicomweb"
    assert (
        not [p for p in cache.iterdir() if not p.name.startswith(".")] if cache.is_dir() else True
    )
