"""``carina aws``: package, deploy, read and delete Carina's CloudFormation stacks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

    from carina.cloud import StackEvent

app = typer.Typer(
    help="Deploy Carina on AWS with CloudFormation (an ECS GPU cluster behind a load balancer).",
    no_args_is_help=True,
)

TEMPLATE = typer.Option("new-vpc", "--template", help="new-vpc, existing-vpc, or a template file.")
REGION = typer.Option(None, "--region", help="AWS Region (default: AWS_REGION or the profile's).")
PROFILE = typer.Option(None, "--profile", help="Named AWS profile (default: the usual chain).")
ENDPOINT = typer.Option(None, "--endpoint-url", help="Another endpoint (moto server, LocalStack).")
STACK = typer.Option(..., "--stack-name", help="Name of the stack.")
BUCKET = typer.Option(..., "--bucket", help="Your S3 bucket for the templates.")
PREFIX = typer.Option("carina/", "--prefix", help="Key prefix in the bucket, ending with '/'.")
PARAM = typer.Option(
    [], "--param", "-p", metavar="KEY=VALUE", help="KEY=VALUE for a template parameter (repeat)."
)


def _show_event(event: StackEvent) -> None:
    colour = "red" if event.failed else "green" if event.status.endswith("COMPLETE") else "yellow"
    reason = f"  {event.reason}" if event.reason else ""
    where = f"{event.stack}/{event.resource}"
    err_console.print(
        f"{event.time:%H:%M:%S}  {where}  [{colour}]{event.status}[/]{reason}",
        highlight=False,
    )


def _show_outputs(outputs: dict[str, str]) -> None:
    for key, value in sorted(outputs.items()):
        console.print(f"{key}: {value}", highlight=False, soft_wrap=True)


@app.command("package")
def package(
    template: str = TEMPLATE,
    bucket: str = BUCKET,
    prefix: str = PREFIX,
    region: str | None = REGION,
    profile: str | None = PROFILE,
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """Upload the template and its children to BUCKET; print the URL to create a stack from."""
    from carina.cloud import entry_template, package_template
    from carina.cloud.session import aws_client

    s3 = aws_client("s3", region=region, profile=profile, endpoint_url=endpoint_url)
    packaged = package_template(
        entry_template(template), bucket=bucket, prefix=prefix, region=s3.meta.region_name, s3=s3
    )
    for key in packaged.keys:
        err_console.print(f"uploaded s3://{bucket}/{key}", highlight=False)
    console.print(packaged.url, highlight=False, soft_wrap=True)


@app.command("deploy")
def deploy(
    stack_name: str = STACK,
    bucket: str = BUCKET,
    template: str = TEMPLATE,
    param: list[str] = PARAM,
    prefix: str = PREFIX,
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Follow the stack until it is done."),
    region: str | None = REGION,
    profile: str | None = PROFILE,
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """Check the parameters, package the templates into BUCKET, then create or update the stack."""
    from carina.cloud import (
        check_parameters,
        deploy_stack,
        entry_template,
        load_template,
        package_template,
        parse_assignments,
    )
    from carina.cloud.session import aws_client

    path = entry_template(template)
    values = parse_assignments(param)
    cfn = aws_client("cloudformation", region=region, profile=profile, endpoint_url=endpoint_url)
    if not _stack_exists(cfn, stack_name):
        check_parameters(load_template(path), values)
    s3 = aws_client("s3", region=region, profile=profile, endpoint_url=endpoint_url)
    packaged = package_template(
        path, bucket=bucket, prefix=prefix, region=cfn.meta.region_name, s3=s3
    )
    err_console.print(f"deploying {stack_name} from {packaged.url}", highlight=False)
    # The template location follows this packaging, on an update too.
    location = {
        key: str(packaged.body["Parameters"][key]["Default"])
        for key in ("QSS3BucketName", "QSS3BucketRegion", "QSS3KeyPrefix")
        if key in packaged.body.get("Parameters", {})
    }
    outputs = deploy_stack(
        cfn,
        name=stack_name,
        template_url=packaged.url,
        parameters=location | values,
        wait=wait,
        on_event=_show_event,
    )
    if wait:
        _show_outputs(outputs)
    else:
        err_console.print(f"started; follow it with `carina aws outputs --stack-name {stack_name}`")


@app.command("doctor")
def doctor(
    template: str = TEMPLATE,
    param: list[str] = PARAM,
    bucket: str | None = typer.Option(None, "--bucket", help="Your S3 bucket for the templates."),
    region: str | None = REGION,
    profile: str | None = PROFILE,
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """Before a deploy: check what only you can do (GPU quota, certificate, template bucket,
    image in ECR for linux/amd64, private subnets with NAT); exit status 1 if any is missing."""
    import functools

    from carina.cloud import check_parameters, entry_template, load_template, parse_assignments
    from carina.cloud.doctor import run_doctor
    from carina.cloud.session import aws_client

    values = check_parameters(load_template(entry_template(template)), parse_assignments(param))

    @functools.cache
    def clients(service: str) -> Any:
        return aws_client(service, region=region, profile=profile, endpoint_url=endpoint_url)

    where = clients("cloudformation").meta.region_name
    findings = run_doctor(values, region=where, bucket=bucket, clients=clients)
    for found in findings:
        mark = "[green]ok[/]     " if found.ok else "[red]missing[/]"
        console.print(f"{mark} {found.check}: {found.detail}", highlight=False, soft_wrap=True)
    missing = sum(1 for found in findings if not found.ok)
    if missing:
        err_console.print(f"{missing} to do before `carina aws deploy` in {where}", highlight=False)
        raise typer.Exit(1)


def _stack_exists(cfn: CloudFormationClient, name: str) -> bool:
    from carina.cloud.stacks import stack_status

    return stack_status(cfn, name) is not None


@app.command("outputs")
def outputs(
    stack_name: str = STACK,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    region: str | None = REGION,
    profile: str | None = PROFILE,
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """Print the stack's outputs (service URL, file system, cluster, ...)."""
    from carina.cloud import stack_outputs
    from carina.cloud.session import aws_client

    cfn = aws_client("cloudformation", region=region, profile=profile, endpoint_url=endpoint_url)
    values = stack_outputs(cfn, stack_name)
    if as_json:
        console.print_json(json.dumps(values))
    else:
        _show_outputs(values)


@app.command("delete")
def delete(
    stack_name: str = STACK,
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Follow the deletion to its end."),
    region: str | None = REGION,
    profile: str | None = PROFILE,
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """Delete the stack; its EFS workspace too, unless deployed with EFSDeletionPolicy=Retain."""
    from carina.cloud import delete_stack
    from carina.cloud.session import aws_client

    cfn = aws_client("cloudformation", region=region, profile=profile, endpoint_url=endpoint_url)
    delete_stack(cfn, name=stack_name, wait=wait, on_event=_show_event)
    err_console.print(f"{stack_name}: {'deleted' if wait else 'deletion started'}")
