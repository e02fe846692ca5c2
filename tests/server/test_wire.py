"""The AIAA wire contract against a real server: the exact bytes of each client, and answers
parsed the way each client parses them (spec sections 2 and 9)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from carina.io import Volume, load_volume, save_volume
from tests.server.wire import (
    browser_request,
    parse_multipart_poco,
    parse_multipart_strict,
    poco_request,
    python_body,
    python_request,
    send_raw,
)
from tests.servers import ADMIN_TOKEN, ServerProcess

pytestmark = pytest.mark.integration

#: Example A of the spec, byte for byte (129 bytes).
EXAMPLE_A = (
    b'------------lImIt_of_THE_fIle_eW_$\r\nContent-Disposition: form-data; name="params"'
    b"\r\n\r\n{}\r\n------------lImIt_of_THE_fIle_eW_$--\r\n\r\n"
)
#: A click inside L3 of the shipped CT (voxel indices).
CLICK = [36, 23, 36]


def nifti(data: bytes) -> nib.Nifti1Image:
    """A NIfTI image from file bytes, gzip-compressed or not."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def create_session_python(server: ServerProcess, image: bytes) -> str:
    body = python_body({}, [("image", "/home/u/tmpab12cd.nii.gz", image)])
    answer = send_raw(server.port, python_request("PUT", "/session/?expiry=600", server.port, body))
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    return str(json.loads(answer.body)["session_id"])


def test_python_client_body_matches_example_a() -> None:
    assert python_body({"params": "{}"}, []) == EXAMPLE_A
    assert len(EXAMPLE_A) == 129


def test_python_client_session_segmentation(
    shared_server: ServerProcess, spine_ct_path: Path
) -> None:
    session = create_session_python(shared_server, spine_ct_path.read_bytes())
    target = f"/v1/segmentation?model=spine_ct_vertebrae&session_id={session}"
    answer = send_raw(
        shared_server.port, python_request("POST", target, shared_server.port, EXAMPLE_A)
    )
    assert answer.status == 200, answer.body
    params, image = parse_multipart_strict(answer)
    result = json.loads(params.data)
    assert len(result["points"]) == 6
    mask = nifti(image.data)
    source = nib.load(spine_ct_path)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    assert "server-timing" in answer.headers and "x-request-id" in answer.headers


def test_python_client_deepgrow_upload_windows_path(
    shared_server: ServerProcess, spine_ct_path: Path
) -> None:
    params = json.dumps({"foreground": [CLICK], "background": [], "current_point": CLICK})
    filename = "C:\\Users\\me\\AppData\\Local\\Temp\\slicer-aiaa\\tmpab12cd.nii.gz"
    body = python_body({"params": params}, [("datapoint", filename, spine_ct_path.read_bytes())])
    target = "/v1/deepgrow?model=deepgrow_2d&save_doc=true"  # an unknown query is ignored
    answer = send_raw(shared_server.port, python_request("POST", target, shared_server.port, body))
    assert answer.status == 200, answer.body
    _, image = parse_multipart_strict(answer)
    assert image.filename == "result.nii.gz"
    mask = np.asarray(nifti(image.data).dataobj)
    assert mask.shape == (73, 47, 73)
    assert mask[..., CLICK[2]].sum() > 0, "the clicked slice holds the result"
    assert mask.sum() == mask[..., CLICK[2]].sum(), "a 2D model writes only that slice"


def test_poco_http10_quoted_boundary_and_string_points(
    shared_server: ServerProcess, spine_ct_path: Path
) -> None:
    port = shared_server.port
    created = send_raw(
        port,
        poco_request(
            "PUT", "/session/", "{}", [("image", "ct.nii.gz", spine_ct_path.read_bytes())]
        ),
    )
    assert created.status == 200, created.body
    session = json.loads(created.body)["session_id"]
    legacy = json.dumps({"foreground": json.dumps([CLICK]), "background": "[]"})
    answer = send_raw(
        port,
        poco_request("POST", f"/v1/deepgrow?model=deepgrow_3d&session_id={session}", legacy, []),
    )
    assert answer.status == 200, answer.body
    text, data = parse_multipart_poco(answer.body)
    assert text["foreground"] == [CLICK]
    assert "crop" in text, "3D DeepGrow tells Slicer the region it changed"
    assert data is not None and nifti(data).shape == (73, 47, 73)


def test_session_expired_is_440_with_its_phrase(shared_server: ServerProcess) -> None:
    target = (
        "/v1/segmentation?model=spine_ct_vertebrae&session_id=5f2e344c-eb68-11f1-93be-02fc00000001"
    )
    answer = send_raw(
        shared_server.port, python_request("POST", target, shared_server.port, EXAMPLE_A)
    )
    assert answer.status_line == "HTTP/1.1 440 Session Expired"
    assert json.loads(answer.body) == {
        "error": {
            "message": ["Session 5f2e344c-eb68-11f1-93be-02fc00000001 expired or unknown"],
            "type": "SessionExpired",
        },
        "success": False,
    }


def test_browser_dicom_series_session_and_output_image(
    shared_server: ServerProcess, ct_series: Path, spine_ct: Volume
) -> None:
    port = shared_server.port
    files = [
        (f"image{n}", path.name, path.read_bytes())
        for n, path in enumerate(sorted(ct_series.iterdir()))
    ]
    created = send_raw(
        port, browser_request("PUT", "/session/?expiry=0&save_as=.nii", port, "null", files)
    )
    assert created.status == 200, created.body
    session = json.loads(created.body)
    assert session["session_info"]["expiry"] == 3600, "expiry 0 means the server default"
    assert "/" not in json.dumps(session["session_info"]).replace("\\/", ""), "no server paths"
    target = (
        f"/v1/segmentation?model=spine_ct_vertebrae&session_id={session['session_id']}&output=image"
    )
    answer = send_raw(port, browser_request("POST", target, port, "{}", []))
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/octet-stream"
    assert "content-encoding" not in answer.headers, "no gzip although the browser accepts it"
    assert answer.headers["content-disposition"] == 'attachment; filename="result.nii.gz"'
    assert sorted(nifti(answer.body).shape) == sorted(spine_ct.shape)


def test_large_result_is_byte_exact(
    shared_server: ServerProcess, spine_ct: Volume, tmp_path: Path
) -> None:
    big = Volume(np.repeat(np.asarray(spine_ct.array), 2, axis=2), spine_ct.affine)
    path = tmp_path / "big.nii.gz"
    save_volume(big, path)
    params = json.dumps({"result_extension": ".nii"})
    body = python_body({"params": params}, [("datapoint", "/tmp/big.nii.gz", path.read_bytes())])
    answer = send_raw(
        shared_server.port,
        python_request(
            "POST", "/v1/segmentation?model=spine_ct_vertebrae", shared_server.port, body
        ),
    )
    _, image = parse_multipart_strict(answer)
    assert len(image.data) >= 300_000
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(image.data))
    assert len(image.data) == int(header["vox_offset"]) + int(np.prod(big.shape))
    assert np.asarray(nifti(image.data).dataobj).shape == big.shape


def test_dextr3d_full_image_points(shared_server: ServerProcess, spine_ct_path: Path) -> None:
    points = [[20, 23, 36], [52, 23, 36], [36, 10, 36], [36, 40, 36], [36, 23, 20], [36, 23, 52]]
    body = python_body(
        {"params": json.dumps({"points": json.dumps(points)})},
        [("datapoint", "/tmp/x.nii.gz", spine_ct_path.read_bytes())],
    )
    answer = send_raw(
        shared_server.port,
        python_request("POST", "/v1/dextr3d?model=annotation_dextr3d", shared_server.port, body),
    )
    assert answer.status == 200, answer.body
    params, image = parse_multipart_strict(answer)
    assert json.loads(params.data)["points"] == points
    assert nifti(image.data).shape == (73, 47, 73)


@pytest.mark.parametrize(
    "path",
    ["/v1/models", "/v1/models/", "/docs", "/docs/", "/", "/logs", "/logs/?lines=5", "/health"],
)
def test_no_redirects(shared_server: ServerProcess, path: str) -> None:
    token = f"Authorization: Bearer {ADMIN_TOKEN}\r\n" if path.startswith("/logs") else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{token}\r\n".encode()
    assert send_raw(shared_server.port, request).status == 200


def test_models_single_object_and_filters(shared_server: ServerProcess) -> None:
    port = shared_server.port

    def get(target: str) -> object:
        answer = send_raw(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert answer.status == 200
        return json.loads(answer.body)

    listed = get("/v1/models")
    assert isinstance(listed, list)
    assert [m["name"] for m in listed] == sorted(m["name"] for m in listed)
    single = get("/v1/models?model=deepgrow_2d")
    assert isinstance(single, dict) and single["deepgrow"] == "2D"
    assert get("/v1/models?model=deepgrow_3d")["deepgrow"] == "3D"  # type: ignore[index]
    annotation = get("/v1/models?type=ANNOTATION")
    assert [m["name"] for m in annotation] == ["annotation_dextr3d"]  # type: ignore[union-attr]
    assert all(isinstance(m["version"], str) for m in listed)  # type: ignore[union-attr]
    assert [m["name"] for m in get("/v1/models?label=l3")] == ["spine_ct_vertebrae"]  # type: ignore[union-attr]


def test_mask2polygon_and_fixpolygon_png(
    shared_server: ServerProcess, spine_ct: Volume, tmp_path: Path
) -> None:
    mask = np.zeros((40, 30, 3), dtype=np.uint8)
    mask[10:25, 8:20, 1] = 1
    path = tmp_path / "mask.nii.gz"
    save_volume(Volume(mask, np.eye(4)), path)
    body = python_body(
        {"params": '{"more_points": "10"}'}, [("datapoint", "m.nii.gz", path.read_bytes())]
    )
    answer = send_raw(
        shared_server.port, python_request("POST", "/v1/mask2polygon", shared_server.port, body)
    )
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    polygons = json.loads(answer.body)
    assert len(polygons) == 3 and polygons[0] == [] and len(polygons[1]) == 1

    plane = np.zeros((40, 30), dtype=np.uint8)
    png = tmp_path / "slice.png"
    save_volume(Volume(plane[:, :, None], np.eye(4)), png)
    fix = {
        "poly": [polygons[1][0]],
        "vertex_offset": [2, 2],
        "dimension": 2,
        "polygon_index": 0,
        "vertex_index": 0,
        "propagate_neighbor": 1,
    }
    body = python_body({"params": json.dumps(fix)}, [("image", "slice.png", png.read_bytes())])
    answer = send_raw(
        shared_server.port, python_request("POST", "/v1/fixpolygon", shared_server.port, body)
    )
    assert answer.status == 200, answer.body
    params, image = parse_multipart_strict(answer)
    moved = json.loads(params.data)["poly"][0][0]
    assert moved == [v + 2 for v in polygons[1][0][0]]
    assert image.filename == "result.png" and image.data.startswith(b"\x89PNG")
    assert load_volume_bytes(image.data, tmp_path / "r.png").array.sum() > 0


def load_volume_bytes(data: bytes, path: Path) -> Volume:
    path.write_bytes(data)
    return load_volume(path)
