"""The services one server process holds, built in ``create_app`` and injected into routes."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from carina.audit import AuditLog
from carina.auth import OPEN, Authenticator, Principal, Role
from carina.datastore import LocalDatastore, open_datastore
from carina.deid.guard import PhiGuard
from carina.errors import AuthError, ForbiddenError
from carina.files import owned_folder, sweep_stale
from carina.kinds import KINDS, Kinds
from carina.server.services.aiaa import ImageSource
from carina.server.services.inference import Upload
from carina.server.services.metrics import ServerMetrics
from carina.server.services.ratelimit import InFlight, RateLimiter
from carina.server.services.registry import ModelRegistry
from carina.server.services.runner import InferenceRunner
from carina.server.services.sessions import SessionStore
from carina.server.services.tokens import admin_token, bearer_matches
from carina.settings import Settings

if TYPE_CHECKING:
    from carina.learning.scores import BackgroundScorer

#: Image reads that may wait for an I/O worker (more get HTTP 503 with ``Retry-After``).
IO_QUEUE_LIMIT = 64
#: Name of each server process's scratch folder in the temporary directory (owner tag follows).
SCRATCH_PREFIX = "carina-server"


@dataclass
class Services:
    """Everything a route needs: settings, models, sessions, the two worker pools (``runner``
    runs models, ``io`` reads, checks and stores images, so that a slow or hostile upload never
    holds a model's place), metrics."""

    settings: Settings
    workspace: Path
    registry: ModelRegistry
    sessions: SessionStore
    runner: InferenceRunner
    io: InferenceRunner
    metrics: ServerMetrics
    admin_token: str
    log_file: Path
    scratch: Path
    rate_limiter: RateLimiter
    in_flight: InFlight
    auth: Authenticator
    audit: AuditLog
    store: LocalDatastore
    phi: PhiGuard
    scorer: BackgroundScorer | None = None

    @classmethod
    def build(cls, settings: Settings, *, log_file: Path, kinds: Kinds | None = None) -> Services:
        """Services over ``settings.workspace`` (created when missing), serving ``kinds``
        (default: every kind Carina has)."""
        workspace = settings.workspace.resolve()
        (workspace / "models").mkdir(parents=True, exist_ok=True)
        (workspace / "sessions").mkdir(parents=True, exist_ok=True)
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        return cls(
            settings=settings,
            workspace=workspace,
            registry=ModelRegistry(
                workspace / "models",
                memory_budget=settings.model_memory_mib * 1024**2,
                device=settings.device,
                max_bytes=settings.max_image_bytes,
                kinds=KINDS if kinds is None else kinds,
                allow_code=settings.allow_code_uploads,
            ),
            sessions=SessionStore(
                workspace / "sessions",
                default_expiry=settings.session_expiry,
                max_expiry=settings.session_max_expiry,
                cache_bytes=settings.session_cache_mib * 2**20,
            ),
            runner=InferenceRunner(
                workers=settings.inference_workers,
                queue_limit=settings.queue_limit,
                timeout=settings.inference_timeout,
                initializer=functools.partial(
                    limit_threads,
                    settings.torch_threads
                    or max(1, (os.cpu_count() or 1) // settings.inference_workers),
                ),
            ),
            io=InferenceRunner(
                workers=settings.io_workers,
                queue_limit=IO_QUEUE_LIMIT,
                timeout=settings.inference_timeout,
            ),
            metrics=ServerMetrics(),
            admin_token=admin_token(workspace, configured).value,
            log_file=log_file,
            scratch=scratch_folder(),
            rate_limiter=RateLimiter(settings.rate_limit),
            in_flight=InFlight(settings.max_client_requests),
            auth=Authenticator.from_settings(settings, workspace),
            audit=AuditLog(workspace),
            store=open_datastore(workspace, max_bytes=settings.max_image_bytes, settings=settings),
            phi=PhiGuard.from_settings(settings, workspace),
        )

    def start(self) -> None:
        """Make what a stop released again (an app may be started more than once, as tests do):
        the scratch folder and the worker pool."""
        self.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runner.start()
        self.io.start()

    def stop(self) -> None:
        """Finish the running jobs of both pools and stop them; end a scoring run."""
        self.stop_scoring()
        self.runner.shutdown()
        self.io.shutdown()
        self.store.close()

    def start_scoring(self, model_root: Path) -> dict[str, object]:
        """Score the unlabelled images with ``model_root`` in the background (once per model
        version: a run for the current weights is not repeated)."""
        from carina.learning.scores import BackgroundScorer

        if self.scorer is None or self.scorer.model_root != model_root:
            self.stop_scoring()
            self.scorer = BackgroundScorer(self.store, model_root)
        self.scorer.poke()
        return self.scoring_status()

    def stop_scoring(self) -> None:
        """End a scoring run (within one image) and wait for it."""
        if self.scorer is not None:
            self.scorer.cancel()

    def scoring_status(self) -> dict[str, object]:
        """The scoring run as MONAI Label reports a task: ``RUNNING`` or ``DONE`` (or ``{}``)."""
        scorer = self.scorer
        if scorer is None:
            return {}
        alive = scorer.running
        return {"model": scorer.model_root.name, "status": "RUNNING" if alive else "DONE"}

    def image_source(
        self,
        session_id: str | None,
        uploads: Sequence[Upload],
        scratch: Path,
        *,
        stored: Path | None = None,
    ) -> ImageSource:
        """Where a call's image comes from, with this server's image and work limits."""
        return ImageSource(
            session_id,
            uploads,
            scratch,
            self.settings.max_image_bytes,
            self.settings.max_work_bytes,
            stored,
        )


def scratch_folder() -> Path:
    """This process's folder for uploads and decoded copies, on the replica's local disk (never
    the workspace); folders of server processes that died without cleaning up are removed first.
    """
    temp = Path(tempfile.gettempdir())
    sweep_stale(temp, (f"{SCRATCH_PREFIX}@*",), max_age=24 * 3600)
    folder = owned_folder(temp, SCRATCH_PREFIX)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def limit_threads(count: int) -> None:
    """Give the calling worker thread ``count`` CPU threads for its tensor operations.

    OpenMP's thread count is per thread: a worker thread otherwise uses every core, and two
    workers on two cores would run four threads.
    """
    import torch

    torch.set_num_threads(count)


def get_services(request: Request) -> Services:
    """The app's services (a FastAPI dependency)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_admin(request: Request, services: ServicesDep) -> Services:
    """The services, if the request carries the admin bearer token (every address, loopback too)
    or, with sign-in on, a signed-in admin's token.

    Raises:
        AuthError: no or a wrong token.
        ForbiddenError: a signed-in user who is not an admin.
    """
    header = request.headers.get("authorization")
    if bearer_matches(header, services.admin_token):
        request.state.principal = ADMIN_TOKEN
        return services
    if not services.auth.enabled or not header:
        raise AuthError("this route needs 'Authorization: Bearer <admin token>'")
    _check_role(principal(request, services), Role.ADMIN)
    return services


AdminDep = Annotated[Services, Depends(require_admin)]

#: Who a request made with the admin token is.
ADMIN_TOKEN = Principal("admin-token", frozenset({Role.ADMIN}), "admin-token")


def principal(request: Request, services: ServicesDep) -> Principal:
    """Who makes the request: the admin token's holder, a signed-in user (sign-in on), or
    :data:`~carina.auth.OPEN` (sign-in off). Kept on the request for the audit log.

    Raises:
        AuthError: sign-in is on and the token is missing, expired or wrong.
    """
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    header = request.headers.get("authorization")
    if bearer_matches(header, services.admin_token):
        found = ADMIN_TOKEN
    elif services.auth.enabled:
        found = services.auth.verify(header)
    else:
        found = OPEN
    request.state.principal = found
    return found


def needs(role: Role) -> Callable[[Request, Services], Principal]:
    """A dependency: the request's :func:`principal`, if its roles include ``role`` (or one
    above it).

    Raises:
        AuthError: not signed in (sign-in on).
        ForbiddenError: signed in without the role.
    """

    def dependency(request: Request, services: ServicesDep) -> Principal:
        return _check_role(principal(request, services), role)

    dependency.__name__ = f"needs_{role.value}"
    return dependency


def _check_role(who: Principal, role: Role) -> Principal:
    if not who.has(role):
        raise ForbiddenError(f"{who.name!r} may not do this: it needs the {role.value} role")
    return who


UserDep = Annotated[Principal, Depends(needs(Role.USER))]
AnnotatorDep = Annotated[Principal, Depends(needs(Role.ANNOTATOR))]
ReviewerDep = Annotated[Principal, Depends(needs(Role.REVIEWER))]
AdminUserDep = Annotated[Principal, Depends(needs(Role.ADMIN))]
