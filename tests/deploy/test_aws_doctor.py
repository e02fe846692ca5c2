"""``carina aws doctor``: the account checked before a deploy, against moto (EC2, ACM, S3, ECR) and
stubbed responses where moto lacks the service (Service Quotas) or the data (an image's config
blob, served from 127.0.0.1 as ECR's download URL would)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from carina.cli.main import app
from carina.cloud.doctor import Finding, container_image, run_doctor
from tests.deploy.aws import BUCKET, REGION, mocked_aws, required_values

REPOSITORY = "carina"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)


def quotas(vcpus: float) -> Any:
    """A Service Quotas client answering the G/VT quota with ``vcpus``."""
    client = boto3.client("service-quotas", region_name=REGION)
    stubber = Stubber(client)
    answer = {"Quota": {"QuotaCode": "L-DB2E81BA", "ServiceCode": "ec2", "Value": vcpus}}
    stubber.add_response(
        "get_service_quota", answer, {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"}
    )
    stubber.activate()
    return client


def clients(vcpus: float = 64) -> Any:
    made = {"service-quotas": quotas(vcpus)}
    return lambda service: made.get(service) or boto3.client(service, region_name=REGION)


def issued_certificate(tmp_path: Path) -> str:
    from carina.server.run import self_signed_certificate

    files = self_signed_certificate(tmp_path, hostname="carina.example.org")
    acm = boto3.client("acm", region_name=REGION)
    imported = acm.import_certificate(
        Certificate=files.certfile.read_bytes(), PrivateKey=files.keyfile.read_bytes()
    )
    return str(imported["CertificateArn"])


def push_index(tag: str, platforms: list[tuple[str, str]]) -> None:
    """An image index in moto's ECR listing ``platforms`` (os, architecture)."""
    ecr = boto3.client("ecr", region_name=REGION)
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=REPOSITORY)
    manifests = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + f"{n:064x}",
            "size": 1000,
            "platform": {"os": system, "architecture": architecture},
        }
        for n, (system, architecture) in enumerate(platforms, start=1)
    ]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    ecr.put_image(
        repositoryName=REPOSITORY,
        imageManifest=json.dumps({**index, "manifests": manifests}),
        imageManifestMediaType="application/vnd.oci.image.index.v1+json",
        imageTag=tag,
    )


def with_nat(values: dict[str, str]) -> None:
    """Route the existing VPC's private subnets through a NAT gateway (public ones: the IGW)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=values["VPC"])
    public = ec2.create_route_table(VpcId=values["VPC"])["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    address = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=values["PublicSubnet1ID"], AllocationId=address)
    private = ec2.create_route_table(VpcId=values["VPC"])["RouteTable"]["RouteTableId"]
    nat_id = nat["NatGateway"]["NatGatewayId"]
    ec2.create_route(RouteTableId=private, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat_id)
    for key, table in (("PublicSubnet1ID", public), ("PublicSubnet2ID", public)):
        ec2.associate_route_table(RouteTableId=table, SubnetId=values[key])
    ec2.associate_route_table(RouteTableId=private, SubnetId=values["PrivateSubnet1AID"])
    ec2.associate_route_table(RouteTableId=private, SubnetId=values["PrivateSubnet2AID"])


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {found.check: found for found in findings}


def test_a_ready_account_passes_every_check(tmp_path: Path) -> None:
    with mocked_aws():
        values = required_values("existing-vpc") | {
            "ECSHostInstanceType": "g5.2xlarge",
            "ClusterSize": "2",
            "CertificateID": issued_certificate(tmp_path),
            "ContainerImage": f"{IMAGE}:0.1.0-gpu",
        }
        with_nat(values)
        push_index("0.1.0-gpu", [("linux", "amd64"), ("linux", "arm64")])
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        found = by_check(run_doctor(values, region=REGION, bucket=BUCKET, clients=clients(64)))
    assert all(f.ok for f in found.values()), found
    assert set(found) == {
        "gpu quota",
        "certificate",
        "container image",
        "template bucket",
        "private subnets",
    }
    assert found["gpu quota"].detail.endswith("64 vCPUs; 2 x g5.2xlarge need 16")


def test_what_is_missing_is_named_with_what_to_do(tmp_path: Path) -> None:
    with mocked_aws():
        values = required_values("existing-vpc") | {
            "ECSHostInstanceType": "g5.2xlarge",
            "ClusterSize": "1",
            "ClusterMaxSize": "4",
            "ContainerImage": f"{IMAGE}:arm",
        }
        acm = boto3.client("acm", region_name=REGION)
        values["CertificateID"] = acm.request_certificate(DomainName="carina.example.org")[
            "CertificateArn"
        ]
        push_index("arm", [("linux", "arm64")])
        europe = boto3.client("s3", region_name="eu-west-1")
        europe.create_bucket(
            Bucket="bucket-in-europe", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        found = by_check(
            run_doctor(values, region=REGION, bucket="bucket-in-europe", clients=clients(8))
        )
    assert not any(f.ok for f in found.values()), found
    assert "4 x g5.2xlarge need 32" in found["gpu quota"].detail
    assert "L-DB2E81BA" in found["gpu quota"].detail
    assert found["certificate"].detail.startswith("PENDING_VALIDATION (not ISSUED): add the DNS")
    assert "--platform linux/amd64" in found["container image"].detail
    assert "is in eu-west-1, the stack in us-east-1" in found["template bucket"].detail
    assert "no route to the internet" in found["private subnets"].detail


def test_a_certificate_in_another_region_and_an_image_outside_ecr() -> None:
    values = {
        "ECSHostInstanceType": "g5.2xlarge",
        "UseHTTPS": "HTTPS",
        "CertificateID": "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
        "ContainerImage": "carina:gpu",
    }
    with mocked_aws():
        found = by_check(run_doctor(values, region=REGION, bucket=None, clients=clients()))
    assert "the certificate is in eu-west-1, the stack in us-east-1" in found["certificate"].detail
    assert "is not an ECR image: push it to ECR in us-east-1" in found["container image"].detail


@pytest.fixture
def config_server() -> Iterator[str]:
    """127.0.0.1 serving an image config of linux/arm64, as ECR's presigned URL serves the blob."""

    class Config(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"os": "linux", "architecture": "arm64"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/config"
    finally:
        server.shutdown()
        server.server_close()


def test_a_single_platform_image_is_read_from_its_config(config_server: str) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    stubber = Stubber(ecr)
    digest = "sha256:" + "ab" * 32
    manifest = {"schemaVersion": 2, "config": {"digest": digest, "size": 100}, "layers": []}
    stubber.add_response(
        "batch_get_image",
        {"images": [{"imageManifest": json.dumps(manifest)}], "failures": []},
    )
    stubber.add_response(
        "get_download_url_for_layer", {"downloadUrl": config_server, "layerDigest": digest}
    )
    stubber.activate()
    values = {"ContainerImage": f"{IMAGE}:single"}
    found = container_image(values, REGION, lambda service: ecr)
    assert not found.ok and "built for linux/arm64" in found.detail


def test_the_command_line_lists_findings_and_fails_when_one_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carina.cloud import session

    real = session.aws_client
    stubbed = quotas(64)  # moto has no Service Quotas for EC2
    monkeypatch.setattr(
        session,
        "aws_client",
        lambda service, **kw: stubbed if service == "service-quotas" else real(service, **kw),
    )
    with mocked_aws():
        values = required_values("new-vpc") | {"CertificateID": issued_certificate(tmp_path)}
        arguments = [f"{key}={value}" for key, value in values.items()]
        done = CliRunner().invoke(
            app,
            ["aws", "doctor", "--region", REGION, *[a for v in arguments for a in ("-p", v)]],
        )
    assert done.exit_code == 1, done.output
    assert "ok      certificate: issued for" in done.output
    assert "ok      gpu quota: Running On-Demand G and VT instances: 64 vCPUs" in done.output
    assert "missing container image" in done.output  # the mocked ECR has no image
    assert "to do before `carina aws deploy` in us-east-1" in done.output
