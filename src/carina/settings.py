"""Settings read from the environment (prefix ``CARINA_``), validated once at the edge."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Largest decoded image, in bytes, that readers accept unless told otherwise (4 GiB).
DEFAULT_MAX_IMAGE_BYTES = 4 * 1024**3


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
