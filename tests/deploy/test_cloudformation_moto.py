"""Both entry templates deployed in moto (in-process, offline): the defaults plus the required values,
and a matrix of the other branches; then what was made, seen through the service APIs.

moto does not model Rules, capacity providers, scaling or most attributes (spec 3, section 7.4);
test_cloudformation.py asserts those statically.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy.aws import BUCKET, IMAGE, REGION, Deployment, deploy, mocked_aws

CASES = {
    "defaults": {},
    "http": {"UseHTTPS": "HTTP", "CertificateID": ""},
    "retain-maxio": {"EFSDeletionPolicy": "Retain", "PerformanceMode": "maxIO"},
    "three-hosts-two-tasks": {"ClusterSize": "3", "DesiredServiceCount": "2"},
    # (moto's CloudFormation skips WAFv2 and alarms: they are checked statically)
    "internal-waf-exec-alarms": {
        "LoadBalancerScheme": "internal",
        "EnableWAF": "true",
        "AlarmEmail": "radiology-it@example.org",
        "RequireApiToken": "true",
        "ViewerSignIn": "cognito",
        "ViewerCognitoUserPoolArn": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_abc",
        "ViewerCognitoClientId": "1example23456789",
        "ViewerCognitoDomain": "carina-radiology",
        "ThroughputMode": "bursting",
        "EnableECSExec": "true",
        "AlbAccessLogBucket": "my-alb-logs",
    },
    "scaling-no-capacity-provider": {
        "DesiredServiceCount": "2",
        "MaxCount": "4",
        "CapacityProvider": "false",
    },
}
OUTPUTS = {
    "AlarmTopic",
    "CarinaServiceUrl",
    "LoadBalancerDNSName",
    "ElasticFileSystemDnsName",
    "ElasticFileSystemId",
    "ClusterName",
    "ServiceName",
    "ECSAutoScalingGroupName",
    "LogGroupName",
    "AdminTokenSecretArn",
    "ChildTemplatesUrl",
    "VPCID",
    "VPCCIDR",
}


def check_deployment(found: Deployment) -> None:
    """What every deployment must have made, whatever the parameters."""
    parameters, outputs = found.parameters, found.outputs
    https = parameters.get("UseHTTPS", "HTTPS") == "HTTPS"
    assert set(outputs) >= OUTPUTS
    dns = outputs["LoadBalancerDNSName"]
    assert outputs["CarinaServiceUrl"] == f"{'https' if https else 'http'}://{dns}/"
    file_system = outputs["ElasticFileSystemId"]
    assert outputs["ElasticFileSystemDnsName"] == f"{file_system}.efs.{REGION}.amazonaws.com"
    assert outputs["ChildTemplatesUrl"] == f"https://{BUCKET}.s3.{REGION}.amazonaws.com/carina/"

    efs = found.client("efs")
    (system,) = efs.describe_file_systems(FileSystemId=file_system)["FileSystems"]
    assert system["Encrypted"] is True
    assert system["PerformanceMode"] == parameters.get("PerformanceMode", "generalPurpose")
    (point,) = efs.describe_access_points(FileSystemId=file_system)["AccessPoints"]
    assert point["RootDirectory"]["Path"] == "/carina"
    assert point["PosixUser"]["Uid"] == 10001
    assert len(efs.describe_mount_targets(FileSystemId=file_system)["MountTargets"]) == 2

    ecs = found.client("ecs")
    (service,) = ecs.describe_services(
        cluster=outputs["ClusterName"], services=[outputs["ServiceName"]]
    )["services"]
    assert service["desiredCount"] == int(parameters.get("DesiredServiceCount", "1"))
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]
    assert container["image"] == IMAGE
    assert {"type": "GPU", "value": "1"} in container["resourceRequirements"]
    environment = {item["name"]: item["value"] for item in container["environment"]}
    assert environment["CARINA_SSL_SELF_SIGNED"] == ("true" if https else "false")
    # (moto keeps an AWS::NoValue list item as None; CloudFormation drops it)
    secrets = {item["name"]: item["valueFrom"] for item in container["secrets"] if item}
    assert secrets["CARINA_ADMIN_TOKEN"] == outputs["AdminTokenSecretArn"]
    assert "TokenSigningSecret" in secrets["CARINA_TOKEN_SECRET"]
    assert secrets.get("CARINA_API_TOKEN") == outputs.get("ApiTokenSecretArn")
    assert container["mountPoints"][0]["containerPath"] == "/workspace"

    autoscaling = found.client("autoscaling")
    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["ECSAutoScalingGroupName"]]
    )["AutoScalingGroups"]
    size = int(parameters.get("ClusterSize", "1"))
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, size, size + 1)
    template_id = group["LaunchTemplate"]["LaunchTemplateId"]
    (version,) = found.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=template_id
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["InstanceType"] == parameters.get("ECSHostInstanceType", "g5.2xlarge")
    assert re.fullmatch(r"ami-[0-9a-f]+", data["ImageId"]), "the AL2023 GPU image resolved from SSM"

    elb = found.client("elbv2")
    (balancer,) = [
        lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["DNSName"] == dns
    ]
    (group_tg,) = elb.describe_target_groups(LoadBalancerArn=balancer["LoadBalancerArn"])[
        "TargetGroups"
    ]
    assert group_tg["HealthCheckPath"] == "/health/ready"
    assert group_tg["Protocol"] == ("HTTPS" if https else "HTTP")
    listeners = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    ports = {listener["Port"]: listener for listener in listeners}
    assert set(ports) == ({80, 443} if https else {80})
    if https:
        assert ports[443]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
        assert ports[80]["DefaultActions"][0]["Type"] == "redirect"

    ec2 = found.client("ec2")
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    (alb_group,) = balancer["SecurityGroups"]
    nfs_rules = 0
    for group_id, found_group in groups.items():
        for rule in found_group["IpPermissions"]:
            sources = {pair["GroupId"] for pair in rule.get("UserIdGroupPairs", [])}
            cidrs = {block["CidrIp"] for block in rule.get("IpRanges", [])}
            assert "0.0.0.0/0" not in cidrs, found_group["GroupName"]
            if rule.get("FromPort") == 2049:
                nfs_rules += 1
                assert cidrs == set(), "EFS is reached from the hosts' group only, never a CIDR"
                (host_group,) = sources
                host_rules = groups[host_group]["IpPermissions"]
                assert any(
                    {p["GroupId"] for p in r.get("UserIdGroupPairs", [])} == {alb_group}
                    and (r["FromPort"], r["ToPort"]) == (32768, 65535)
                    for r in host_rules
                )
            if group_id == alb_group:
                assert cidrs == {"203.0.113.0/24"}
    assert nfs_rules == 1

    secret = found.client("secretsmanager").describe_secret(SecretId=outputs["AdminTokenSecretArn"])
    assert secret["KmsKeyId"].startswith("arn:aws:kms:")
    logs = found.client("logs").describe_log_groups(logGroupNamePrefix=outputs["LogGroupName"])[
        "logGroups"
    ]
    assert logs[0]["retentionInDays"] == 365


@pytest.mark.parametrize("entry", ["new-vpc", "existing-vpc"])
@pytest.mark.parametrize("case", CASES)
def test_entry_deploys_in_moto(entry: str, case: str) -> None:
    with mocked_aws():
        check_deployment(deploy(entry, **CASES[case]))


def test_new_vpc_makes_two_zones_with_nat_and_an_optional_bastion() -> None:
    with mocked_aws():
        found = deploy("new-vpc", CreateBastion="true", BastionAccessCidr="198.51.100.0/24")
        ec2 = found.client("ec2")
        vpc = found.outputs["VPCID"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        assert {s["AvailabilityZone"] for s in subnets} == {f"{REGION}a", f"{REGION}b"}
        assert sorted(s["CidrBlock"] for s in subnets) == sorted(
            ["10.0.0.0/19", "10.0.32.0/19", "10.0.128.0/20", "10.0.144.0/20"]
        )
        assert len(ec2.describe_nat_gateways()["NatGateways"]) == 2
        bastion_group = found.outputs["BastionSecurityGroupID"]
        (group,) = ec2.describe_security_groups(GroupIds=[bastion_group])["SecurityGroups"]
        assert group["IpPermissions"] == [], "no SSH without a key pair"
        host_rules = [
            rule
            for g in ec2.describe_security_groups()["SecurityGroups"]
            for rule in g["IpPermissions"]
            if rule.get("FromPort") == 22
        ]
        assert [pair["GroupId"] for pair in host_rules[0]["UserIdGroupPairs"]] == [bastion_group]
        check_deployment(found)


def test_existing_vpc_accepts_a_bastion_group() -> None:
    with mocked_aws():
        import boto3

        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        bastion = ec2.create_security_group(GroupName="bastion", Description="bastion", VpcId=vpc)[
            "GroupId"
        ]
        found = deploy("existing-vpc", BastionSecurityGroupID=bastion)
        assert found.outputs["BastionSecurityGroupID"] == bastion
        ssh = [
            rule
            for g in ec2.describe_security_groups()["SecurityGroups"]
            for rule in g["IpPermissions"]
            if rule.get("FromPort") == 22
        ]
        assert [pair["GroupId"] for r in ssh for pair in r["UserIdGroupPairs"]] == [bastion]


def test_packaging_puts_the_children_in_the_users_bucket() -> None:
    with mocked_aws():
        found = deploy("existing-vpc")
        s3 = found.client("s3")
        keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
        assert keys == [
            "carina/carina-existing-vpc.json",
            "carina/children/alarms.json",
            "carina/children/alb.json",
            "carina/children/ecs-cluster.json",
            "carina/children/efs.json",
            "carina/children/service.json",
        ]
        parameters = found.template["Parameters"]
        assert parameters["QSS3BucketName"]["Default"] == BUCKET
        assert parameters["QSS3BucketRegion"]["Default"] == REGION
        url = found.template["Resources"]["EFS"]["Properties"]["TemplateURL"]
        assert url == {
            "Fn::Sub": "https://${QSS3BucketName}.s3.${QSS3BucketRegion}.${AWS::URLSuffix}/${QSS3KeyPrefix}children/efs.json"
        }


def test_a_kept_workspace_is_served_again_by_a_new_stack() -> None:
    """EFSDeletionPolicy=Retain keeps the file system; ExistingFileSystemId gives it to a new stack,
    which makes mount targets and an access point on it instead of a new file system."""
    with mocked_aws():
        import boto3

        efs = boto3.client("efs", region_name=REGION)
        kept = efs.create_file_system(CreationToken="kept-workspace", Encrypted=True)
        found = deploy("new-vpc", ExistingFileSystemId=kept["FileSystemId"])
        assert found.outputs["ElasticFileSystemId"] == kept["FileSystemId"]
        systems = efs.describe_file_systems()["FileSystems"]
        assert [s["FileSystemId"] for s in systems] == [kept["FileSystemId"]]  # none made
        targets = efs.describe_mount_targets(FileSystemId=kept["FileSystemId"])["MountTargets"]
        assert len(targets) == 2
        (point,) = efs.describe_access_points(FileSystemId=kept["FileSystemId"])["AccessPoints"]
        assert point["RootDirectory"]["Path"] == "/carina"
