"""Settings read from the environment (prefix ``CARINA_``), validated once at the edge."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Largest decoded image, in bytes, that readers accept unless told otherwise (4 GiB).
DEFAULT_MAX_IMAGE_BYTES = 4 * 1024**3
#: Working memory one inference may ask for (windows, probability maps), unless told otherwise.
DEFAULT_MAX_WORK_BYTES = 6 * 1024**3


class Settings(BaseSettings):
    """Carina's settings; each field can be set as ``CARINA_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CARINA_", extra="ignore")

    max_image_bytes: int = Field(
        default=DEFAULT_MAX_IMAGE_BYTES,
        gt=0,
        description="Largest decoded image (voxels x bytes per voxel) or unzipped upload accepted.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "carina" / "datasets",
        description="Where shipped datasets are exported on first use by training.",
    )

    # The annotation server.
    workspace: Path = Field(
        default=Path("workspace"),
        description="Server state: models/ (installed archives), sessions/, logs/.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server listens on.")
    port: int = Field(default=5000, ge=0, le=65535, description="Port the server listens on.")
    root_path: str = Field(
        default="", description="Path prefix of a proxy that does not strip it (e.g. /aiaa)."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin routes; a local start without one generates it.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for every route but health and docs. Off by default: the "
        "existing AIAA clients (Slicer, MITK, OHIF) cannot send it.",
    )
    auth: Literal["auto", "off", "users", "oidc"] = Field(
        default="auto",
        description="Sign-in: 'users' (the workspace's users file, `carina users`), 'oidc' (tokens "
        "of an existing identity provider), 'off', or 'auto': 'oidc' when a discovery URL is set, "
        "else 'users' once the users file has a user, else 'off'.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Serve on a non-loopback address with sign-in off (refused otherwise).",
    )
    aiaa_routes: Literal["follow", "open", "off"] = Field(
        default="follow",
        description="The AIAA v1 routes (/v1/..., and /session/ shared with MONAI Label): "
        "'follow' the sign-in setting, 'open' without sign-in (NVIDIA's AIAA clients cannot send "
        "tokens; only on a trusted network), or 'off' (not served).",
    )
    token_lifetime: int = Field(
        default=3600, gt=0, le=86400, description="Seconds a signed-in user's token is valid."
    )
    auth_client_id: str = Field(
        default="carina", description="Client id GET /auth/ announces (the OIDC audience default)."
    )
    oidc_discovery_url: str | None = Field(
        default=None,
        description="OpenID Connect discovery URL (.../.well-known/openid-configuration) of an "
        "identity provider whose tokens the server accepts.",
    )
    oidc_audience: str | None = Field(
        default=None, description="Audience the provider's tokens must name (default: client id)."
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="Client secret for the password grant forwarded to the provider."
    )
    oidc_roles_claim: str = Field(
        default="realm_access.roles",
        description="Dotted path of the roles list in the provider's tokens (Keycloak's default).",
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Largest request body accepted (HTTP 413 above)."
    )
    inference_workers: int = Field(
        default=1, ge=1, description="Inferences run at once per server process."
    )
    io_workers: int = Field(
        default=2,
        ge=1,
        description="Threads per server process that read, check and store uploaded images "
        "(inference inputs, sessions, polygons), apart from the inference workers; 64 more "
        "may wait.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads per inference worker (default: the cores shared among workers).",
    )
    queue_limit: int = Field(
        default=8, ge=0, description="Inferences that may wait; more get HTTP 503 + Retry-After."
    )
    inference_timeout: float = Field(
        default=300.0, gt=0, description="Seconds one inference may take (HTTP 504 above)."
    )
    inference_plan: Literal["auto", "archive"] = Field(
        default="auto",
        description="How segmentation networks run: 'auto' plans each image (the whole image in "
        "one pass when it fits max_work_bytes, else the largest windows that fit), 'archive' "
        "runs each archive's configured sliding window exactly.",
    )
    inference_backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="What runs segmentation networks when the model's config_aiaa.json does not "
        "say: 'torch' (fp32; fp16 AMP on CUDA), 'onnx' (ONNX Runtime on models/model.onnx, CPU), "
        "'auto' (torch, in bf16 on a CPU with native bf16 for an archive whose bf16 check "
        "passed).",
    )
    max_work_bytes: int = Field(
        default=DEFAULT_MAX_WORK_BYTES,
        gt=0,
        description="Working memory one inference may ask for, estimated before it starts "
        "(windows at the image's voxel size, spatial_size, probability maps); HTTP 413 above.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Open connections per server process; more are answered 503 at once.",
    )
    max_client_requests: int = Field(
        default=32,
        ge=1,
        description="Requests one client address may have in flight at once (HTTP 429 above).",
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a request body may pause between two pieces, and after which it "
        "must arrive at 1 KiB/s on average (HTTP 408 otherwise).",
    )
    rate_limit: float = Field(
        default=0.0,
        ge=0,
        description="Requests per second one client address may send on average (HTTP 429 "
        "past a burst of 4x that); 0 turns the limit off.",
    )
    preload_models: bool = Field(
        default=True,
        description="Load every model in the background once the server is ready, so the first "
        "request does not wait for it (the server is ready before they load).",
    )
    allow_code_uploads: bool = Field(
        default=False,
        description="Let the admin model upload install archives that carry code (MONAI Bundles "
        "with $ expressions, imports or scripts/). Off: uploads are data and code is refused "
        "(`carina model add` on the server's machine is the way to add trusted code).",
    )
    model_memory_mib: int = Field(
        default=4096, gt=0, description="Memory budget of the loaded networks (LRU past it)."
    )
    session_expiry: int = Field(
        default=3600, gt=0, description="Session lifetime in seconds when the client asks none."
    )
    session_max_expiry: int = Field(
        default=86400, gt=0, description="Longest session lifetime a client may ask for."
    )
    session_cache_mib: int = Field(
        default=1024,
        gt=0,
        description="Memory per server process for decoded session images (least recently "
        "used go first): later clicks on a session skip reading and decoding it.",
    )
    session_purge_interval: float = Field(
        default=60.0, gt=0, description="Seconds between sweeps that delete expired sessions."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (browser viewers); none."
    )
    device: str | None = Field(default=None, description="cpu, cuda or cuda:N; default: auto.")

    # The PHI guard.
    phi_guard: Literal["enforce", "deid-on-ingest", "warn", "off"] = Field(
        default="enforce",
        description="What the server does with an upload (or a series fetched from a PACS) that "
        "may identify a patient: refuse it with 422 naming the attributes (enforce), keep only "
        "a de-identified copy (deid-on-ingest), take it and audit it (warn), or nothing (off).",
    )
    phi_allow: list[str] = Field(
        default_factory=list,
        description="Attributes the guard accepts (DICOM keywords such as PatientSex, 'file name', "
        "'image id'): a JSON list.",
    )
    deid_key_file: Path | None = Field(
        default=None,
        description="The de-identification key deid-on-ingest uses (made with mode 0600 when "
        "missing); default WORKSPACE/secrets/deid.key.",
    )

    # The datastore.
    datastore: str | None = Field(
        default=None,
        description="Where the datastore's images live: 'local' (WORKSPACE/datastore/) or "
        "'dicomweb+https://host/dicom-web' (a PACS; labels stay on the workspace, saved ones are "
        "also stored in the PACS as DICOM SEG). Unset: the workspace's choice "
        "(`carina datastore source`), else local.",
    )
    dicomweb_user: str = Field(default="", description="User name for the PACS (basic auth).")
    dicomweb_password: SecretStr | None = Field(
        default=None, description="Password for the PACS (basic auth)."
    )
    dicomweb_token: SecretStr | None = Field(
        default=None, description="Bearer token for the PACS (instead of a user and password)."
    )
    dicomweb_timeout: float = Field(
        default=60.0, gt=0, description="Seconds each request to the PACS may take."
    )
    dicomweb_cache_mib: int = Field(
        default=8192,
        gt=0,
        description="Size of WORKSPACE/cache/dicomweb/, the series fetched from the PACS "
        "(shared by replicas; least recently used go first).",
    )
    grace_period: float = Field(
        default=30.0, ge=0, description="Seconds SIGTERM waits for in-flight requests."
    )
