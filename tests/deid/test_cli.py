"""``carina deid`` end to end: a new private key, the output and its report, --verify on the
output and on the input, --what-if, and the refusals (an output inside an input, a key others can
read), each one clear line."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carina.cli.main import app
from tests.deid.conftest import PHI

runner = CliRunner()


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, phi_series: Path) -> tuple[Path, Path, str]:
    """``carina deid`` run once: (output folder, key file, stderr)."""
    root = tmp_path_factory.mktemp("cli")
    key = root / "keys" / "deid.key"
    result = runner.invoke(
        app, ["deid", str(phi_series), "-o", str(root / "out"), "--key-file", str(key)]
    )
    assert result.exit_code == 0, result.output
    assert "de-identified 6 instance(s)" in result.stdout
    return root / "out", key, result.stderr


def test_deid_makes_a_private_key_and_says_so(done: tuple[Path, Path, str]) -> None:
    _, key, stderr = done
    assert "made a new key" in stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_deid_writes_the_layout_and_the_report(done: tuple[Path, Path, str]) -> None:
    out, _, _ = done
    files = list(out.rglob("*.dcm"))
    assert len(files) == 6
    assert all(len(f.relative_to(out).parts) == 3 for f in files)
    report = json.loads((out / "report.json").read_text())
    assert report["files"]["written"] == 6 and report["actions"]["PatientName"] == {"D": 6}
    text = (out / "report.json").read_text().upper()
    assert [phi for phi in PHI if phi.upper() in text] == []


def test_verify_passes_the_output_and_lists_the_inputs_findings(
    done: tuple[Path, Path, str], phi_series: Path
) -> None:
    clean = runner.invoke(app, ["deid", "--verify", str(done[0])])
    assert clean.exit_code == 0, clean.output
    assert "6 DICOM file(s): nothing identifying found" in clean.stdout
    found = runner.invoke(app, ["deid", "--verify", str(phi_series)])
    assert found.exit_code == 1
    lines = found.stdout.splitlines()
    first = sorted(phi_series.glob("*.dcm"))[0]
    assert f"{first}: PatientName: a person's name" in lines
    assert f"{first}: SourceApplicationEntityTitle: the file meta names the sender's systems" in (
        lines
    )


def test_what_if_writes_nothing(phi_series: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["deid", str(phi_series), "-o", str(tmp_path / "out"), "--what-if",
         "--key-file", str(tmp_path / "none.key")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"]["written"] == 6
    assert not (tmp_path / "out").exists() and not (tmp_path / "none.key").exists()


def test_an_output_inside_the_input_is_one_clear_line(phi_series: Path, tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "carina", "deid", str(phi_series), "-o", str(phi_series / "out"),
         "--key-file", str(tmp_path / "k")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert process.returncode == 1
    assert process.stderr.startswith("error: the output folder out overlaps the input DOE_JOHN")
    assert "Traceback" not in process.stderr
    assert not (phi_series / "out").exists()


def test_a_key_others_can_read_is_refused(
    done: tuple[Path, Path, str], phi_series: Path, tmp_path: Path
) -> None:
    key = tmp_path / "deid.key"
    key.write_bytes(done[1].read_bytes())
    key.chmod(0o644)
    result = runner.invoke(
        app, ["deid", str(phi_series), "-o", str(tmp_path / "out"), "--key-file", str(key)]
    )
    assert result.exit_code == 1
    assert "chmod 600 deid.key" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_options_turn_off_and_on(phi_series: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["deid", str(phi_series), "-o", str(tmp_path / "out"), "--key-file", str(tmp_path / "k"),
         "--no-option", "clean-descriptors", "--safe-harbor", "--keep", "PatientSex"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = json.loads((tmp_path / "out" / "report.json").read_text())["options"]
    assert options["clean_descriptors"] is False and options["safe_harbor"] is True
    assert options["keep"] == ["PatientSex"]
    both = runner.invoke(
        app,
        ["deid", str(phi_series), "-o", str(tmp_path / "o2"), "--option", "retain-safe-private"],
    )
    assert both.exit_code == 2 and "--safe-private FILE" in both.output
