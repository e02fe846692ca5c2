"""moto support for the CloudFormation tests: the small workarounds of spec 3, section 7.4.

* Nested stacks: moto's stack model cannot answer ``Fn::GetAtt Child.Outputs.X``; we let it read the
  child's output map (an output moto dropped stays an error, never a made-up value).
* An update with ``UsePreviousValue`` for a parameter that took its default fails in moto (it keeps
  only the values given); we let it fall back to what the stack reports, as CloudFormation does.
* ``AWS::SecretsManager::Secret`` has no CloudFormation model in moto; we add one over moto's own
  Secrets Manager backend, so the secret really exists (generated value, KMS key) and has an ARN.

Everything else (capacity providers, scaling, backup) is skipped by moto with a ``UserWarning``; the
tests allow exactly those warnings, by resource type.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto import mock_aws
from moto.cloudformation import parsing
from moto.cloudformation.models import CloudFormationBackend, Stack
from moto.core.common_models import CloudFormationModel
from moto.secretsmanager.models import secretsmanager_backends

from carina.cloud import check_parameters, deploy_stack, entry_template, package_template

REGION = "us-east-1"
BUCKET = "carina-templates"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/carina:0.1.0-gpu"

#: Resource types moto skips (with a UserWarning) while the stack still completes.
SKIPPED_BY_MOTO = {
    "AWS::ECS::CapacityProvider",
    "AWS::ECS::ClusterCapacityProviderAssociations",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::ElasticLoadBalancingV2::ListenerRule",
    "AWS::EC2::SecurityGroupIngress",
    "AWS::CloudWatch::Alarm",  # alarms.yaml: checked statically in test_cloudformation.py
    "AWS::WAFv2::WebACL",
    "AWS::WAFv2::WebACLAssociation",
}


def _nested_output(self: Stack, name: str) -> Any:
    key = name.removeprefix("Outputs.")
    value = self.output_map.get(key)
    if value is None:
        raise KeyError(f"nested stack {self.name} has no output {key}")
    return value.value


_resolve_update_parameters = CloudFormationBackend._resolve_update_parameters


def _previous_values(
    self: CloudFormationBackend, instance: Any, incoming_params: list[dict[str, str]]
) -> dict[str, str]:
    reported = {**instance.parameters}
    for name, spec in instance.template_dict.get("Parameters", {}).items():
        reported.setdefault(name, spec.get("Default"))
    saved, instance.parameters = instance.parameters, reported
    try:
        return _resolve_update_parameters(self, instance, incoming_params)
    finally:
        instance.parameters = saved


class _MotoSecret(CloudFormationModel):
    """``AWS::SecretsManager::Secret`` over moto's Secrets Manager backend."""

    def __init__(self, arn: str) -> None:
        self.arn = arn

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SecretsManager::Secret"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Id"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> _MotoSecret:
        backend = secretsmanager_backends[account_id][region_name]
        properties = cloudformation_json["Properties"]
        generate = properties.get("GenerateSecretString", {})
        value = backend.get_random_password(
            password_length=int(generate.get("PasswordLength", 32)),
            exclude_characters=generate.get("ExcludeCharacters", ""),
            exclude_numbers=False,
            exclude_punctuation=bool(generate.get("ExcludePunctuation", False)),
            exclude_uppercase=False,
            exclude_lowercase=False,
            include_space=False,
            require_each_included_type=True,
        )
        created = backend.create_secret(
            name=resource_name,
            secret_string=json.loads(value)["RandomPassword"],
            secret_binary=None,
            description=properties.get("Description"),
            tags=None,
            kms_key_id=properties.get("KmsKeyId"),
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        return cls(json.loads(created)["ARN"])


@contextmanager
def mocked_aws() -> Iterator[None]:
    """moto's in-process AWS, with the two workarounds and the expected warnings allowed."""
    Stack.get_cfn_attribute = _nested_output  # type: ignore[attr-defined]
    CloudFormationBackend._resolve_update_parameters = _previous_values  # type: ignore[method-assign]
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
    assert _MotoSecret in parsing.get_model_list()
    with mock_aws(), warnings.catch_warnings():
        for kind in SKIPPED_BY_MOTO:
            warnings.filterwarnings("ignore", f"Tried to parse {kind} but", UserWarning)
        yield


@dataclass
class Deployment:
    """One stack deployed in moto: its outputs and clients to look at what was made."""

    outputs: dict[str, str]
    parameters: dict[str, str]
    template: dict[str, Any]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


def certificate_arn() -> str:
    """An ACM certificate in the mocked account (moto refuses unknown certificate ARNs)."""
    acm = boto3.client("acm", region_name=REGION)
    return acm.request_certificate(DomainName="carina.example.org")["CertificateArn"]


def required_values(entry: str) -> dict[str, str]:
    """The values an entry needs beyond its defaults (the existing VPC is made in moto first)."""
    values = {"SourceCidrIP": "203.0.113.0/24", "ContainerImage": IMAGE}
    if entry == "new-vpc":
        values["AvailabilityZones"] = f"{REGION}a,{REGION}b"
        return values
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.180.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.180.{i * 16}.0/20", AvailabilityZone=zone)
        for i, zone in enumerate([f"{REGION}a", f"{REGION}b"] * 2)
    ]
    ids = [subnet["Subnet"]["SubnetId"] for subnet in subnets]
    values.update(
        VPC=vpc,
        VPCCIDR="10.180.0.0/16",
        PublicSubnet1ID=ids[0],
        PublicSubnet2ID=ids[1],
        PrivateSubnet1AID=ids[2],
        PrivateSubnet2AID=ids[3],
    )
    return values


def deploy(entry: str, **overrides: str) -> Deployment:
    """Package ``entry`` into the mocked bucket and deploy it with the required values + overrides.

    Call inside :func:`mocked_aws`. With HTTPS (the default) a mocked ACM certificate is supplied
    unless ``CertificateID`` is given, since the Rules refuse HTTPS without one.
    """
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    packaged = package_template(entry_template(entry), bucket=BUCKET, region=REGION, s3=s3)
    values = required_values(entry) | overrides
    if values.get("UseHTTPS", "HTTPS") == "HTTPS" and "CertificateID" not in values:
        values["CertificateID"] = certificate_arn()
    check_parameters(packaged.body, values)
    cfn = boto3.client("cloudformation", region_name=REGION)
    outputs = deploy_stack(
        cfn, name="carina", template_url=packaged.url, parameters=values, poll_seconds=0
    )
    return Deployment(outputs=outputs, parameters=values, template=packaged.body)
