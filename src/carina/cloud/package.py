"""``carina aws package``: upload the child templates to the user's bucket, point the entry at them.

The entry templates reference their children by local relative paths (``children/alb.yaml``), which
cfn-lint can follow. Packaging uploads each child as JSON under ``<prefix>children/``, rewrites its
``TemplateURL`` to ``https://${QSS3BucketName}.s3.${QSS3BucketRegion}.${AWS::URLSuffix}/
${QSS3KeyPrefix}children/<name>.json`` (the Quick Start's three location parameters keep their
meaning: change them and the stack follows another copy), fills in those parameters' defaults, and
uploads the entry last. Templates come from the user's own bucket, never from an AWS-owned one.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carina.cloud.templates import load_template
from carina.errors import CloudError, ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_PREFIX = re.compile(r"^([0-9a-zA-Z-.]+/)*$")
_BUCKET = re.compile(r"^[0-9a-z][0-9a-z.-]{1,61}[0-9a-z]$")
_LOCATION = ("QSS3BucketName", "QSS3BucketRegion", "QSS3KeyPrefix")


@dataclass(frozen=True)
class PackagedTemplate:
    """An entry template uploaded with its children.

    Attributes:
        url: HTTPS URL of the uploaded entry template (what ``create_stack`` takes).
        body: the packaged entry template.
        keys: S3 keys written, children first.
    """

    url: str
    body: dict[str, Any]
    keys: tuple[str, ...]


def url_suffix(region: str) -> str:
    """The domain of a Region's endpoints: ``amazonaws.com``, or ``amazonaws.com.cn`` in China."""
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def object_url(bucket: str, region: str, key: str) -> str:
    """The virtual-hosted HTTPS URL of an S3 object."""
    return f"https://{bucket}.s3.{region}.{url_suffix(region)}/{key}"


def package_template(
    entry: Path, *, bucket: str, region: str, s3: S3Client, prefix: str = "carina/"
) -> PackagedTemplate:
    """Upload ``entry``'s children and then ``entry`` itself to ``s3://bucket/prefix``.

    Raises:
        ConfigError: a bad bucket name or prefix, or a child template that is missing or invalid.
        CloudError: S3 refused an upload (no such bucket, no permission, ...).
    """
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError("--bucket", bucket, "not a valid S3 bucket name")
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError("--prefix", prefix, "use folder names ending with '/' (e.g. carina/)")
    template = load_template(entry)
    body = copy.deepcopy(template)
    keys: list[str] = []
    sets_location = all(name in body.get("Parameters", {}) for name in _LOCATION)
    for name, resource in body["Resources"].items():
        if resource.get("Type") != "AWS::CloudFormation::Stack":
            continue
        location = resource.get("Properties", {}).get("TemplateURL")
        if not isinstance(location, str) or location.startswith(("https://", "http://", "s3://")):
            continue
        child_path = (entry.parent / location).resolve()
        if not child_path.is_file():
            raise ConfigError(entry.name, name, f"child template {location} not found")
        key_path = str(Path(location).with_suffix(".json"))
        key = prefix + key_path
        _upload(s3, bucket, key, load_template(child_path))
        keys.append(key)
        resource["Properties"]["TemplateURL"] = (
            {
                "Fn::Sub": "https://${QSS3BucketName}.s3.${QSS3BucketRegion}.${AWS::URLSuffix}/"
                "${QSS3KeyPrefix}" + key_path
            }
            if sets_location
            else object_url(bucket, region, key)
        )
    if sets_location:
        parameters = body["Parameters"]
        for name, value in zip(_LOCATION, (bucket, region, prefix), strict=True):
            parameters[name]["Default"] = value
    key = prefix + entry.with_suffix(".json").name
    _upload(s3, bucket, key, body)
    keys.append(key)
    return PackagedTemplate(url=object_url(bucket, region, key), body=body, keys=tuple(keys))


def _upload(s3: S3Client, bucket: str, key: str, template: dict[str, Any]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    data = json.dumps(template, indent=1).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
    except ClientError as exc:
        raise CloudError(f"s3://{bucket}/{key}: {exc.response['Error']['Message']}") from None
    except BotoCoreError as exc:
        raise CloudError(f"s3://{bucket}/{key}: {exc}") from None
