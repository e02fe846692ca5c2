"""boto3 clients for ``carina aws``: the Region, profile and endpoint the user chose."""

from __future__ import annotations

from typing import Any

from carina.errors import CloudError


def aws_client(
    service: str,
    *,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
) -> Any:
    """A boto3 client for ``service``.

    Args:
        service: ``cloudformation`` or ``s3``.
        region: AWS Region; default from the profile or ``AWS_REGION``/``AWS_DEFAULT_REGION``.
        profile: named profile of the AWS configuration; default the usual credential chain.
        endpoint_url: another endpoint (a moto server, LocalStack); default AWS's.

    Raises:
        CloudError: no Region is known, or the profile does not exist.
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:
        raise CloudError(str(exc)) from None
    if session.region_name is None:
        raise CloudError("no AWS Region: give --region or set AWS_REGION")
    return session.client(service, endpoint_url=endpoint_url)  # type: ignore[call-overload]
