"""The DICOMweb client against a real Orthanc: STOW the shipped CT as a series, QIDO finds it, WADO
brings it back as the same volume; a SEG stored by STOW is found by QIDO and reads back equal to the
label map; wrong credentials, a PACS that is down or slow give Carina's 502/504 errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from carina.data import locate_sample
from carina.data.dicom_series import write_dicom_series
from carina.errors import NotFoundError, UpstreamError, UpstreamTimeoutError
from carina.io import load_volume
from carina.io.dicom import read_series
from carina.io.dicom_seg import read_seg, write_seg
from carina.io.dicomweb import DicomwebAuth, DicomwebClient
from tests.orthanc import PASSWORD, USER, Orthanc, running_orthanc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("series")
    write_dicom_series(load_volume(locate_sample("spine_ct_image")), folder)
    return folder


def client(orthanc: Orthanc, password: str = PASSWORD, **options: float) -> DicomwebClient:
    auth = DicomwebAuth(user=USER, password=password)
    return DicomwebClient(f"dicomweb+{orthanc.url}", auth=auth, **options)  # type: ignore[arg-type]


def test_stow_qido_wado_round_trip_and_a_seg(
    orthanc: Orthanc, series: Path, tmp_path: Path
) -> None:
    volume, datasets = read_series(series, max_bytes=2**30)
    with client(orthanc) as pacs:
        pacs.store(sorted(series.iterdir()))
        studies = pacs.search_studies(PatientID=str(datasets[0].PatientID))
        assert [s.StudyInstanceUID for s in studies] == [datasets[0].StudyInstanceUID]
        found = pacs.search_series(studies[0].StudyInstanceUID, Modality="CT")
        assert [s.SeriesInstanceUID for s in found] == [datasets[0].SeriesInstanceUID]
        assert int(found[0].NumberOfSeriesRelatedInstances) == len(datasets)
        fetched = tmp_path / "fetched"
        fetched.mkdir()
        files = pacs.retrieve_series_files(studies[0].StudyInstanceUID, found[0].SeriesInstanceUID)
        for number, data in enumerate(files):
            (fetched / f"{number}.dcm").write_bytes(data)
        again = load_volume(fetched)
        assert np.array_equal(again.array, volume.array) and np.allclose(
            again.affine, volume.affine
        )

        vertebrae = load_volume(locate_sample("spine_ct_vertebrae")).array
        labels = np.zeros(vertebrae.shape, np.uint8)
        for value, original in enumerate((21, 22, 23), start=1):
            labels[vertebrae == original] = value
        seg = write_seg(volume.with_array(labels), datasets, ["L2", "L3", "L4"], tmp_path / "s.dcm")
        pacs.store([seg])
        segs = pacs.search_series(studies[0].StudyInstanceUID, Modality="SEG")
        assert len(segs) == 1
        stored = pacs.retrieve_series_files(studies[0].StudyInstanceUID, segs[0].SeriesInstanceUID)
        (tmp_path / "stored.dcm").write_bytes(stored[0])
        assert np.array_equal(read_seg(tmp_path / "stored.dcm", reference=volume).array, labels)
        with pytest.raises(NotFoundError):
            pacs.retrieve_series(studies[0].StudyInstanceUID, "1.2.3.4")


def test_wrong_credentials_and_a_pacs_that_is_down(orthanc: Orthanc) -> None:
    with client(orthanc, password="wrong") as pacs, pytest.raises(UpstreamError, match="401"):
        pacs.search_studies()
    down = DicomwebClient("http://127.0.0.1:9/dicom-web", retries=1, timeout=2)
    with down, pytest.raises(UpstreamError, match="cannot be reached"):
        down.search_studies()


def test_timeouts_retry_then_504_and_bearer_tokens_are_sent() -> None:
    calls: list[httpx.Request] = []

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    pacs = DicomwebClient(
        "https://pacs.example/dicom-web",
        auth=DicomwebAuth(token="t0ken"),
        retries=2,
        transport=httpx.MockTransport(slow),
    )
    with pacs, pytest.raises(UpstreamTimeoutError):
        pacs.search_studies()
    assert len(calls) == 3 and calls[0].headers["Authorization"] == "Bearer t0ken"

    stored: list[httpx.Request] = []

    def busy(request: httpx.Request) -> httpx.Response:
        stored.append(request)
        return httpx.Response(503)

    pacs = DicomwebClient("https://pacs.example/dicom-web", transport=httpx.MockTransport(busy))
    with pacs, pytest.raises(UpstreamError, match="503"):
        pacs.store([b"not sent twice"])
    assert len(stored) == 1, "a store is not repeated"
