"""Create, update, watch, read and delete a stack (``carina aws deploy|outputs|delete``).

Progress is reported as :class:`StackEvent` values, oldest first, for the stack and every nested
stack, so a user watching a 20-minute deployment sees which resource is being made and why one
failed. Nothing here prints; the command line passes a callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carina.errors import CloudError

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

#: What an entry template needs: IAM roles, and the LanguageExtensions transform of a child.
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
_DONE_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}


@dataclass(frozen=True)
class StackEvent:
    """One line of a stack's history.

    Attributes:
        time: when it happened (aware).
        stack: name of the stack (a nested stack's own name).
        resource: logical ID of the resource.
        kind: resource type (``AWS::ECS::Service``).
        status: e.g. ``CREATE_IN_PROGRESS``, ``CREATE_FAILED``.
        reason: CloudFormation's explanation, or empty.
    """

    time: datetime
    stack: str
    resource: str
    kind: str
    status: str
    reason: str

    @property
    def failed(self) -> bool:
        """True for a ``*_FAILED`` status."""
        return self.status.endswith("_FAILED")


EventCallback = Callable[[StackEvent], None]


def _error(exc: Exception) -> str:
    response: Mapping[str, Any] = getattr(exc, "response", {})
    return str(response.get("Error", {}).get("Message", exc))


def _describe(cfn: CloudFormationClient, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in _error(exc):
            return None
        raise CloudError(f"stack {name}: {_error(exc)}") from None
    return dict(stacks[0]) if stacks else None


def stack_status(cfn: CloudFormationClient, name: str) -> str | None:
    """The status of stack ``name`` (``CREATE_COMPLETE``, ...), or None when there is none."""
    stack = _describe(cfn, name)
    return None if stack is None else str(stack["StackStatus"])


def stack_outputs(cfn: CloudFormationClient, name: str) -> dict[str, str]:
    """The outputs of stack ``name`` as a dict.

    Raises:
        CloudError: no such stack, or AWS refused the call.
    """
    stack = _describe(cfn, name)
    if stack is None:
        raise CloudError(f"stack {name} does not exist")
    return {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}


def deploy_stack(
    cfn: CloudFormationClient,
    *,
    name: str,
    template_url: str,
    parameters: Mapping[str, str],
    wait: bool = True,
    on_event: EventCallback | None = None,
    poll_seconds: float = 10.0,
    timeout_seconds: float = 3 * 3600,
) -> dict[str, str]:
    """Create stack ``name`` from ``template_url``, or update it if it exists; return its outputs.

    On update, parameters not given keep their previous values. With ``wait`` the call returns once
    the stack is complete (events go to ``on_event``); without, it returns at once with the outputs
    the stack has so far.

    Raises:
        CloudError: AWS refused the request, or the stack failed or rolled back (the message quotes
            the first failure reasons), or ``timeout_seconds`` passed.
    """
    from botocore.exceptions import ClientError

    existing = _describe(cfn, name)
    seen: set[str] = set()
    if existing is not None:
        _new_events(cfn, name, seen)  # the history before this update is not news
    given = [{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()]
    started = time.time()
    try:
        if existing is None:
            cfn.create_stack(
                StackName=name,
                TemplateURL=template_url,
                Parameters=given,  # type: ignore[arg-type]
                Capabilities=CAPABILITIES,  # type: ignore[arg-type]
                OnFailure="ROLLBACK",
            )
        else:
            _update(cfn, name, existing, template_url, given, parameters)
    except ClientError as exc:
        message = _error(exc)
        if "No updates are to be performed" in message:
            return stack_outputs(cfn, name)
        raise CloudError(f"stack {name}: {message}") from None
    if wait:
        _wait(cfn, name, seen, started, on_event, poll_seconds, timeout_seconds)
    return stack_outputs(cfn, name)


def _update(
    cfn: CloudFormationClient,
    name: str,
    existing: Any,
    template_url: str,
    given: list[dict[str, str]],
    parameters: Mapping[str, str],
) -> None:
    """Update an existing stack; the parameters not given keep their previous values.

    Raises:
        CloudError: the stack cannot be updated now (a failed creation, or busy).
    """
    status = existing["StackStatus"]
    if status == "ROLLBACK_COMPLETE":
        raise CloudError(
            f"stack {name} failed to create and cannot be updated: "
            f"run `carina aws delete --stack-name {name}` first"
        )
    if status.endswith("_IN_PROGRESS"):
        raise CloudError(f"stack {name} is busy ({status}); try again when it settles")
    kept = [
        {"ParameterKey": item["ParameterKey"], "UsePreviousValue": True}
        for item in existing.get("Parameters", [])
        if item["ParameterKey"] not in parameters
    ]
    cfn.update_stack(
        StackName=name,
        TemplateURL=template_url,
        Parameters=given + kept,  # type: ignore[arg-type]
        Capabilities=CAPABILITIES,  # type: ignore[arg-type]
    )


def delete_stack(
    cfn: CloudFormationClient,
    *,
    name: str,
    wait: bool = True,
    on_event: EventCallback | None = None,
    poll_seconds: float = 10.0,
    timeout_seconds: float = 3 * 3600,
) -> None:
    """Delete stack ``name`` (and its nested stacks); with ``wait``, until it is gone.

    Raises:
        CloudError: no such stack, AWS refused, or the deletion failed (reasons quoted).
    """
    from botocore.exceptions import ClientError

    stack = _describe(cfn, name)
    if stack is None:
        raise CloudError(f"stack {name} does not exist")
    stack_id = stack["StackId"]
    seen: set[str] = set()
    _new_events(cfn, stack_id, seen)
    started = time.time()
    try:
        cfn.delete_stack(StackName=stack_id)
    except ClientError as exc:
        raise CloudError(f"stack {name}: {_error(exc)}") from None
    if wait:
        _wait(cfn, stack_id, seen, started, on_event, poll_seconds, timeout_seconds, deleting=True)


def _wait(
    cfn: CloudFormationClient,
    name: str,
    seen: set[str],
    started: float,
    on_event: EventCallback | None,
    poll_seconds: float,
    timeout_seconds: float,
    *,
    deleting: bool = False,
) -> None:
    failures: list[StackEvent] = []
    while True:
        stack = _describe(cfn, name)
        for event in _new_events(cfn, name, seen):
            if event.failed and event.reason:
                failures.append(event)
            if on_event is not None:
                on_event(event)
        status = "DELETE_COMPLETE" if stack is None else stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.time() - started > timeout_seconds:
            raise CloudError(f"stack {name}: still {status} after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
    if status in (_DONE_OK | {"DELETE_COMPLETE"}) and (deleting == (status == "DELETE_COMPLETE")):
        return
    reasons = "; ".join(f"{e.stack}/{e.resource}: {e.reason}" for e in failures[:3])
    raise CloudError(f"stack {name} ended {status}" + (f": {reasons}" if reasons else ""))


def _new_events(cfn: CloudFormationClient, name: str, seen: set[str]) -> list[StackEvent]:
    """Events of the stack and its nested stacks not reported yet, oldest first."""
    from botocore.exceptions import ClientError

    pending, stacks, events = [name], set(), []
    while pending:
        stack = pending.pop()
        if stack in stacks:
            continue
        stacks.add(stack)
        try:
            pages = cfn.get_paginator("describe_stack_events").paginate(StackName=stack)
            raw = [event for page in pages for event in page["StackEvents"]]
        except ClientError:
            continue
        for event in raw:
            physical = event.get("PhysicalResourceId", "")
            nested = event.get("ResourceType") == "AWS::CloudFormation::Stack"
            if nested and physical.startswith("arn:") and physical != event["StackId"]:
                pending.append(physical)
            if event["EventId"] in seen:
                continue
            seen.add(event["EventId"])
            events.append(
                StackEvent(
                    time=event["Timestamp"],
                    stack=event["StackName"],
                    resource=event["LogicalResourceId"],
                    kind=event.get("ResourceType", ""),
                    status=event.get("ResourceStatus", ""),
                    reason=event.get("ResourceStatusReason", ""),
                )
            )
    return sorted(events, key=lambda event: event.time)
