"""The admin bearer token: from ``CARINA_ADMIN_TOKEN``, else generated once per workspace.

A local first start without a configured token generates one, stores it in the workspace as
``.admin_token`` with mode 0600, and the command line prints it once. In AWS the token comes from
a Secrets Manager secret given to the task as ``CARINA_ADMIN_TOKEN``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = ".admin_token"


@dataclass(frozen=True)
class AdminToken:
    """The token, whether this call generated it, and where it is kept (None: from settings)."""

    value: str
    generated: bool
    path: Path | None


def admin_token(workspace: Path, configured: str | None) -> AdminToken:
    """The admin token of this server: the configured one, the stored one, or a new one."""
    if configured:
        return AdminToken(configured, False, None)
    path = workspace / TOKEN_FILE
    if path.is_file():
        return AdminToken(path.read_text().strip(), False, path)
    workspace.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another replica made it first
        return AdminToken(path.read_text().strip(), False, path)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return AdminToken(value, True, path)


def bearer_matches(header: str | None, token: str) -> bool:
    """True when an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    if not header or not header.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
