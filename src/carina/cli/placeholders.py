"""What ``--help`` shows for the value of a variadic argument: one value's type, ``<path>``.

Typer shows the value of an argument that takes several (``images: list[Path]``) as
``<list[Path]>``, and unlike an option's, an argument's ``metavar`` does not replace it. Its name
already says that several may follow (``images...``), so the type column says what each one is:
``images...  <path>``, as ``path  <path>`` does for an argument that takes one.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, get_args

from typer.core import TyperArgument

_TYPER_DISPLAY = TyperArgument.display_type_rich


def _one_value_type(argument: TyperArgument, ctx: Any) -> str | None:
    descriptor = argument.type_descriptor
    if not descriptor.is_list:
        return _TYPER_DISPLAY(argument, ctx)
    one = copy.copy(argument)
    (element,) = get_args(descriptor.annotation)
    one.type_descriptor = dataclasses.replace(descriptor, annotation=element)
    return _TYPER_DISPLAY(one, ctx)


def show_one_value_types() -> None:
    """Make ``--help`` show a variadic argument's value as one value's type (``<path>``)."""
    TyperArgument.display_type_rich = _one_value_type  # type: ignore[method-assign,assignment]
