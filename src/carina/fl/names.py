"""The names a FLARE project file may use, checked before FLARE is called: FLARE refuses a name
it cannot put in a certificate or a folder with ``INVALID_ARGS`` and little else, so Carina says
which participant and which name, and what the rule is.

The rules are FLARE's (2.x provisioning): a server is a DNS name; a client (site) or relay is
letters, digits, ``-`` and ``_``; an admin is an e-mail address; an organisation is letters,
digits and ``_`` only (no ``-``: ``hospital_a``, not ``hospital-a``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from carina.errors import ConfigError

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "server": (re.compile(rf"(?:{_LABEL}\.)*{_LABEL}"), "a DNS name (letters, digits, - and .)"),
    "client": (re.compile(r"[A-Za-z0-9_-]+"), "letters, digits, - and _"),
    "relay": (re.compile(r"[A-Za-z0-9_-]+"), "letters, digits, - and _"),
    "admin": (
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
        "an e-mail address",
    ),
    "org": (re.compile(r"[A-Za-z0-9_]+"), "letters, digits and _ only (no -)"),
    "project": (re.compile(r"[A-Za-z0-9_]+"), "letters, digits and _ only"),
}


def check_project(path: Path) -> None:
    """Check the names of a FLARE project file.

    Raises:
        ConfigError: a name FLARE would refuse (every one listed, with its participant), or a
            file that is not a project (YAML with ``participants``).
    """
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(path.name, "", f"not a readable YAML project file ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("participants"), list):
        raise ConfigError(path.name, "participants", "a project file lists its participants")
    problems = _problems("project", str(document.get("name", "")), "name")
    for index, participant in enumerate(document["participants"]):
        if not isinstance(participant, dict):
            problems.append(f"participants[{index}]: not a mapping")
            continue
        where = f"participants[{index}] ({participant.get('name', '?')})"
        kind = str(participant.get("type", ""))
        if kind in RULES:
            problems += _problems(kind, str(participant.get("name", "")), f"{where} name")
        problems += _problems("org", str(participant.get("org", "")), f"{where} org")
    if problems:
        raise ConfigError(path.name, "", "FLARE would refuse " + "; ".join(problems))


def _problems(kind: str, value: Any, where: str) -> list[str]:
    pattern, rule = RULES[kind]
    if pattern.fullmatch(str(value)):
        return []
    return [f"{where} {str(value)[:64]!r}: a {kind} name is {rule}"]
