"""The MONAI Label API against a real server, with the wire habits of its two plugins
(``specs/monailabel-api.md``): Slicer's raw ``http.client`` (no redirects, the ``$`` boundary,
``client_id`` in every body, ``GET /auth/`` before every call, multipart answers parsed the way
``cgi.FieldStorage`` parses them) and OHIF's (``new URL('info/', base)``, ``output=image`` read
as a raw uncompressed ``uchar`` NRRD). Bad input gets 4xx, never 500 or 307."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import warnings
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urljoin

import nibabel as nib
import numpy as np
import pytest

from carina.io import load_volume, save_volume
from tests.server.wire import PYTHON_BOUNDARY, python_body
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

#: An image id as Slicer makes one from a volume node name: spaces and path characters.
ODD_ID = "sub-ct ../../etc/passwd 1"


class Slicer:
    """The Slicer plugin's client habits (MONAILabelLib/client.py)."""

    def __init__(self, server: ServerProcess, token: str | None = None) -> None:
        self.port = server.port
        self.token = token
        self.probes = 0

    def call(
        self,
        method: str,
        selector: str,
        *,
        fields: dict[str, str] | None = None,
        files: list[tuple[str, str, bytes]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, str], dict[str, bytes], bytes]:
        """One call as the plugin makes it, after its ``GET /auth/`` probe; the answer's status,
        form fields and files (multipart, parsed as ``cgi.FieldStorage`` does) and raw body."""
        self._send("GET", "/auth/", None, {})
        self.probes += 1
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data: bytes | None = None
        if fields is not None or files is not None:
            fields = {"client_id": "user-xyz", **(fields or {})}
            data = python_body(fields, files or [])
            headers["content-type"] = f"multipart/form-data; boundary={PYTHON_BOUNDARY}"
        elif body is not None:
            data = json.dumps({**body, "client_id": "user-xyz"}).encode()
            headers["content-type"] = "application/json"
        if data is not None:
            headers["content-length"] = str(len(data))
        return self._send(method, selector, data, headers)

    def _send(
        self, method: str, selector: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], dict[str, bytes], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, selector, body=data, headers=headers)
            response = connection.getresponse()
            assert response.status not in (301, 302, 307, 308), f"{selector} redirected"
            kind = response.getheader("content-type", "")
            if "multipart" in kind and response.status == 200:
                form, files = field_storage(response.fp, response.msg)
                return response.status, form, files, b""
            return response.status, {}, {}, response.read()
        finally:
            connection.close()


def field_storage(stream: Any, headers: Message) -> tuple[dict[str, str], dict[str, bytes]]:
    """A multipart answer read the way the plugin reads it: ``cgi.FieldStorage`` over the
    response stream; parts with a file name become files keyed by file name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import cgi

        storage = cgi.FieldStorage(
            fp=stream, environ={"REQUEST_METHOD": "POST"}, headers=headers, keep_blank_values=True
        )
    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for item in storage.list or []:
        if item.filename:
            files[item.filename] = item.value
        else:
            form[item.name] = item.value.decode() if isinstance(item.value, bytes) else item.value
    return form, files


@pytest.fixture(scope="module")
def ml_server(shared_server: ServerProcess) -> ServerProcess:
    """The module's server: the test models, an empty datastore, sign-in off (loopback)."""
    return shared_server


def upload(slicer: Slicer, image_id: str, data: bytes, name: str = "volume.nii.gz") -> None:
    status, _, _, body = slicer.call(
        "PUT", f"/datastore/?image={quote_plus(image_id)}", fields={"params": "{}"},
        files=[("file", name, data)],
    )  # fmt: skip
    assert status == 200, body
    assert json.loads(body) == {"image": image_id}


def test_info_has_what_both_plugins_read(ml_server: ServerProcess) -> None:
    status, _, _, body = Slicer(ml_server).call("GET", "/info/")
    assert status == 200
    info = json.loads(body)
    assert "config" not in info, "a top-level config makes Slicer ask for an upgrade"
    assert isinstance(info["labels"], list) and {"L2", "L3", "L4"} <= set(info["labels"])
    models = info["models"]
    assert models["spine_ct_vertebrae"]["type"] == "segmentation"
    assert models["spine_ct_vertebrae"]["labels"] == ["L2", "L3", "L4"]
    assert models["deepgrow_2d"]["type"] == "deepgrow" and models["deepgrow_2d"]["dimension"] == 2
    assert models["deepgrow_3d"]["dimension"] == 3
    dextr = models["annotation_dextr3d"]
    assert dextr["type"] == "deepgrow" and "6 extreme points" in dextr["description"]
    for entry in models.values():
        assert entry["description"] and entry["labels"], entry
        assert all(not isinstance(v, dict) for v in entry["config"].values()), "a flat config"
        assert entry["config"]["result_extension"][0] == ".nrrd", "a choice's default first"
    assert "random" in info["strategies"] and "spine_ct_vertebrae" in info["trainers"]
    assert info["datastore"] == {"total": 0, "completed": 0, "label_tags": {}}
    assert info["train_stats"] == {"spine_ct_vertebrae": {}}


def test_no_redirect_on_either_slash_form(ml_server: ServerProcess) -> None:
    slicer = Slicer(ml_server)
    for selector in ("/info", "/info/", "/datastore", "/datastore/", "/auth", "/auth/"):
        status, *_ = slicer.call("GET", selector)
        assert status == 200, selector


def test_slicer_round_trip_upload_next_infer_save(
    ml_server: ServerProcess, spine_ct_path: Path
) -> None:
    slicer = Slicer(ml_server)
    upload(slicer, ODD_ID, spine_ct_path.read_bytes())
    upload(slicer, ODD_ID, spine_ct_path.read_bytes())  # Slicer uploads again before a save
    status, _, _, body = slicer.call("POST", "/activelearning/random", body={})
    assert status == 200
    sample = json.loads(body)
    assert sample["id"] == ODD_ID and sample["name"].endswith(".nii.gz")
    assert sample["checksum"].startswith("SHA256:") and "path" not in sample
    params = {"result_extension": ".nrrd", "result_dtype": "uint8", "client_id": "user-xyz"}
    status, form, files, body = slicer.call(
        "POST", f"/infer/spine_ct_vertebrae?image={quote_plus(ODD_ID)}",
        fields={"params": json.dumps(params)},
    )  # fmt: skip
    assert status == 200, body
    assert list(files) == ["result.nrrd"], "one file part, by its basename"
    result = json.loads(form["params"])
    assert result["label_names"] == {"L2": 1, "L3": 2, "L4": 3}
    label = read_nrrd(files["result.nrrd"])
    image = load_volume(spine_ct_path)
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-3)
    assert set(np.unique(np.asarray(label.array))) <= {0, 1, 2, 3}
    assert np.count_nonzero(np.asarray(label.array)) > 1000
    # The model's answer is kept as the image's "original" label; Slicer reads it back.
    listing = wait_for_original(slicer)
    original = listing["objects"][ODD_ID]["labels"]["original"]
    assert original["info"]["params"]["label_names"] == {"L2": 1, "L3": 2, "L4": 3}
    status, _, _, data = slicer.call(
        "GET", f"/datastore/label?label={quote_plus(ODD_ID)}&tag=original"
    )
    assert status == 200 and data[:2] == b"\x1f\x8b"
    # Save the corrected label as final (Slicer sends label_info with its segment numbers).
    corrected = np.asarray(label.array).copy()
    corrected[corrected == 3] = 0
    path = ml_server.log.parent / "final.nii.gz"
    save_volume(image.with_array(corrected.astype(np.uint8)), path)
    info = {"label_info": [{"name": "L2", "idx": 1}, {"name": "L3", "idx": 2}], "client_id": "u"}
    status, _, _, body = slicer.call(
        "PUT", f"/datastore/label?image={quote_plus(ODD_ID)}&tag=final",
        fields={"params": json.dumps(info)}, files=[("label", "label.nii.gz", path.read_bytes())],
    )  # fmt: skip
    assert status == 200, body
    assert json.loads(body)["image"] == ODD_ID
    status, _, _, body = slicer.call("GET", "/datastore/?output=stats")
    assert json.loads(body)["completed"] == 1
    assert not any(p.name == "passwd" for p in ml_server.log.parent.rglob("passwd"))


def wait_for_original(slicer: Slicer) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 30
    while True:
        _, _, _, body = slicer.call("GET", "/datastore/?output=all")
        listing: dict[str, Any] = json.loads(body)
        if "original" in listing["objects"][ODD_ID]["labels"] or time.monotonic() > deadline:
            return listing
        time.sleep(0.2)


def read_nrrd(data: bytes) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.nrrd"
        path.write_bytes(data)
        return load_volume(path)


def test_ohif_output_image_is_a_raw_uchar_nrrd_of_the_series_size(
    ml_server: ServerProcess, spine_ct_path: Path
) -> None:
    import httpx

    image_id = "1.2.826.0.1.3680043.8.498.1"
    upload(Slicer(ml_server), image_id, spine_ct_path.read_bytes())
    base = f"{ml_server.url}/"
    params = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
              "restore_label_idx": False}  # fmt: skip
    url = urljoin(base, f"infer/spine_ct_vertebrae?image={image_id}&output=image")
    answer = httpx.post(url, files={"params": (None, json.dumps(params))}, timeout=120)
    assert answer.status_code == 200, answer.text
    header, _, raw = answer.content.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in header.decode().splitlines()[1:] if ": " in line)
    assert fields["type"] in ("unsigned char", "uchar", "uint8")
    assert fields["encoding"] == "raw"
    sizes = [int(v) for v in fields["sizes"].split()]
    image = load_volume(spine_ct_path)
    assert sizes == list(image.shape)
    assert len(raw) == int(np.prod(sizes)), "OHIF copies the buffer as it is"
    labels = np.frombuffer(raw, dtype=np.uint8).reshape(sizes, order="F")
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and labels.any()
    info = httpx.get(urljoin(base, "info/"), timeout=10).json()
    assert isinstance(info["labels"], list)


def test_training_status_codes_the_plugins_read(ml_server: ServerProcess) -> None:
    slicer = Slicer(ml_server)
    status, *_ = slicer.call("GET", "/train/?check_if_running=true")
    assert status == 404, "200 would make Slicer believe training runs"
    status, *_ = slicer.call("GET", "/train/")
    assert status == 404
    status, _, _, body = slicer.call("DELETE", "/train/")
    assert status == 200 and json.loads(body) is None


def test_dextr3d_driven_with_points(ml_server: ServerProcess, spine_ct_path: Path) -> None:
    slicer = Slicer(ml_server)
    upload(slicer, "dextr image", spine_ct_path.read_bytes())
    points = [[26, 23, 36], [46, 23, 36], [36, 13, 36], [36, 33, 36], [36, 23, 26], [36, 23, 46]]
    for given, empty in ((points[:2], True), (points, False)):
        params = {"foreground": given, "background": [], "label": "L3"}
        status, form, files, body = slicer.call(
            "POST", f"/infer/annotation_dextr3d?image={quote_plus('dextr image')}",
            fields={"params": json.dumps(params)},
        )  # fmt: skip
        assert status == 200, body
        answer = json.loads(form["params"])
        assert answer["label_names"] == {"L3": 1}
        (data,) = files.values()
        mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)
        assert mask.shape == load_volume(spine_ct_path).shape
        if empty:
            assert mask.max() == 0 and "6 extreme points" in answer["message"]
        else:
            assert answer["points"] == points and "message" not in answer


@pytest.mark.parametrize(
    ("method", "selector", "status"),
    [
        ("POST", "/infer/spine_ct_vertebrae?image=nope", 404),
        ("POST", "/infer/no_such_model?image=nope", 404),
        ("POST", "/infer/spine_ct_vertebrae", 400),
        ("POST", "/infer/spine_ct_vertebrae?image=x&output=dicom", 400),
        ("GET", "/datastore/?output=everything", 400),
        ("GET", "/datastore/image?image=..%2F..%2Fmodels", 404),
        ("GET", "/datastore/label?label=nope&tag=final", 404),
        ("GET", "/datastore/label?label=nope&tag=..%2Fx", 422),
        ("HEAD", "/datastore/image?image=nope", 404),
        ("POST", "/activelearning/nonsense", 404),
        ("POST", "/train/no_such_model", 404),
        ("DELETE", "/datastore/image?id=nope", 404),
        ("GET", "/model/no_such_model", 404),
        ("POST", "/scoring/nonsense", 404),
    ],
)
def test_bad_requests_get_a_4xx(
    ml_server: ServerProcess, method: str, selector: str, status: int
) -> None:
    answer, *_ = Slicer(ml_server).call(method, selector)
    assert answer == status


def test_bad_labels_are_refused_and_nothing_is_lost(
    ml_server: ServerProcess, spine_ct_path: Path
) -> None:
    slicer = Slicer(ml_server)
    image = load_volume(spine_ct_path)
    upload(slicer, "names", spine_ct_path.read_bytes())
    names = {"label_info": [{"name": n, "idx": i} for i, n in enumerate(["L2", "L3", "L4"], 1)]}
    status, _, _, body = slicer.call(
        "PUT", "/datastore/label?image=names", fields={"params": json.dumps(names)},
        files=[("label", "label.nii.gz", _nifti(np.zeros(image.shape, np.uint8), image.affine))],
    )  # fmt: skip
    assert status == 200, body  # a datastore without label names takes these
    upload(slicer, "labels", spine_ct_path.read_bytes())
    cases = [
        ("label.bin", b"\x01" * 10, "voxels"),
        ("label.nii.gz", b"not an image", "cannot be read"),
        ("label.nii.gz", _nifti(np.zeros((5, 5, 5), np.uint8)), "grid"),
        ("label.nii.gz", _nifti(np.full(image.shape, 9, np.uint8), image.affine), "not labels"),
    ]
    for name, data, message in cases:
        status, _, _, body = slicer.call(
            "PUT", "/datastore/label?image=labels&tag=final", fields={"params": "{}"},
            files=[("label", name, data)],
        )  # fmt: skip
        assert status == 422, body
        assert message in json.loads(body)["error"]["message"][0]
    unknown = {"label_info": [{"name": "liver", "idx": 1}]}
    ones = _nifti(np.ones(image.shape, np.uint8), image.affine)
    status, _, _, body = slicer.call(
        "PUT", "/datastore/label?image=labels", fields={"params": json.dumps(unknown)},
        files=[("label", "label.nii.gz", ones)],
    )  # fmt: skip
    assert status == 422 and "liver" in body.decode()
    status, _, _, body = slicer.call("GET", "/datastore/?output=all")
    assert json.loads(body)["objects"]["labels"]["labels"] == {}
    raw = np.zeros(image.shape, np.uint8)
    raw[30:40, 20:30, 30:40] = 2
    status, _, _, body = slicer.call(
        "PUT", "/datastore/label?image=labels", fields={"params": "{}"},
        files=[("label", "label.bin", raw.tobytes(order="F"))],
    )  # fmt: skip
    assert status == 200, body
    status, _, _, data = slicer.call("GET", "/datastore/label?label=labels&tag=final")
    saved = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)
    assert np.array_equal(saved, raw), "the .bin label is column-fastest in the image's shape"


def _nifti(array: np.ndarray[Any, Any], affine: Any = None) -> bytes:
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    buffer = io.BytesIO()
    buffer.write(gzip.compress(image.to_bytes()))
    return buffer.getvalue()


def test_session_shared_with_aiaa_accepts_files(
    ml_server: ServerProcess, spine_ct_path: Path
) -> None:
    slicer = Slicer(ml_server)
    status, _, _, body = slicer.call(
        "PUT", "/session/?expiry=600", fields={}, files=[("files", "vol.nii.gz", spine_ct_path.read_bytes())]
    )  # fmt: skip
    assert status == 200, body
    session = json.loads(body)["session_id"]
    assert str(ml_server.log.parent) not in body.decode(), "no server path"
    clicks = {"foreground": [[36, 23, 36]], "background": [], "label": "L3"}
    status, form, files, body = slicer.call(
        "POST", f"/infer/deepgrow_3d?session_id={session}", fields={"params": json.dumps(clicks)}
    )
    assert status == 200, body
    assert json.loads(form["params"])["label_names"] == {"L3": 1} and len(files) == 1
    assert slicer.call("GET", f"/session/{session}")[0] == 200
    assert slicer.call("DELETE", f"/session/{session}")[0] == 200
    assert slicer.call("GET", f"/session/{session}")[0] != 200
