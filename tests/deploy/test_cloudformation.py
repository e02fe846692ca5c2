"""The CloudFormation templates, read statically: the seed's parameters, the Rules, every fixed item
of spec 3's defect list (one test each, named after it) and what moto cannot see. Deployments in
moto are in test_cloudformation_moto.py, linters in test_cloudformation_lint.py."""

from __future__ import annotations

import itertools
import re

import pytest

from carina.cloud import check_parameters, entry_template, load_template
from carina.cloud.checks import resolved_parameters, rule_failures
from carina.errors import ConfigError
from tests.deploy.cfn import ALL, CFN, ENTRIES, one, resources, template, user_data, walk

SEED_NEW_VPC = {
    "AvailabilityZones": None,
    "VPCCIDR": "10.0.0.0/16",
    "PrivateSubnet1CIDR": "10.0.0.0/19",
    "PrivateSubnet2CIDR": "10.0.32.0/19",
    "PublicSubnet1CIDR": "10.0.128.0/20",
    "PublicSubnet2CIDR": "10.0.144.0/20",
    "KeyName": "",
    "BastionKeyPairName": "",
    "BastionAccessCidr": "",
    "SourceCidrIP": None,
    "EFSDeletionPolicy": "Delete",
    "PerformanceMode": "generalPurpose",
    "ECSHostInstanceType": "g5.2xlarge",
    "ClusterSize": "1",
    "DesiredServiceCount": "1",
    "UseHTTPS": "HTTPS",
    "CertificateID": "",
    "QSS3BucketName": "",
    "QSS3BucketRegion": "us-east-1",
    "QSS3KeyPrefix": "carina/",
}
SEED_EXISTING_VPC = {
    **{
        key: SEED_NEW_VPC[key]
        for key in SEED_NEW_VPC
        if "Subnet" not in key and "Bastion" not in key
    },
    "VPC": None,
    "VPCCIDR": None,
    "PublicSubnet1ID": None,
    "PublicSubnet2ID": None,
    "PrivateSubnet1AID": None,
    "PrivateSubnet2AID": None,
    "BastionSecurityGroupID": "",
}
del SEED_EXISTING_VPC["AvailabilityZones"]
REQUIRED = {
    "new-vpc": {"AvailabilityZones": "eu-west-1a,eu-west-1b"},
    "existing-vpc": {
        "VPC": "vpc-0343606e",
        "VPCCIDR": "10.180.0.0/16",
        "PublicSubnet1ID": "subnet-a0246dc9",
        "PublicSubnet2ID": "subnet-a0246dc1",
        "PrivateSubnet1AID": "subnet-a0246dcd",
        "PrivateSubnet2AID": "subnet-b58c3d67",
    },
}
CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/0f6c1c2a-9b3e-4a53-8d3c-2b9f0e4c7d11"


def values(entry: str, **overrides: str) -> dict[str, str]:
    base = {"SourceCidrIP": "203.0.113.0/24", "ContainerImage": "carina:gpu", "CertificateID": CERT}
    return REQUIRED[entry] | base | overrides


def rules_refuse(entry: str, **overrides: str) -> list[str]:
    """The Rules' complaints about the entry's defaults plus the given values."""
    resolved = resolved_parameters(template(entry), values(entry, **overrides))
    return rule_failures(template(entry), resolved)


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_seed_parameter_is_kept_with_its_name(entry: str) -> None:
    """Every parameter of the seed's tables exists; required ones stay required; defaults as noted."""
    seed = SEED_NEW_VPC if entry == "new-vpc" else SEED_EXISTING_VPC
    parameters = template(entry)["Parameters"]
    for name, default in seed.items():
        assert name in parameters, name
        if default is None:
            assert "Default" not in parameters[name], f"{name} must stay required"
        else:
            assert str(parameters[name]["Default"]) == default, name
    assert parameters["UseHTTPS"]["AllowedValues"] == ["HTTPS", "HTTP"]
    assert parameters["EFSDeletionPolicy"]["AllowedValues"] == ["Delete", "Retain"]
    assert parameters["PerformanceMode"]["AllowedValues"] == ["generalPurpose", "maxIO"]


def test_both_entries_have_the_same_knobs_and_outputs() -> None:
    """Apart from the network, both entries take the same parameters (same specs) and outputs."""
    new, existing = template("new-vpc"), template("existing-vpc")
    network = {"VPC", "VPCCIDR", "AvailabilityZones", "VPCFlowLogs", "CreateBastion"}
    network |= {name for name in [*new["Parameters"], *existing["Parameters"]] if "Subnet" in name}
    network |= {name for name in [*new["Parameters"], *existing["Parameters"]] if "Bastion" in name}
    shared_new = {k: v for k, v in new["Parameters"].items() if k not in network}
    shared_existing = {k: v for k, v in existing["Parameters"].items() if k not in network}
    assert shared_new == shared_existing
    assert new["Rules"] == existing["Rules"]
    assert {k for k, v in new["Outputs"].items() if "Bastion" not in k} == {
        k for k, v in existing["Outputs"].items() if "Bastion" not in k
    }


@pytest.mark.parametrize("entry", ENTRIES)
def test_nested_stacks_pass_exactly_the_parameters_their_children_declare(entry: str) -> None:
    for name, stack in resources(entry, "AWS::CloudFormation::Stack").items():
        location = stack["Properties"]["TemplateURL"]
        assert location.startswith("children/"), "children are referenced by local relative path"
        child = load_template(CFN / location)["Parameters"]
        given = set(stack["Properties"].get("Parameters", {}))
        assert given <= set(child), f"{name}: unknown {given - set(child)}"
        required = {key for key, spec in child.items() if "Default" not in spec}
        assert required <= given, f"{name}: missing {required - given}"


def test_every_parameter_is_used() -> None:
    """No parameter is dead weight (cfn-lint W2001 checks this too; this also covers the Rules)."""
    for name in ALL:
        body = template(name)
        refs = {
            node["Ref"]
            for node in walk(body["Resources"])
            if isinstance(node, dict) and "Ref" in node
        }
        refs |= {
            node["Ref"]
            for node in walk(body.get("Outputs", {}))
            if isinstance(node, dict) and "Ref" in node
        }
        refs |= {
            node["Ref"]
            for node in walk([body.get("Conditions", {}), body.get("Rules", {})])
            if isinstance(node, dict) and "Ref" in node
        }
        text = repr(body["Resources"]) + repr(body.get("Outputs", {}))
        for parameter in body["Parameters"]:
            assert parameter in refs or "${" + parameter + "}" in text, f"{name}: {parameter}"


@pytest.mark.parametrize(
    ("parameter", "good", "bad"),
    [
        (
            "VPCCIDR",
            ["10.0.0.0/16", "172.16.0.0/28", "192.168.1.0/24"],
            ["10.0.0.0/8", "10.0.0.0/29", "10.0.0/16", "256.0.0.0/16", "10.0.0.0"],
        ),
        (
            "SourceCidrIP",
            ["198.51.100.0/24", "203.0.113.7/32", "10.1.0.0/16"],
            ["203.0.113.7", "203.0.113.0/33", "any", ""],
        ),
        ("BastionAccessCidr", ["", "198.51.100.0/24"], ["198.51.100.0", "x/24"]),
        (
            "CertificateID",
            ["", CERT, "arn:aws-cn:acm:cn-north-1:123456789012:certificate/abc-123"],
            ["cert", "arn:aws:iam::123456789012:server-certificate/x"],
        ),
        (
            "ECSHostInstanceType",
            [
                "g5.2xlarge",
                "g6e.xlarge",
                "g4dn.12xlarge",
                "p3.2xlarge",
                "p4d.24xlarge",
                "p5.48xlarge",
            ],
            ["t3.micro", "m7i.large", "g5g.xlarge", "p3.2xlargee", ""],
        ),
        ("ClusterSize", ["0", "1", "32"], ["-1", "33", "1.5", ""]),
        ("DesiredServiceCount", ["0", "2", "32"], ["33", "two"]),
        ("QSS3BucketName", ["", "my-bucket", "my.bucket1"], ["-bucket", "bucket-", "my_bucket"]),
        ("QSS3KeyPrefix", ["", "carina/", "a/b-c.d/"], ["carina", "/carina/", "a b/"]),
        ("SignalTimeout", ["PT30M", "PT1H", "PT1H30M"], ["30", "PT", "P1D"]),
    ],
)
def test_allowed_patterns(parameter: str, good: list[str], bad: list[str]) -> None:
    body = template("new-vpc")
    for sample in good:  # over HTTP, where an empty CertificateID is fine
        check_parameters(body, values("new-vpc", UseHTTPS="HTTP", **{parameter: sample}))
    for sample in bad:
        with pytest.raises(ConfigError, match=parameter):
            check_parameters(body, values("new-vpc", UseHTTPS="HTTP", **{parameter: sample}))


def test_unknown_and_missing_parameters_are_all_named() -> None:
    with pytest.raises(ConfigError) as caught:
        check_parameters(template("existing-vpc"), {"ContainerImage": "x", "Colour": "red"})
    message = str(caught.value)
    for name in ("Colour", "VPC:", "SourceCidrIP", "PublicSubnet1ID"):
        assert name in message


# --- spec 3, section 5: one test per defect, named after it ------------------------------------


def test_01_desired_service_count_above_one_works() -> None:
    """MaxCount is passed (0 = fixed at DesiredServiceCount) and the Rules refuse Max < Desired."""
    for desired, maximum in itertools.product(range(33), range(65)):
        failures = rules_refuse("new-vpc", DesiredServiceCount=str(desired), MaxCount=str(maximum))
        refused = any("MaxCount" in failure for failure in failures)
        assert refused == (0 < maximum < desired), (desired, maximum)
    stack = resources("new-vpc")["CarinaService"]["Properties"]["Parameters"]
    assert stack["MaxCount"] == {
        "Fn::If": ["MaxCountGiven", {"Ref": "MaxCount"}, {"Ref": "DesiredServiceCount"}]
    }
    target = resources("service")["ScalableTarget"]
    assert target["Condition"] == "ScalingOn"
    assert target["Properties"]["MinCapacity"] == {"Ref": "DesiredServiceCount"}
    assert target["Properties"]["MaxCapacity"] == {"Ref": "MaxCount"}


def test_02_rolling_updates_work_at_cluster_size_one() -> None:
    """The host group keeps ClusterSize in service during updates and has room for one more."""
    group = resources("ecs-cluster")["HostGroup"]
    update = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert update["MinInstancesInService"] == {"Ref": "ClusterSize"}
    assert group["Properties"]["MaxSize"] == {"Ref": "ClusterMaxSize"}
    mapping = template("new-vpc")["Mappings"]["ClusterSizePlusOne"]
    assert all(int(row["MaxSize"]) == int(size) + 1 for size, row in mapping.items())
    for size, maximum in itertools.product(range(33), range(34)):
        failures = rules_refuse("new-vpc", ClusterSize=str(size), ClusterMaxSize=str(maximum))
        refused = any("ClusterMaxSize" in failure for failure in failures)
        assert refused == (0 < maximum <= size), (size, maximum)


@pytest.mark.parametrize("entry", ENTRIES)
def test_03_https_without_a_certificate_is_refused(entry: str) -> None:
    body = template(entry)
    with pytest.raises(ConfigError, match="CertificateID"):
        check_parameters(body, values(entry, CertificateID=""))
    check_parameters(body, values(entry, CertificateID="", UseHTTPS="HTTP"))
    check_parameters(body, values(entry))


def test_04_deployments_cannot_deadlock_on_one_gpu() -> None:
    deployment = one("service", "AWS::ECS::Service")["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] == {"Ref": "DeploymentMinimumHealthyPercent"}
    assert deployment["MaximumPercent"] == {"Ref": "DeploymentMaximumPercent"}
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    parameters = template("new-vpc")["Parameters"]
    assert parameters["DeploymentMinimumHealthyPercent"]["Default"] == 0
    assert parameters["DeploymentMaximumPercent"]["Default"] == 100


def test_05_hosts_and_tasks_can_scale_out() -> None:
    """A capacity provider (managed scaling, draining) on by default; tasks scale on requests."""
    assert template("new-vpc")["Parameters"]["CapacityProvider"]["Default"] == "true"
    provider = one("ecs-cluster", "AWS::ECS::CapacityProvider")["AutoScalingGroupProvider"]
    assert provider["ManagedScaling"]["Status"] == "ENABLED"
    assert provider["ManagedDraining"] == "ENABLED"
    service = one("service", "AWS::ECS::Service")
    assert service["CapacityProviderStrategy"]["Fn::If"][0] == "UsesCapacityProvider"
    policy = one("service", "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    metric = policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
    assert metric["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    for name in ALL:  # the only alarms are alarms.yaml's, none of them on CPU for GPU work
        alarms = resources(name, "AWS::CloudWatch::Alarm").values()
        assert not [a for a in alarms if a["Properties"].get("MetricName") == "CPUUtilization"], (
            name
        )


def test_06_no_fixed_names_collide_across_stacks() -> None:
    named = [
        one("service", "AWS::ApplicationAutoScaling::ScalingPolicy")["PolicyName"],
        one("ecs-cluster", "AWS::ECS::CapacityProvider")["Name"],
        one("service", "AWS::ECS::TaskDefinition")["Family"],
    ]
    assert all("${AWS::StackName}" in str(name) for name in named)
    fixed = {
        "AWS::ECS::Cluster": "ClusterName",
        "AWS::ECS::Service": "ServiceName",
        "AWS::IAM::Role": "RoleName",
        "AWS::ElasticLoadBalancingV2::LoadBalancer": "Name",
        "AWS::ElasticLoadBalancingV2::TargetGroup": "Name",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::SecretsManager::Secret": "Name",
    }
    for name in ALL:
        for kind, key in fixed.items():
            for resource in resources(name, kind).values():
                assert key not in resource["Properties"], f"{name}: fixed {kind} {key}"


def test_07_hosts_signal_after_readiness_and_keep_no_certificates_on_shared_storage() -> None:
    script = user_data()
    check = script.index("nvidia-smi")
    assert script.index("ContainerInstanceArn") < script.index("cfn-signal")
    assert check < script.index("cfn-signal")
    assert "After=ecs.service" in script and "--no-block" in script
    assert "-e $$rc" in script, "failure is signalled, not hidden"
    for forbidden in ("openssl", "/mnt/efs", "mount ", "certs/", "fstab"):
        assert forbidden not in script
    environment = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0][
        "Environment"
    ]
    assert {
        "Name": "CARINA_SSL_SELF_SIGNED",
        "Value": {"Fn::If": ["HTTPSOn", "true", "false"]},
    } in environment


def test_08_service_url_has_a_scheme() -> None:
    url = template("alb")["Outputs"]["LoadBalancerUrl"]["Value"]["Fn::If"]
    assert url[0] == "HTTPSOn"
    assert url[1]["Fn::Sub"].startswith("https://") and url[2]["Fn::Sub"].startswith("http://")
    for entry in ENTRIES:
        assert template(entry)["Outputs"]["CarinaServiceUrl"]["Value"] == {
            "Fn::GetAtt": ["LoadBalancer", "Outputs.LoadBalancerUrl"]
        }


def test_09_no_literal_partition_or_domain() -> None:
    for name in ALL:
        body = template(name)
        text = repr([body["Resources"], body.get("Outputs"), body.get("Conditions")])
        defaults = [str(spec.get("Default", "")) for spec in body["Parameters"].values()]
        for value in [text, *defaults]:
            assert "arn:aws:" not in value, name
            assert "amazonaws.com" not in value, name


def test_10_existing_vpc_bastion_is_optional() -> None:
    spec = template("existing-vpc")["Parameters"]["BastionSecurityGroupID"]
    assert spec["Default"] == "" and spec["Type"] == "String"
    ssh = resources("ecs-cluster")["HostSSHIngress"]
    assert ssh["Condition"] == "HasBastion"
    assert ssh["Properties"]["SourceSecurityGroupId"] == {"Ref": "BastionSecurityGroupID"}
    check_parameters(template("existing-vpc"), values("existing-vpc"))


def test_11_security_group_rules_are_minimal_and_described() -> None:
    host = one("ecs-cluster", "AWS::EC2::SecurityGroup")["SecurityGroupIngress"]
    assert host == [
        {
            "Description": host[0]["Description"],
            "IpProtocol": "tcp",
            "FromPort": 32768,
            "ToPort": 65535,
            "SourceSecurityGroupId": {"Ref": "LoadBalancerSecurityGroupID"},
        }
    ]
    efs = one("efs", "AWS::EC2::SecurityGroup")["SecurityGroupIngress"]
    assert len(efs) == 1 and efs[0]["FromPort"] == efs[0]["ToPort"] == 2049
    assert efs[0]["SourceSecurityGroupId"] == {"Ref": "HostSecurityGroupID"}
    for name in ALL:
        for group in resources(name, "AWS::EC2::SecurityGroup").values():
            for rule in group["Properties"].get("SecurityGroupIngress", []):
                assert rule.get("Description"), name
                assert rule.get("CidrIp") != "0.0.0.0/0", name
        for rule in resources(name, "AWS::EC2::SecurityGroupIngress").values():
            assert rule["Properties"].get("Description"), name
            assert rule["Properties"].get("CidrIp") != "0.0.0.0/0", name


def test_12_current_gpu_instance_types_are_allowed_in_both_entries() -> None:
    patterns = {
        name: template(name)["Parameters"]["ECSHostInstanceType"]["AllowedPattern"]
        for name in ("new-vpc", "existing-vpc", "ecs-cluster")
    }
    assert len(set(patterns.values())) == 1
    pattern = next(iter(patterns.values()))
    for kind in (
        "g4dn.xlarge",
        "g5.48xlarge",
        "g6.4xlarge",
        "g6e.12xlarge",
        "gr6.8xlarge",
        "p4d.24xlarge",
        "p5.48xlarge",
    ):
        assert re.fullmatch(pattern, kind), kind


def test_13_no_dead_cloudwatch_agent_configuration() -> None:
    """The CloudWatch agent runs on the hosts for one purpose, and that purpose is used: its GPU
    metric is what the GpuSaturated alarm reads (no SSM parameter, no unread metrics)."""
    for name in ALL:
        assert not resources(name, "AWS::SSM::Parameter"), name
    script = user_data()
    assert "amazon-cloudwatch-agent-ctl -a fetch-config" in script
    assert '"nvidia_gpu": {"measurement": ["utilization_gpu"' in script
    assert '"AutoScalingGroupName": "${!aws:AutoScalingGroupName}"' in script
    assert "|| echo" in script  # an agent that fails to start does not keep a host from serving
    role = one("ecs-cluster", "AWS::IAM::Role")["ManagedPolicyArns"]
    agent = "arn:${AWS::Partition}:iam::aws:policy/CloudWatchAgentServerPolicy"
    assert {"Fn::Sub": agent} in role
    gpu = resources("alarms")["GpuSaturated"]["Properties"]
    assert (gpu["Namespace"], gpu["MetricName"]) == ("CWAgent", "nvidia_smi_utilization_gpu")


def test_alarms_with_an_sns_e_mail_parameter() -> None:
    alarms = template("alarms")
    made = resources("alarms", "AWS::CloudWatch::Alarm")
    assert set(made) == {"ServerErrorRate", "UnhealthyTargets", "GpuSaturated", "BurstCreditsLow"}
    for name, alarm in made.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", name
    assert made["BurstCreditsLow"]["Condition"] == "Bursting"
    rate = made["ServerErrorRate"]["Properties"]["Metrics"]
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in rate if "MetricStat" in m} == {
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "RequestCount",
    }
    topic = alarms["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "KmsKeyArn"}
    assert topic["Subscription"]["Fn::If"][0] == "HasEmail"
    key = one("ecs-cluster", "AWS::KMS::Key")["KeyPolicy"]["Statement"]
    publish = next(s for s in key if s["Sid"] == "CloudWatchAlarmsPublishToTheEncryptedTopic")
    assert publish["Principal"] == {"Service": {"Fn::Sub": "cloudwatch.${AWS::URLSuffix}"}}
    for entry in ENTRIES:
        assert template(entry)["Parameters"]["AlarmEmail"]["Default"] == ""
        stack = template(entry)["Resources"]["Alarms"]["Properties"]["Parameters"]
        assert stack["AlarmEmail"] == {"Ref": "AlarmEmail"}


def test_14_launch_templates_not_launch_configurations() -> None:
    for name in ALL:
        assert not resources(name, "AWS::AutoScaling::LaunchConfiguration"), name
        for group in resources(name, "AWS::AutoScaling::AutoScalingGroup").values():
            assert "LaunchTemplate" in group["Properties"], name
            assert "LaunchConfigurationName" not in group["Properties"], name


def test_15_amazon_linux_2023_gpu_image_from_ssm() -> None:
    for entry in ENTRIES:
        ami = template(entry)["Parameters"]["ECSAMI"]
        assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        assert (
            ami["Default"]
            == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
        )
    bastion = template("bastion")["Parameters"]["BastionAMI"]["Default"]
    assert "al2023" in bastion


def test_16_image_command_and_port_are_parameters() -> None:
    container = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert container["Image"] == {"Ref": "ContainerImage"}
    assert container["PortMappings"][0]["ContainerPort"] == {"Ref": "ContainerPort"}
    assert container["Command"]["Fn::If"][1] == {"Fn::Split": [" ", {"Ref": "ServerArguments"}]}
    for entry in ENTRIES:
        parameters = template(entry)["Parameters"]
        assert "Default" not in parameters["ContainerImage"]
        assert parameters["ContainerPort"]["Default"] == 5000


def test_17_no_legacy_service_or_scaling_roles() -> None:
    assert "Role" not in one("service", "AWS::ECS::Service")
    assert "RoleARN" not in one("service", "AWS::ApplicationAutoScaling::ScalableTarget")
    for name in ALL:
        for role in resources(name, "AWS::IAM::Role").values():
            principals = [
                statement["Principal"].get("Service", {}).get("Fn::Sub", "")
                for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
            ]
            for principal in principals:
                assert not principal.startswith(("ecs.", "application-autoscaling.")), name


def test_18_templates_are_our_own_and_packaged_into_the_users_bucket() -> None:
    for name, path in ALL.items():
        text = path.read_text()
        assert "aws-quickstart" not in text and "quickstart-" not in text, name
    for entry in ENTRIES:
        for stack in resources(entry, "AWS::CloudFormation::Stack").values():
            assert (CFN / stack["Properties"]["TemplateURL"]).is_file()
    assert entry_template("new-vpc") == ENTRIES["new-vpc"]
    # Packaging itself (upload, URL rewrite, location defaults) is tested against moto.


def test_19_imdsv2_with_hop_limit_one_and_task_roles() -> None:
    for name in ("ecs-cluster", "bastion"):
        options = one(name, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["MetadataOptions"]
        assert options == {
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
        }
    task = one("service", "AWS::ECS::TaskDefinition")
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": ["ExecutionRole", "Arn"]}
    assert "ECS_ENABLE_TASK_IAM_ROLE=true" in user_data()


def test_20_efs_encrypted_with_tls_iam_access_point_backup_and_policy() -> None:
    system = one("efs", "AWS::EFS::FileSystem")
    assert system["Encrypted"] is True and system["KmsKeyId"] == {"Ref": "KmsKeyArn"}
    assert system["BackupPolicy"] == {"Status": "ENABLED"}
    assert system["LifecyclePolicies"]
    deny = system["FileSystemPolicy"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    point = one("efs", "AWS::EFS::AccessPoint")
    assert point["RootDirectory"]["Path"] == "/carina"
    assert point["PosixUser"] == {"Uid": {"Ref": "ServerUid"}, "Gid": {"Ref": "ServerUid"}}
    assert template("efs")["Parameters"]["ServerUid"]["Default"] == 10001  # the image's USER
    volume = one("service", "AWS::ECS::TaskDefinition")["Volumes"][0]["EFSVolumeConfiguration"]
    assert volume["TransitEncryption"] == "ENABLED"
    assert volume["AuthorizationConfig"] == {
        "AccessPointId": {"Ref": "AccessPointId"},
        "IAM": "ENABLED",
    }
    assert "TransitEncryptionPort" not in volume  # aws/containers-roadmap#2337
    policy = resources("efs")["ElasticFileSystem"]
    assert policy["DeletionPolicy"] == {"Ref": "EFSDeletionPolicy"}
    assert template("efs")["Transform"] == "AWS::LanguageExtensions"


def test_21_load_balancer_tls_policy_redirect_header_drop_and_idle_timeout() -> None:
    listeners = resources("alb", "AWS::ElasticLoadBalancingV2::Listener")
    https = listeners["HTTPSListener"]
    assert https["Condition"] == "HTTPSOn"
    assert https["Properties"]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["Properties"]["Certificates"] == [{"CertificateArn": {"Ref": "CertificateID"}}]
    action = listeners["HTTPListener"]["Properties"]["DefaultActions"][0]["Fn::If"]
    assert action[0] == "HTTPSOn"
    assert action[1]["Type"] == "redirect" and action[1]["RedirectConfig"]["Protocol"] == "HTTPS"
    assert action[1]["RedirectConfig"]["StatusCode"] == "HTTP_301"
    assert action[2]["Type"] == "forward"
    attributes = {
        item["Key"]: item["Value"]
        for item in one("alb", "AWS::ElasticLoadBalancingV2::LoadBalancer")[
            "LoadBalancerAttributes"
        ]
        if "Key" in item
    }
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["idle_timeout.timeout_seconds"] == {"Ref": "AlbIdleTimeout"}
    assert attributes["deletion_protection.enabled"] == {"Ref": "AlbDeletionProtection"}
    assert template("new-vpc")["Parameters"]["AlbIdleTimeout"]["Default"] >= 600


def test_access_log_attributes_only_when_a_bucket_is_given() -> None:
    """ELBv2 has been reported to refuse an empty ``access_logs.s3.bucket`` even with the logs
    off: with no bucket, neither access-log attribute is set."""
    attributes = one("alb", "AWS::ElasticLoadBalancingV2::LoadBalancer")["LoadBalancerAttributes"]
    plain = {item["Key"] for item in attributes if "Key" in item}
    assert not {key for key in plain if key.startswith("access_logs.")}
    conditional = [item["Fn::If"] for item in attributes if "Fn::If" in item]
    assert sorted(branch[1]["Key"] for branch in conditional) == [
        "access_logs.s3.bucket",
        "access_logs.s3.enabled",
    ]
    for condition, given, absent in conditional:
        assert condition == "HasAccessLogBucket" and absent == {"Ref": "AWS::NoValue"}
        assert given["Value"] in ("true", {"Ref": "AlbAccessLogBucket"})


def test_the_data_key_and_audit_log_group_are_kept_with_the_file_system() -> None:
    """A kept file system cannot be read once its KMS key is deleted (a 30-day schedule), and the
    ECS Exec audit trail is in the deployment's log group: both follow EFSDeletionPolicy."""
    cluster = template("ecs-cluster")
    assert cluster["Transform"] == "AWS::LanguageExtensions"  # DeletionPolicy from a parameter
    for name in ("DataKey", "LogGroup"):
        resource = cluster["Resources"][name]
        assert resource["DeletionPolicy"] == {"Ref": "EFSDeletionPolicy"}, name
        assert resource["UpdateReplacePolicy"] == {"Ref": "EFSDeletionPolicy"}, name
    exec_logs = cluster["Resources"]["Cluster"]["Properties"]["Configuration"]
    assert exec_logs["ExecuteCommandConfiguration"]["LogConfiguration"] == {
        "CloudWatchLogGroupName": {"Ref": "LogGroup"},
        "CloudWatchEncryptionEnabled": True,
    }
    for entry in ENTRIES:
        stack = template(entry)["Resources"]["ECSCluster"]["Properties"]["Parameters"]
        assert stack["EFSDeletionPolicy"] == {"Ref": "EFSDeletionPolicy"}, entry


@pytest.mark.parametrize("entry", ENTRIES)
def test_source_cidr_0_0_0_0_is_refused_unless_allow_internet(entry: str) -> None:
    assert not rules_refuse(entry)
    (refused,) = rules_refuse(entry, SourceCidrIP="0.0.0.0/0")
    assert "whole internet" in refused and "AllowInternet=true" in refused
    assert not rules_refuse(entry, SourceCidrIP="0.0.0.0/0", AllowInternet="true")


@pytest.mark.parametrize("entry", ENTRIES)
def test_admin_api_is_closed_from_the_internet_and_ecs_exec_off_by_default(entry: str) -> None:
    parameters = template(entry)["Parameters"]
    assert parameters["AdminApiFromInternet"]["Default"] == "deny"
    assert parameters["EnableECSExec"]["Default"] == "false"
    stack = template(entry)["Resources"]["CarinaService"]["Properties"]["Parameters"]
    assert stack["EnableECSExec"] == {"Ref": "EnableECSExec"}
    role = resources("service")["TaskRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    exec_only = [item["Fn::If"] for item in statements if "Fn::If" in item]
    assert {branch[1]["Sid"] for branch in exec_only} == {
        "ExecuteCommandChannels",
        "ExecuteCommandTranscripts",
        "ExecuteCommandEncryption",
    }
    assert all(
        branch[0] == "ExecOn" and branch[2] == {"Ref": "AWS::NoValue"} for branch in exec_only
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_task_must_fit_the_instance_type(entry: str) -> None:
    """g4dn.xlarge and g5.xlarge pass the instance pattern but cannot hold the default task (24 GiB
    on a 16 GiB host), and no GPU count above the host's can be placed: a Rule says so before any
    resource is made."""
    (memory,) = rules_refuse(entry, ECSHostInstanceType="g5.xlarge")
    assert "16 GiB" in memory and "TaskMemory" in memory
    assert rules_refuse(entry, ECSHostInstanceType="g4dn.xlarge")
    assert not rules_refuse(entry, ECSHostInstanceType="g4dn.xlarge", TaskMemory="12288")
    assert rules_refuse(entry, ECSHostInstanceType="g6e.xlarge", TaskMemory="32768")
    (gpus,) = rules_refuse(entry, ECSHostInstanceType="g5.2xlarge", GpuCount="2")
    assert "one GPU" in gpus
    assert not rules_refuse(entry, ECSHostInstanceType="g5.12xlarge", GpuCount="4")
    assert rules_refuse(entry, ECSHostInstanceType="g5.12xlarge", GpuCount="8")
    assert not rules_refuse(entry, ECSHostInstanceType="p4d.24xlarge", GpuCount="8")


def test_an_internal_load_balancer_and_an_optional_waf_with_a_rate_limit() -> None:
    alb = template("alb")
    balancer = alb["Resources"]["LoadBalancer"]["Properties"]
    assert balancer["Scheme"] == {"Ref": "LoadBalancerScheme"}
    assert balancer["Subnets"]["Fn::If"][0] == "Internal"
    assert alb["Parameters"]["LoadBalancerScheme"]["Default"] == "internet-facing"
    acl = alb["Resources"]["WebACL"]
    assert acl["Condition"] == "WAFOn" and alb["Parameters"]["EnableWAF"]["Default"] == "false"
    rules = {rule["Name"]: rule for rule in acl["Properties"]["Rules"]}
    rate = rules["RateLimitPerAddress"]["Statement"]["RateBasedStatement"]
    assert rate == {"Limit": {"Ref": "WAFRateLimit"}, "AggregateKeyType": "IP"}
    assert {
        "AWSManagedRulesAmazonIpReputationList",
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
    } <= set(rules)
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    counted = {item["Name"] for item in common["RuleActionOverrides"]}
    assert "SizeRestrictions_BODY" in counted  # image uploads are megabytes
    association = alb["Resources"]["WebACLAssociation"]
    assert association["Condition"] == "WAFOn"
    assert association["Properties"]["ResourceArn"] == {"Ref": "LoadBalancer"}


def test_a_kept_file_system_and_its_access_point_can_be_given_to_a_new_stack() -> None:
    efs = template("efs")
    assert efs["Resources"]["ElasticFileSystem"]["Condition"] == "NewFileSystem"
    point = efs["Resources"]["WorkspaceAccessPoint"]
    assert point["Condition"] == "NewAccessPoint"
    assert point["DeletionPolicy"] == {"Ref": "EFSDeletionPolicy"}  # kept with the file system
    chosen = {
        "Fn::If": ["NewFileSystem", {"Ref": "ElasticFileSystem"}, {"Ref": "ExistingFileSystemId"}]
    }
    for name in ("MountTarget1", "MountTarget2", "WorkspaceAccessPoint"):
        assert efs["Resources"][name]["Properties"]["FileSystemId"] == chosen, name
    assert efs["Outputs"]["ElasticFileSystem"]["Value"] == chosen
    for entry in ENTRIES:
        stack = template(entry)["Resources"]["EFS"]["Properties"]["Parameters"]
        assert stack["ExistingFileSystemId"] == {"Ref": "ExistingFileSystemId"}
        assert stack["ExistingAccessPointId"] == {"Ref": "ExistingAccessPointId"}


def test_the_ami_patch_path_is_a_stack_update() -> None:
    """A stack update reads the SSM image parameter again; the launch template takes it, and the
    hosts are replaced one at a time, each new one ready before the next (docs: patch the hosts)."""
    for entry in ENTRIES:
        parameter = template(entry)["Parameters"]["ECSAMI"]
        assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        assert parameter["Default"].endswith("/gpu/recommended/image_id")
    launch = one("ecs-cluster", "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert launch["ImageId"] == {"Ref": "ECSAMI"}
    group = resources("ecs-cluster")["HostGroup"]
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MaxBatchSize"] == 1 and rolling["WaitOnResourceSignals"] is True
    assert group["Properties"]["LaunchTemplate"]["Version"] == {
        "Fn::GetAtt": ["HostLaunchTemplate", "LatestVersionNumber"]
    }


@pytest.mark.parametrize("entry", ENTRIES)
def test_optional_oidc_or_cognito_sign_in_at_the_load_balancer_for_the_viewer(entry: str) -> None:
    rule = resources("alb")["ViewerSignInRule"]
    assert rule["Condition"] == "ViewerSignInOn"
    properties = rule["Properties"]
    assert properties["Conditions"][0]["PathPatternConfig"]["Values"] == ["/viewer", "/viewer/*"]
    chosen, forward = properties["Actions"]
    condition, cognito, oidc = chosen["Fn::If"]
    assert condition == "ViewerCognito" and cognito["Type"] == "authenticate-cognito"
    assert oidc["Type"] == "authenticate-oidc"
    secret = oidc["AuthenticateOidcConfig"]["ClientSecret"]
    assert secret == {"Fn::Sub": "{{resolve:secretsmanager:${ViewerOidcClientSecretArn}}}"}
    assert forward == {"Type": "forward", "Order": 2, "TargetGroupArn": {"Ref": "TargetGroup"}}
    assert not rules_refuse(entry)  # off by default
    (https,) = rules_refuse(entry, ViewerSignIn="oidc", UseHTTPS="HTTP", CertificateID="", **OIDC)
    assert "needs UseHTTPS=HTTPS" in https
    (missing,) = rules_refuse(entry, ViewerSignIn="cognito")
    assert "ViewerCognitoUserPoolArn" in missing
    assert not rules_refuse(entry, ViewerSignIn="oidc", **OIDC)


OIDC = {
    "ViewerOidcIssuer": "https://id.example.org/realms/radiology",
    "ViewerOidcAuthorizationEndpoint": "https://id.example.org/realms/radiology/auth",
    "ViewerOidcTokenEndpoint": "https://id.example.org/realms/radiology/token",
    "ViewerOidcUserInfoEndpoint": "https://id.example.org/realms/radiology/userinfo",
    "ViewerOidcClientId": "carina-viewer",
    "ViewerOidcClientSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:viewer-x1",
}


def test_the_sign_in_key_and_the_optional_api_token_come_from_secrets_manager() -> None:
    """Users' sign-in tokens (MONAI Label's password grant) are signed with a key kept in Secrets
    Manager, not on the EFS workspace; RequireApiToken=true puts a generated bearer token on every
    API call (CARINA_API_TOKEN), off by default because NVIDIA's AIAA clients cannot send one."""
    container = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    secrets = container["Secrets"]
    assert {"Name": "CARINA_TOKEN_SECRET", "ValueFrom": {"Ref": "TokenSigningSecret"}} in secrets
    (optional,) = [item["Fn::If"] for item in secrets if "Fn::If" in item]
    assert optional[0] == "ApiTokenOn"
    assert optional[1] == {"Name": "CARINA_API_TOKEN", "ValueFrom": {"Ref": "ApiTokenSecret"}}
    made = resources("service", "AWS::SecretsManager::Secret")
    assert made["ApiTokenSecret"]["Condition"] == "ApiTokenOn"
    assert made["TokenSigningSecret"]["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    reads = resources("service")["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    readable = reads["Statement"][0]["Resource"]
    assert {"Ref": "TokenSigningSecret"} in readable
    assert {
        "Fn::If": ["ApiTokenOn", {"Ref": "ApiTokenSecret"}, {"Ref": "AWS::NoValue"}]
    } in readable
    for entry in ENTRIES:
        assert template(entry)["Parameters"]["RequireApiToken"]["Default"] == "false"
        assert template(entry)["Outputs"]["ApiTokenSecretArn"]["Condition"] == "ApiTokenRequired"


def test_22_health_checks_container_insights_and_encrypted_retained_logs() -> None:
    group = one("alb", "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert group["HealthCheckPath"] == "/health/ready"
    assert group["HealthCheckPort"] == "traffic-port"
    assert group["Protocol"] == group["HealthCheckProtocol"] == {"Ref": "UseHTTPS"}
    container = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert container["HealthCheck"]["Command"] == [
        "CMD",
        "python",
        "-m",
        "carina.server.healthcheck",
    ]
    assert container["LogConfiguration"]["Options"]["awslogs-stream-prefix"] == "carina"
    settings = one("ecs-cluster", "AWS::ECS::Cluster")["ClusterSettings"]
    assert {"Name": "containerInsights", "Value": "enabled"} in settings
    for name in ALL:
        for log in resources(name, "AWS::Logs::LogGroup").values():
            assert "RetentionInDays" in log["Properties"] and "KmsKeyId" in log["Properties"], name
    assert one("service", "AWS::ECS::Service")["HealthCheckGracePeriodSeconds"] == {
        "Ref": "HealthCheckGracePeriod"
    }


def test_23_key_pairs_optional_session_manager_and_ecs_exec() -> None:
    for entry in ENTRIES:
        assert template(entry)["Parameters"]["KeyName"]["Default"] == ""
    assert template("new-vpc")["Parameters"]["BastionKeyPairName"]["Default"] == ""
    assert template("new-vpc")["Parameters"]["CreateBastion"]["Default"] == "false"
    host = one("ecs-cluster", "AWS::IAM::Role")["ManagedPolicyArns"]
    assert {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"} in host
    assert one("service", "AWS::ECS::Service")["EnableExecuteCommand"] == {
        "Fn::If": ["ExecOn", True, False]
    }
    container = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert container["LinuxParameters"]["InitProcessEnabled"] is True


def test_24_shared_memory_and_ulimits_for_pytorch() -> None:
    container = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert container["LinuxParameters"]["SharedMemorySize"] == {"Ref": "SharedMemorySize"}
    limits = {item["Name"]: item for item in container["Ulimits"]}
    assert limits["nofile"]["SoftLimit"] >= 65536


def test_25_admin_api_token_in_secrets_manager_and_optional_deny_rule() -> None:
    container = one("service", "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert container["Secrets"][0] == {
        "Name": "CARINA_ADMIN_TOKEN",
        "ValueFrom": {"Ref": "AdminTokenSecret"},
    }
    for secret in resources("service", "AWS::SecretsManager::Secret").values():
        assert secret["Properties"]["KmsKeyId"] == {"Ref": "DataKeyArn"}
        assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    rule = resources("alb")["DenyAdminRule"]
    assert rule["Condition"] == "DenyAdmin"
    assert rule["Properties"]["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "403"
    assert "/admin/*" in rule["Properties"]["Conditions"][0]["PathPatternConfig"]["Values"]


def test_26_root_volume_is_encrypted_gp3_of_a_chosen_size() -> None:
    (device,) = one("ecs-cluster", "AWS::EC2::LaunchTemplate")["LaunchTemplateData"][
        "BlockDeviceMappings"
    ]
    assert device["Ebs"] == {
        "VolumeSize": {"Ref": "RootVolumeSize"},
        "VolumeType": "gp3",
        "Encrypted": True,
        "DeleteOnTermination": True,
    }


def test_27_signal_timeout_parameter_and_scale_to_zero() -> None:
    group = resources("ecs-cluster")["HostGroup"]
    assert group["CreationPolicy"]["ResourceSignal"] == {
        "Count": {"Ref": "ClusterSize"},
        "Timeout": {"Ref": "SignalTimeout"},
    }
    assert group["Properties"]["MinSize"] == "0"
    check_parameters(
        template("new-vpc"), values("new-vpc", ClusterSize="0", DesiredServiceCount="0")
    )


def test_language_extensions_need_the_auto_expand_capability() -> None:
    from carina.cloud.stacks import CAPABILITIES

    assert "CAPABILITY_AUTO_EXPAND" in CAPABILITIES
    assert {name for name in ALL if "Transform" in template(name)} == {
        "efs.yaml",
        "ecs-cluster.yaml",
    }
