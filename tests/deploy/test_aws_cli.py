"""``carina aws package|deploy|outputs|delete`` against moto, and the templates inside the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from carina.cli.main import app
from tests.deploy.aws import BUCKET, IMAGE, REGION, certificate_arn, mocked_aws, required_values
from tests.deploy.cfn import ALL, ROOT


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["aws", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def params(values: dict[str, str]) -> list[str]:
    return [item for key, value in values.items() for item in ("--param", f"{key}={value}")]


def test_deploy_outputs_update_and_delete_an_existing_vpc_stack() -> None:
    with mocked_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        values = required_values("existing-vpc") | {"CertificateID": certificate_arn()}
        args = [
            "deploy",
            "--template",
            "existing-vpc",
            "--stack-name",
            "carina",
            "--bucket",
            BUCKET,
        ]
        code, out, err = run(*args, *params(values), "--wait")
        assert code == 0, err
        assert "CREATE_COMPLETE" in err  # live progress on stderr
        assert "CarinaServiceUrl: https://" in out
        code, out, _ = run("outputs", "--stack-name", "carina", "--json")
        outputs = json.loads(out)
        assert outputs["CarinaServiceUrl"].startswith("https://")
        assert outputs["ClusterName"]

        # An update changes only what it names; the rest keeps its previous value.
        code, out, err = run(*args, "--param", "DesiredServiceCount=2", "--wait")
        assert code == 0, err
        outputs = json.loads(run("outputs", "--stack-name", "carina", "--json")[1])
        ecs = boto3.client("ecs", region_name=REGION)
        (service,) = ecs.describe_services(
            cluster=outputs["ClusterName"], services=[outputs["ServiceName"]]
        )["services"]
        assert service["desiredCount"] == 2
        stack = boto3.client("cloudformation", region_name=REGION).describe_stacks(
            StackName="carina"
        )["Stacks"][0]
        given = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
        assert given["ContainerImage"] == IMAGE

        code, _, err = run("delete", "--stack-name", "carina", "--wait")
        assert code == 0, err
        result = CliRunner().invoke(app, ["aws", "outputs", "--stack-name", "carina"])
        assert "stack carina does not exist" in str(result.exception)


def test_bad_parameters_are_refused_before_anything_is_made() -> None:
    with mocked_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        values = required_values("new-vpc") | {
            "ClusterSize": "3",
            "ClusterMaxSize": "2",
            "Colour": "red",
        }
        result = CliRunner().invoke(
            app,
            ["aws", "deploy", "--stack-name", "carina", "--bucket", BUCKET, *params(values)],
        )
        assert result.exit_code == 1
        message = str(result.exception)
        assert "Colour: not a parameter" in message
        assert "CertificateID" not in message  # Rules run once the values themselves are valid
        result = CliRunner().invoke(
            app,
            [
                "aws",
                "deploy",
                "--stack-name",
                "carina",
                "--bucket",
                BUCKET,
                *params(required_values("new-vpc")),
            ],
        )
        assert "UseHTTPS=HTTPS needs CertificateID" in str(result.exception)
        cfn = boto3.client("cloudformation", region_name=REGION)
        assert cfn.describe_stacks()["Stacks"] == []
        assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(
            Bucket=BUCKET
        )


def test_package_prints_the_entry_url_and_refuses_a_missing_bucket() -> None:
    with mocked_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        code, out, err = run("package", "--bucket", BUCKET, "--prefix", "prod/carina/")
        assert code == 0, err
        assert (
            out.strip()
            == f"https://{BUCKET}.s3.{REGION}.amazonaws.com/prod/carina/carina-new-vpc.json"
        )
        assert err.count("uploaded s3://") == 8
        result = CliRunner().invoke(app, ["aws", "package", "--bucket", "no-such-bucket"])
        assert result.exit_code == 1
        assert "no-such-bucket" in str(result.exception) and "bucket does not exist" in str(
            result.exception
        )
        result = CliRunner().invoke(
            app, ["aws", "package", "--bucket", BUCKET, "--prefix", "no-slash"]
        )
        assert "--prefix" in str(result.exception)


def test_the_main_entry_point_prints_one_clear_line() -> None:
    """Through `carina` itself: a CarinaError is one red line and exit status 1, no traceback."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "carina",
            "aws",
            "deploy",
            "--stack-name",
            "x",
            "--bucket",
            "b",
            "--template",
            "nope",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": REGION},
    )
    assert result.returncode == 1
    assert "--template: nope: unknown" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_the_wheel_carries_the_templates(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("carina-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ALL.values():
        relative = path.relative_to(ROOT / "deploy" / "cloudformation")
        assert f"carina/cloud/templates/{relative}" in names
    # The browser viewer travels too: its pages and the vendored Niivue with its licences.
    static = ROOT / "src" / "carina" / "server" / "viewer" / "static"
    for path in static.rglob("*"):
        if path.is_file():
            assert f"carina/server/viewer/static/{path.relative_to(static)}" in names
