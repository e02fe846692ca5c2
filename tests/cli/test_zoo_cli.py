"""``carina zoo`` from the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from carina.cli.main import app
from tests.zoo.conftest import ZOO

runner = CliRunner()


def test_list_verify_install(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["zoo", "list"])
    assert listed.exit_code == 0
    for name in ZOO:
        assert name in listed.stdout
    verified = runner.invoke(app, ["zoo", "verify"])
    assert verified.exit_code == 0 and "ok" in verified.stdout
    installed = runner.invoke(
        app, ["zoo", "install", "brain_mr_tissue", "--workspace", str(tmp_path)]
    )
    assert installed.exit_code == 0, installed.output
    assert (tmp_path / "models" / "brain_mr_tissue" / "models" / "model.pt").is_file()
    missing = runner.invoke(
        app, ["zoo", "install", "https://127.0.0.1:9/x.zip", "--workspace", str(tmp_path)]
    )
    assert missing.exit_code != 0 and "--sha256 is required" in str(missing.exception)
