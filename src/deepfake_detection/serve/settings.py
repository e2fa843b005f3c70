"""Service settings: flags > environment variables (DFD_*) > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from deepfake_detection.runtime import available_cores


def default_jobs_dir() -> Path:
    """Where video jobs are kept between restarts: the user's cache folder."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepfake-detection" / "jobs"


class ServeSettings(BaseSettings):
    """Every `dfd serve` flag, also settable as DFD_<NAME> (e.g. DFD_API_KEY, DFD_MAX_UPLOAD_MB)."""

    model_config = SettingsConfigDict(env_prefix="DFD_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    model: Path | None = None  # None: the bundled default model
    backend: str = "auto"
    detector: str = "auto"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # None: the model's calibrated one
    workers: int = Field(default_factory=lambda: min(available_cores(), 4), ge=1, le=64)
    queue: int = Field(default=32, ge=0, le=10_000)  # requests waiting for a worker; beyond it: 503
    max_upload_mb: float = Field(default=20.0, gt=0)  # per request body (a batch's images together)
    max_pixels: int = Field(default=50_000_000, gt=0)  # decompression-bomb limit per image
    max_batch: int = Field(default=32, ge=1)
    api_key: SecretStr | None = None  # SecretStr: never shown by repr() or in logs
    rate_limit: float = Field(default=0.0, ge=0)  # requests per minute per client (10/h: 0.17); 0 = no limit
    cors: Annotated[list[str], NoDecode] = Field(default_factory=list)
    job_ttl: float = Field(default=3600.0, gt=0)  # seconds a finished video job is kept
    jobs_dir: Path = Field(default_factory=default_jobs_dir)
    video_frames: int = Field(default=32, ge=1, le=1024)
    video_queue: int = Field(default=4, ge=0)  # video jobs waiting beyond the one running; beyond it: 503
    explain: bool = True  # Grad-CAM on request, from the PyTorch weights (loaded on the first request)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)  # beside loopback; "*": any
    header_timeout: float = Field(default=10.0, gt=0)  # seconds for a request's headers to arrive
    body_timeout: float = Field(default=30.0, gt=0)  # seconds an upload may pause
    stream_idle_timeout: float = Field(default=60.0, gt=0)  # seconds a live stream may send nothing
    max_client_connections: int = Field(default=32, ge=1)  # open connections per client address
    max_connections: int = Field(default=1024, ge=1)  # open connections in all

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _per_minute(cls, value: object) -> object:
        """Accept "120", "120/min", "2/s" or "10/h"; stored as requests per minute, a float so that
        hourly limits under 60/h do not round to 0 (= no limit)."""
        if not isinstance(value, str):
            return value
        text = value.strip().lower().replace(" ", "")
        count, _, unit = text.partition("/")
        per = {"": 1.0, "m": 1.0, "min": 1.0, "minute": 1.0, "s": 1 / 60, "sec": 1 / 60, "second": 1 / 60,
               "h": 60.0, "hour": 60.0}
        if unit not in per or not count.isdigit():
            raise ValueError(f"rate limit must look like 120/min, 2/s or 7200/h, not {value!r}")
        return int(count) / per[unit]

    @field_validator("cors", "allowed_hosts", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """DFD_CORS and DFD_ALLOWED_HOSTS are comma- or space-separated lists ("*" for any)."""
        if isinstance(value, str):
            return [v for v in value.replace(",", " ").split() if v]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def api_key_text(self) -> str | None:
        """The key itself, for the comparison only (never log it)."""
        return None if self.api_key is None else self.api_key.get_secret_value()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
