"""Service settings, read from the environment (prefix ``TABFM_``) or passed to ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be configured with.

    Every field reads the environment variable ``TABFM_<FIELD>`` (case-insensitive), for example
    ``TABFM_STORE=/var/lib/tabfm`` or ``TABFM_API_KEYS=key1,key2``.
    """

    model_config = SettingsConfigDict(env_prefix="TABFM_", extra="ignore", env_ignore_empty=True)

    store: Path = Field(Path("tabfm-store"), description="directory of the model store (created if absent)")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="accepted keys for 'Authorization: Bearer KEY' (comma-separated in the environment); empty: no auth",
    )
    max_body_bytes: int = Field(64 * 2**20, gt=0, description="largest request body accepted, in bytes (413 beyond)")
    max_rows: int = Field(100_000, gt=0, description="largest number of rows in one prediction request (413 beyond)")
    max_training_rows: int = Field(50_000, gt=0, description="largest training table accepted (413 beyond)")
    max_epochs: int = Field(200, gt=0, description="upper bound on max_epochs a client may ask for TabM/TabR")
    max_training_seconds: float = Field(3600.0, gt=0, description="time limit of one TabM/TabR training job")
    training_queue_size: int = Field(8, gt=0, description="training jobs waiting at most (429 beyond)")
    host: str = Field("127.0.0.1", description="interface 'tabfm serve' binds to")
    port: int = Field(8000, ge=0, lt=65536, description="port 'tabfm serve' listens on")
    log_level: str = Field("info", description="logging level: debug, info, warning, error")
    ort_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads per session (0: onnxruntime's default)")
    max_concurrent_predictions: int = Field(
        0, ge=0, description="graph runs at once (0: one per CPU core); further requests wait for a slot"
    )
    device: str = Field("auto", description="torch device for fitting: auto, cpu or cuda[:N]")
    tabfm_classification_checkpoint: Path | None = Field(
        None, description="TabFM classification checkpoint (default: the one shipped with tabfm)"
    )
    tabfm_regression_checkpoint: Path | None = Field(
        None, description="TabFM regression checkpoint (default: the one shipped with tabfm)"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"log_level must be debug, info, warning, error or critical, however: {value!r}")
        return value

    def checkpoint_for(self, task: str) -> Path | None:
        """The configured TabFM checkpoint for ``task`` (None: the shipped one)."""
        return self.tabfm_classification_checkpoint if task == "classification" else self.tabfm_regression_checkpoint
