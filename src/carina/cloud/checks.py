"""Check stack parameters against a template before anything reaches AWS.

CloudFormation refuses a bad value only after the upload, with one terse message at a time; these
checks name every problem at once: unknown and missing parameters, ``AllowedValues``,
``AllowedPattern``, number ranges and lengths, and the template's ``Rules`` (for instance HTTPS
without a certificate, or more tasks than the maximum). They also let the tests exercise the Rules,
which moto does not evaluate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from carina.errors import ConfigError

_UNKNOWN = object()


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """Turn ``KEY=VALUE`` strings into a dict (the value may be empty or contain ``=``).

    Raises:
        ConfigError: an item has no ``=`` or an empty key, or a key is given twice.
    """
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--param", item, "write it as KEY=VALUE")
        if key in values:
            raise ConfigError("--param", key, "given twice")
        values[key] = value
    return values


def resolved_parameters(template: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    """The given values over the template's defaults, each as text, as CloudFormation sees it."""
    resolved: dict[str, str] = {}
    for name, spec in template.get("Parameters", {}).items():
        if name in values:
            resolved[name] = values[name]
        elif "Default" in spec:
            resolved[name] = _text(spec["Default"])
    return resolved


def check_parameters(
    template: Mapping[str, Any], values: Mapping[str, str], *, source: str = "template"
) -> dict[str, str]:
    """Check ``values`` against ``template``; return the full parameter set (defaults filled in).

    ``source`` names the template in the error message.

    Raises:
        ConfigError: listing every problem found, each naming its parameter.
    """
    declared: Mapping[str, Any] = template.get("Parameters", {})
    problems = [
        f"{name}: not a parameter of this template" for name in values if name not in declared
    ]
    resolved = resolved_parameters(template, values)
    for name, spec in declared.items():
        if name not in resolved:
            problems.append(f"{name}: required ({spec.get('Description', 'no description')})")
            continue
        problem = _check_value(spec, resolved[name])
        if problem:
            problems.append(f"{name}: {problem}")
    if not problems:
        problems = rule_failures(template, resolved)
    if problems:
        raise ConfigError(source, "Parameters", "\n  " + "\n  ".join(problems))
    return resolved


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)


def _check_value(spec: Mapping[str, Any], value: str) -> str | None:
    kind = str(spec.get("Type", "String"))
    items = (
        value.split(",") if kind.startswith("List<") or kind == "CommaDelimitedList" else [value]
    )
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in {_text(option) for option in allowed}:
        return f"{value!r} is not one of {', '.join(_text(option) for option in allowed)}"
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not all(re.fullmatch(pattern, item) for item in items):
        why = spec.get("ConstraintDescription", f"it must match {pattern}")
        return f"{value!r} is not valid: {why}"
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return f"{value} is below the minimum {spec['MinValue']}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return f"{value} is above the maximum {spec['MaxValue']}"
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        return f"shorter than {spec['MinLength']} characters"
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        return f"longer than {spec['MaxLength']} characters"
    return None


def rule_failures(template: Mapping[str, Any], parameters: Mapping[str, str]) -> list[str]:
    """The ``AssertDescription`` of every failing assertion of the template's ``Rules``."""
    failures: list[str] = []
    for name, rule in template.get("Rules", {}).items():
        condition = rule.get("RuleCondition")
        if condition is not None and _evaluate(condition, parameters) is not True:
            continue
        for assertion in rule.get("Assertions", []):
            if _evaluate(assertion["Assert"], parameters) is False:
                failures.append(f"{name}: {assertion.get('AssertDescription', 'assertion failed')}")
    return failures


def _evaluate(expression: Any, parameters: Mapping[str, str]) -> Any:
    """Evaluate a Rules expression; ``_UNKNOWN`` where it uses a function not modelled here."""
    if isinstance(expression, list):
        return [_evaluate(item, parameters) for item in expression]
    if not isinstance(expression, dict) or len(expression) != 1:
        return _text(expression)
    ((function, argument),) = expression.items()
    if function == "Ref":
        return parameters.get(argument, _UNKNOWN)
    args = _evaluate(argument, parameters)
    if any(value is _UNKNOWN for value in (args if isinstance(args, list) else [args])):
        return _UNKNOWN
    if function == "Fn::Equals":
        return args[0] == args[1]
    if function == "Fn::Not":
        return not args[0]
    if function == "Fn::And":
        return all(args)
    if function == "Fn::Or":
        return any(args)
    if function == "Fn::Contains":
        return args[1] in args[0]
    if function == "Fn::EachMemberEquals":
        return all(item == args[1] for item in args[0].split(","))
    if function == "Fn::EachMemberIn":
        return all(item in args[1] for item in args[0].split(","))
    return _UNKNOWN
