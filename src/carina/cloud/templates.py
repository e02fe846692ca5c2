"""Find Carina's CloudFormation templates and read them into plain JSON-ready dictionaries.

In a wheel the templates are package data (``carina/cloud/templates``); in a source checkout they
are ``deploy/cloudformation/``. The YAML reader understands CloudFormation's short forms (``!Ref``,
``!Sub``, ``!GetAtt a.b``, ...) and turns them into the long forms, so the result can be sent to
AWS as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from carina.errors import ConfigError

#: The two entry templates, by the short name ``carina aws deploy --template`` takes.
ENTRY_TEMPLATES = {"new-vpc": "carina-new-vpc.yaml", "existing-vpc": "carina-existing-vpc.yaml"}

_PACKAGED = Path(__file__).parent / "templates"
_SOURCE = Path(__file__).resolve().parents[3] / "deploy" / "cloudformation"


def template_dir() -> Path:
    """The folder holding the entry templates and ``children/``."""
    for folder in (_PACKAGED, _SOURCE):
        if (folder / ENTRY_TEMPLATES["new-vpc"]).is_file():
            return folder
    raise ConfigError("deploy/cloudformation", "", "templates missing from this installation")


def entry_template(name: str) -> Path:
    """The path of an entry template, by short name (``new-vpc``), file name or path."""
    if name in ENTRY_TEMPLATES:
        return template_dir() / ENTRY_TEMPLATES[name]
    path = Path(name)
    if path.is_file():
        return path
    known = ", ".join(ENTRY_TEMPLATES)
    raise ConfigError("--template", name, f"unknown: give {known} or the path of a template file")


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that also reads CloudFormation's ``!Function`` tags."""


def _short_form(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _short_form)


def _timestamp_as_text(loader: _Loader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


# Policy versions such as 2012-10-17 must stay text, never become dates.
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_template(path: Path) -> dict[str, Any]:
    """Read a CloudFormation template (YAML or JSON) into a dictionary of long-form intrinsics.

    Raises:
        ConfigError: the file is not a readable template (the message names the file and line).
    """
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path.name, "", f"cannot read the template ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(path.name, where, "not valid YAML") from None
    if not isinstance(document, dict) or "Resources" not in document:
        raise ConfigError(path.name, "", "not a CloudFormation template (no Resources)")
    return document
