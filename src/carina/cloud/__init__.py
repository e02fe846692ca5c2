"""Carina on AWS: the CloudFormation templates and ``carina aws package|deploy|outputs|delete``.

The templates live in ``deploy/cloudformation/`` of the repository and inside the wheel; see
:mod:`.templates` (finding and reading them), :mod:`.package` (uploading the child templates to the
user's bucket), :mod:`.checks` (parameter and ``Rules`` checks before anything reaches AWS) and
:mod:`.stacks` (create or update, progress, outputs, delete). boto3 is imported by the functions
that need it, never at import time.
"""

from carina.cloud.checks import check_parameters, parse_assignments
from carina.cloud.package import PackagedTemplate, package_template
from carina.cloud.stacks import StackEvent, delete_stack, deploy_stack, stack_outputs
from carina.cloud.templates import ENTRY_TEMPLATES, entry_template, load_template, template_dir

__all__ = [
    "ENTRY_TEMPLATES",
    "PackagedTemplate",
    "StackEvent",
    "check_parameters",
    "delete_stack",
    "deploy_stack",
    "entry_template",
    "load_template",
    "package_template",
    "parse_assignments",
    "stack_outputs",
    "template_dir",
]
