"""``carina aws doctor``: what a deployment needs that only its owner can do, checked before it.

A stack that fails half-way through tells what was missing an hour later, in a nested stack's
events. These checks ask the account first: a GPU quota for the instance family, a certificate that
is issued and in the stack's Region, a template bucket in that Region, the container image in ECR
built for the hosts' platform (linux/amd64), and, for an existing VPC, private subnets whose way
out is a NAT gateway. Each finding says what was found, or what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from carina.errors import CloudError

#: Service Quotas codes of the On-Demand vCPU quotas, by the first letter of the family.
_QUOTAS = {
    "g": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "p": ("L-417A185B", "Running On-Demand P instances"),
}
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9._/-]+)(?::(?P<tag>[\w.-]+)|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_MANIFEST_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]

Clients = Callable[[str], Any]


@dataclass(frozen=True)
class Finding:
    """One check: its name, whether it passed, and what was found or what to do."""

    check: str
    ok: bool
    detail: str


def run_doctor(
    values: Mapping[str, str], *, region: str, bucket: str | None, clients: Clients
) -> list[Finding]:
    """Every check that applies to the parameter ``values`` (defaults filled in).

    Args:
        values: the stack's parameters, as ``check_parameters`` resolves them.
        region: the Region the stack goes to.
        bucket: the S3 bucket the templates are packaged into (None: not checked).
        clients: a boto3 client by service name (``ec2``, ``service-quotas``, ``acm``, ``s3``,
            ``ecr``).
    """
    checks: list[tuple[str, Callable[[], Finding]]] = [
        ("gpu quota", lambda: gpu_quota(values, clients)),
        ("certificate", lambda: certificate(values, region, clients)),
        ("container image", lambda: container_image(values, region, clients)),
    ]
    if bucket is not None:
        checks.append(("template bucket", lambda: template_bucket(bucket, region, clients)))
    if values.get("PrivateSubnet1AID"):
        checks.append(("private subnets", lambda: private_subnets(values, clients)))
    return [_guarded(name, check) for name, check in checks]


def _guarded(name: str, check: Callable[[], Finding]) -> Finding:
    """A check, or what stopped it (no permission, a throttled call) as a failed finding."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return check()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        operation = exc.operation_name
        reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
        return Finding(name, False, f"{operation} was refused ({reason})")
    except (BotoCoreError, CloudError) as exc:
        return Finding(name, False, str(exc))


def gpu_quota(values: Mapping[str, str], clients: Clients) -> Finding:
    """The On-Demand vCPU quota of the instance family holds the largest cluster."""
    kind = values.get("ECSHostInstanceType", "")
    family = kind[:1]
    if family not in _QUOTAS:
        return Finding("gpu quota", False, f"{kind!r} is not a G or P instance type")
    code, title = _QUOTAS[family]
    described = clients("ec2").describe_instance_types(InstanceTypes=[kind])["InstanceTypes"]
    if not described:
        return Finding("gpu quota", False, f"{kind} is not offered here: choose another type")
    vcpus = int(described[0]["VCpuInfo"]["DefaultVCpus"])
    hosts = max(_count(values.get("ClusterSize")), _count(values.get("ClusterMaxSize")), 1)
    needed = vcpus * hosts
    quota = _quota_value(clients("service-quotas"), code)
    detail = f"{title}: {quota:g} vCPUs; {hosts} x {kind} need {needed}"
    if quota >= needed:
        return Finding("gpu quota", True, detail)
    return Finding(
        "gpu quota",
        False,
        f"{detail}: ask for {needed} in Service Quotas (EC2, quota {code}) and wait for approval",
    )


def _quota_value(quotas: Any, code: str) -> float:
    try:
        return float(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    except quotas.exceptions.NoSuchResourceException:
        default = quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)
        return float(default["Quota"]["Value"])


def _count(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def certificate(values: Mapping[str, str], region: str, clients: Clients) -> Finding:
    """With HTTPS: the ACM certificate is in the stack's Region and issued."""
    if values.get("UseHTTPS", "HTTPS") != "HTTPS":
        return Finding("certificate", True, "UseHTTPS=HTTP: no certificate needed")
    arn = values.get("CertificateID", "")
    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "acm":
        return Finding("certificate", False, "CertificateID is not an ACM certificate ARN")
    if parts[3] != region:
        return Finding(
            "certificate",
            False,
            f"the certificate is in {parts[3]}, the stack in {region}: request or import one in "
            f"{region} (a load balancer uses certificates of its own Region only)",
        )
    found = clients("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    status, names = found.get("Status", "?"), ", ".join(found.get("SubjectAlternativeNames", []))
    if status == "ISSUED":
        return Finding("certificate", True, f"issued for {names or found.get('DomainName', '')}")
    todo = (
        "add the DNS validation record ACM shows, then wait"
        if status == "PENDING_VALIDATION"
        else "request a new one"
    )
    return Finding("certificate", False, f"{status} (not ISSUED): {todo}")


def template_bucket(bucket: str, region: str, clients: Clients) -> Finding:
    """The template bucket is in the stack's Region (nested stacks load their templates there)."""
    location = clients("s3").get_bucket_location(Bucket=bucket).get("LocationConstraint")
    where = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
    if where == region:
        return Finding("template bucket", True, f"s3://{bucket} is in {region}")
    return Finding(
        "template bucket",
        False,
        f"s3://{bucket} is in {where}, the stack in {region}: use a bucket in {region}",
    )


def container_image(values: Mapping[str, str], region: str, clients: Clients) -> Finding:
    """The image is in ECR (in this Region) and built for linux/amd64, the hosts' platform."""
    image = values.get("ContainerImage", "")
    matched = _ECR_IMAGE.match(image)
    if matched is None:
        return Finding(
            "container image",
            False,
            f"{image or '(none)'} is not an ECR image: push it to ECR in {region} "
            "(docs/how-to/deploy-aws.md) so that the hosts pull it inside AWS",
        )
    if matched["region"] != region:
        return Finding(
            "container image", False, f"the image is in {matched['region']}: push it to {region}"
        )
    ecr = clients("ecr")
    reference = {"imageDigest": matched["digest"]} if matched["digest"] else {}
    reference = reference or {"imageTag": matched["tag"] or "latest"}
    answer = ecr.batch_get_image(
        registryId=matched["account"],
        repositoryName=matched["repository"],
        imageIds=[reference],
        acceptedMediaTypes=_MANIFEST_TYPES,
    )
    if not answer.get("images"):
        return Finding("container image", False, f"{image} is not in the repository: push it")
    manifest = json.loads(answer["images"][0]["imageManifest"])
    platforms = _platforms(manifest, ecr, matched)
    if "linux/amd64" in platforms:
        return Finding("container image", True, f"{image} ({', '.join(sorted(platforms))})")
    return Finding(
        "container image",
        False,
        f"{image} is built for {', '.join(sorted(platforms)) or 'an unknown platform'}; the GPU "
        "hosts are linux/amd64: build it again with docker build --platform linux/amd64",
    )


def _platforms(manifest: dict[str, Any], ecr: Any, matched: re.Match[str]) -> set[str]:
    """The platforms of an image: an index lists them; a single image's config says its own."""
    if "manifests" in manifest:
        return {
            f"{m['platform']['os']}/{m['platform']['architecture']}"
            for m in manifest["manifests"]
            if isinstance(m.get("platform"), dict) and m["platform"].get("os") != "unknown"
        }
    digest = manifest.get("config", {}).get("digest")
    if not digest:
        return set()
    url = ecr.get_download_url_for_layer(
        registryId=matched["account"], repositoryName=matched["repository"], layerDigest=digest
    )["downloadUrl"]
    try:
        config = httpx.get(url, timeout=30, follow_redirects=True).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CloudError(f"the image's config could not be read ({exc})") from None
    return {f"{config.get('os', '?')}/{config.get('architecture', '?')}"}


def private_subnets(values: Mapping[str, str], clients: Clients) -> Finding:
    """An existing VPC's private subnets reach out through a NAT gateway (the hosts pull the
    image, talk to ECS and signal CloudFormation), and are not public ones."""
    ec2 = clients("ec2")
    problems, routes = [], []
    for key in ("PrivateSubnet1AID", "PrivateSubnet2AID"):
        subnet = values.get(key, "")
        way = _way_out(ec2, subnet)
        routes.append(f"{subnet}: {way}")
        if not way.startswith("nat-"):
            problems.append(f"{key} {subnet} goes out through {way}")
    if not problems:
        return Finding("private subnets", True, "; ".join(routes))
    return Finding(
        "private subnets",
        False,
        "; ".join(problems) + ": give subnets whose route table sends 0.0.0.0/0 to a NAT gateway",
    )


def _way_out(ec2: Any, subnet: str) -> str:
    """What a subnet's 0.0.0.0/0 route goes to (its own route table, else the VPC's main one)."""
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet]}]
    )["RouteTables"]
    if not tables:
        vpc = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
        tables = ec2.describe_route_tables(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]},
            ]
        )["RouteTables"]
    for route in tables[0]["Routes"] if tables else []:
        if route.get("DestinationCidrBlock") == "0.0.0.0/0":
            for key in ("NatGatewayId", "GatewayId", "TransitGatewayId", "NetworkInterfaceId"):
                if route.get(key):
                    return str(route[key])
    return "no route to the internet"
