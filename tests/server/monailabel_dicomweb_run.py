"""Run by test_dicomweb_datastore.py with the tools venv's Python (MONAI Label's wheel): MONAI
Label's own client on a Carina server whose datastore is a PACS, as OHIF's and Slicer's plugins
use it: list the datastore, segment a series by its SeriesInstanceUID as a DICOM SEG, save it.

python monailabel_dicomweb_run.py URL SERIES_UID WORKDIR  -> one JSON line of results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from monailabel.client import MONAILabelClient


def main() -> None:
    url, series, workdir = sys.argv[1:4]
    client = MONAILabelClient(url, tmpdir=workdir, client_id="carina-test")
    out: dict[str, object] = {"images": sorted(client.datastore()["objects"])}
    result, params = client.infer("spine_ct_vertebrae", series, {"result_extension": ".dcm"})
    out["infer_file"] = Path(result).suffix if result else None
    out["infer_label_names"] = params["label_names"]
    out["result"] = str(result)
    out["save"] = client.save_label(series, result, tag="final")
    labels = client.datastore()["objects"][series]["labels"]
    out["tags"] = sorted(labels)
    out["stored_seg"] = labels["final"]["info"].get("dicom_seg")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
