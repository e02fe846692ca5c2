"""Reading Carina's CloudFormation templates in tests: parsed templates and small queries on them."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from carina.cloud import load_template

ROOT = Path(__file__).resolve().parents[2]
CFN = ROOT / "deploy" / "cloudformation"
ENTRIES = {"new-vpc": CFN / "carina-new-vpc.yaml", "existing-vpc": CFN / "carina-existing-vpc.yaml"}
CHILDREN = {path.stem: path for path in sorted((CFN / "children").glob("*.yaml"))}
ALL = {**{path.name: path for path in ENTRIES.values()}, **{p.name: p for p in CHILDREN.values()}}


@cache
def template(name: str) -> dict[str, Any]:
    """A template by entry name (``new-vpc``), child name (``alb``) or file name."""
    path = ENTRIES.get(name) or CHILDREN.get(name) or ALL[name]
    return load_template(path)


def resources(name: str, kind: str | None = None) -> dict[str, dict[str, Any]]:
    """The template's resources, optionally only those of one type."""
    items = template(name)["Resources"].items()
    return {key: value for key, value in items if kind is None or value["Type"] == kind}


def one(name: str, kind: str) -> dict[str, Any]:
    """The properties of the only resource of type ``kind`` in the template."""
    (found,) = resources(name, kind).values()
    return found.get("Properties", {})


def walk(node: Any) -> Iterator[Any]:
    """Every value in a parsed template, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def user_data(name: str = "ecs-cluster") -> str:
    """The host user-data script of a launch template (the text inside Fn::Base64/Fn::Sub)."""
    data = one(name, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["UserData"]
    return str(data["Fn::Base64"]["Fn::Sub"])
