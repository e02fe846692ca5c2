"""Wire models shared by the server and the client (pydantic only: no torch, no FastAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelEntry(BaseModel):
    """One entry of ``GET /v1/models`` (AIAA spec section 4.2); extra keys pass through."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: str
    labels: list[str] = Field(default_factory=list)
    description: str = ""
    version: str = "1"


class SessionInfo(BaseModel):
    """What the server tells about a session; never a server path."""

    name: str
    image: str
    meta: dict[str, Any] = Field(default_factory=dict)
    create_ts: int
    last_access_ts: int
    expiry: int


class SessionCreated(BaseModel):
    """The answer of ``PUT /session/``."""

    session_id: str
    session_info: SessionInfo


class ErrorDetail(BaseModel):
    """The ``error`` object of an error body."""

    message: list[str]
    type: str


class ErrorBody(BaseModel):
    """Every non-200 answer: ``{"error": {"message": [...], "type": ...}, "success": false}``."""

    error: ErrorDetail
    success: bool = False
