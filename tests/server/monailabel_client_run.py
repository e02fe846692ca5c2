"""Run by test_monailabel_client.py with the tools venv's Python, where MONAI Label's wheel is
installed without its dependencies: MONAI Label's own client drives a Carina server.

python monailabel_client_run.py URL IMAGE_PATH WORKDIR USER PASSWORD  -> one JSON line of results
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException


def main() -> None:
    url, image, workdir, user, password = sys.argv[1:6]
    out: dict[str, object] = {}
    client = MONAILabelClient(url, tmpdir=workdir, client_id="carina-test")
    out["auth_enabled"] = client.auth_enabled()
    try:
        client.info()
        out["info_without_token"] = "accepted"
    except MONAILabelClientException as exc:
        out["info_without_token"] = exc.status_code
    token = client.auth_token(user, password)
    out["token_type"] = token["token_type"]
    client.update_auth(token)
    out["token_valid"] = client.auth_valid_token()
    info = client.info()
    out["models"] = sorted(info["models"])
    out["trainers"] = sorted(info["trainers"])
    out["upload"] = client.upload_image(image, "spine ct")
    out["next"] = client.next_sample("random", {})
    result, params = client.infer("spine_ct_vertebrae", "spine ct", {"result_extension": ".nii.gz"})
    out["infer_file"] = Path(result).name if result else None
    out["infer_size"] = Path(result).stat().st_size if result else 0
    out["infer_label_names"] = params["label_names"]
    out["save"] = client.save_label(
        "spine ct",
        result,
        tag="final",
        params={
            "label_info": [
                {"name": name, "idx": idx} for name, idx in params["label_names"].items()
            ]
        },
    )
    out["datastore_tags"] = sorted(client.datastore()["objects"]["spine ct"]["labels"])
    out["download"] = Path(client.download_label("spine ct", "final")).suffixes
    out["train_start"] = client.train_start("spine_ct_vertebrae", {})
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = client.train_status(check_if_running=True)
        seen.append(running)
        if running:
            break
        time.sleep(0.2)
    out["train_running_seen"] = any(seen)
    out["train_status"] = client.train_status()["status"]
    out["train_stop"] = client.train_stop()
    deadline = time.monotonic() + 120
    while client.train_status(check_if_running=True) and time.monotonic() < deadline:
        time.sleep(0.5)
    out["train_after_stop"] = client.train_status()["status"]
    again, params = client.infer("spine_ct_vertebrae", "spine ct", {})
    out["infer_again"] = Path(again).name if again else None
    # The client's multipart calls write their Content-Type and Content-Length into its shared
    # headers once it holds a token (MONAILabelUtils.http_multipart updates the dict it is
    # given), so its later create_session sends a stale boundary to any server: a fresh client.
    client = MONAILabelClient(url, tmpdir=workdir, client_id="carina-test")
    client.update_auth(token)
    session = client.create_session(image)
    out["session_keys"] = sorted(session)
    session_id = session["session_id"]
    out["session_get"] = client.get_session(session_id)["name"] == session_id
    _, params = client.infer(
        "deepgrow_3d", "", {"foreground": [[36, 23, 36]], "background": []}, session_id=session_id
    )
    out["session_infer_label_names"] = params["label_names"]
    client.remove_session(session_id)
    try:
        client.get_session(session_id)
        out["session_after_delete"] = 200
    except MONAILabelClientException:
        out["session_after_delete"] = "gone"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
