"""The command line: each command parses, makes one library call and reports clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from carina import __version__
from carina.cli.main import app
from carina.io import Volume, load_volume

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"carina {__version__}"


def test_info_json_names_versions_and_devices() -> None:
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["versions"]["carina"] == __version__
    assert report["versions"]["torch"] is not None
    assert isinstance(report["devices"], list)
    assert report["threads"]["torch_threads"] >= 1


def test_convert_dicom_series_to_nifti(tmp_path: Path, ct_series: Path, spine_ct: Volume) -> None:
    result = runner.invoke(app, ["convert", str(ct_series), str(tmp_path / "ct.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "73 x 47 x 73 int16" in result.stdout
    converted = load_volume(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(converted.array, spine_ct.array)
    np.testing.assert_allclose(converted.affine, spine_ct.affine, atol=1e-5)


def test_bad_input_is_one_clear_line_and_status_1(tmp_path: Path) -> None:
    (tmp_path / "scan.xyz").write_text("nothing")
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "carina",
            "convert",
            str(tmp_path / "scan.xyz"),
            str(tmp_path / "o.nii"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 1
    assert "error: scan.xyz: unknown image format" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "o.nii").exists()


def test_data_list_and_export(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["data", "list", "--samples"])
    assert listed.exit_code == 0
    for name in ("spine_ct", "spine_mr_vertebra", "brain_mr", "dicom_enhanced_mr"):
        assert name in listed.stdout
    exported = runner.invoke(app, ["data", "export", "spine_ct", str(tmp_path / "ds")])
    assert exported.exit_code == 0, exported.output
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["name"] == "spine_ct"
