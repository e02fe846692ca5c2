"""cfn-lint and checkov on every template: no errors, no warnings but the nested-stack packaging note
(W3002), no failed checkov check except ones suppressed in the resource's Metadata with a reason.

checkov evaluates conditions with the parameters' defaults only, so it also runs on variants of the
children whose defaults take the other branches (HTTP, flow logs, SSH, no capacity provider, ...).
checkov lives in its own venv (.tools/checkov, made by `make tools`), never in the project's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from tests.deploy.cfn import ALL, CFN, ROOT, template, walk

#: Non-default branches for checkov: child -> parameter defaults to flip.
VARIANTS: dict[str, dict[str, Any]] = {
    "alb": {"UseHTTPS": "HTTP", "AdminApiFromInternet": "deny", "AlbAccessLogBucket": "my-logs"},
    "vpc": {"VPCFlowLogs": "true"},
    "bastion": {"BastionKeyPairName": "ops", "BastionAccessCidr": "198.51.100.0/24"},
    "ecs-cluster": {
        "CapacityProvider": "false",
        "KeyName": "ops",
        "BastionSecurityGroupID": "sg-1",
    },
    "service": {"CapacityProviderName": "hosts", "MaxCount": 4, "GpuCount": 0, "UseHTTPS": "HTTP"},
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_cfn_lint_finds_nothing_but_the_packaging_note(name: str) -> None:
    matches = lint_file(ALL[name], config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    found = sorted({f"{m.rule.id} {m.message}" for m in matches if m.rule.id != "W3002"})
    assert found == []


def test_cfn_lint_follows_the_local_child_templates(tmp_path: Path) -> None:
    """With local TemplateURLs cfn-lint checks nested parameters (E3043): prove it would notice."""
    broken = tmp_path / "carina-new-vpc.yaml"
    text = (CFN / "carina-new-vpc.yaml").read_text()
    broken.write_text(text.replace("        ContainerImage: !Ref ContainerImage\n", "", 1))
    (tmp_path / "children").symlink_to(CFN / "children")
    ids = {match.rule.id for match in lint_file(broken, config=ManualArgs(regions=["us-east-1"]))}
    assert "E3043" in ids


def checkov() -> Path:
    found = Path(os.environ.get("CARINA_CHECKOV", ROOT / ".tools" / "checkov" / "bin" / "checkov"))
    if not found.is_file():
        pytest.fail(
            f"checkov is not installed at {found}: run `make tools` (or set CARINA_CHECKOV)"
        )
    return found


def suppressions() -> dict[tuple[str, str, str], str]:
    """(file, resource, check id) -> reason, for every checkov skip in the templates' Metadata."""
    found = {}
    for name in ALL:
        for resource, body in template(name)["Resources"].items():
            for skip in body.get("Metadata", {}).get("checkov", {}).get("skip", []):
                found[(name, resource, skip["id"])] = skip.get("comment", "")
    return found


def test_checkov_passes_with_reasoned_suppressions_only(tmp_path: Path) -> None:
    variants = tmp_path / "variants"
    variants.mkdir()
    for child, defaults in VARIANTS.items():
        body = json.loads(json.dumps(template(child)))
        for parameter, value in defaults.items():
            body["Parameters"][parameter]["Default"] = value
        (variants / f"{child}-variant.json").write_text(json.dumps(body, indent=1))
    result = subprocess.run(
        [
            str(checkov()),
            *("-d", str(CFN), "-d", str(variants)),
            *("--framework", "cloudformation", "--output", "json", "--skip-download"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    reports, text, decoder = [], result.stdout.strip(), json.JSONDecoder()
    while text:  # one JSON document per folder
        report, end = decoder.raw_decode(text)
        reports += report if isinstance(report, list) else [report]
        text = text[end:].strip()
    failed = [
        f"{check['check_id']} {check['resource']} ({Path(check['file_path']).name})"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert sum(report["summary"]["passed"] for report in reports) > 100
    skipped = {
        (Path(check["file_path"]).name, check["resource"].split(".")[-1], check["check_id"])
        for report in reports
        for check in report["results"]["skipped_checks"]
    }
    for (name, resource, check_id), reason in suppressions().items():
        assert len(reason) > 30, f"{name} {resource} {check_id}: say why it is suppressed"
        assert (name, resource, check_id) in skipped, f"{name} {resource} {check_id} is not needed"


def test_no_template_hides_a_checkov_check_globally() -> None:
    for name in ALL:
        assert "checkov:skip" not in ALL[name].read_text(), "suppress per resource, with a reason"
        for node in walk(template(name).get("Metadata", {})):
            assert not (isinstance(node, dict) and "checkov" in node), name
