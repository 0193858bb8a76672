"""Settings: read from the environment once (prefix ENCLAVE_, nesting with __), then frozen.

Tests build ``Settings(...)`` explicitly; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ENCLAVE_"
ENV_NESTED_DELIMITER = "__"


def default_state_dir() -> Path:
    """Where the embedded default keeps its SQLite file and demo key: ./.enclave."""
    return Path.cwd() / ".enclave"


def default_model_dir() -> Path:
    """Under the user's cache directory, so clones and CI runs on one machine share models."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "enclave" / "models"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSettings(_Section):
    url: SecretStr | None = None
    """SQLAlchemy async URL; default: SQLite in the state directory."""
    echo: bool = False


class AuditSettings(_Section):
    database_url: SecretStr | None = None
    """Where audit records go; default: the main database."""


class RedisSettings(_Section):
    url: SecretStr | None = None
    """Default: redis://127.0.0.1:6379/0 (``enclave run`` starts an embedded server instead)."""


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)


class QueueSettings(_Section):
    lease_timeout_s: float = Field(default=15.0, gt=0)
    """A job held this long by a silent worker is reclaimed by another."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """A request with no event for this long ends with 504."""
    worker_ttl_s: float = Field(default=10.0, gt=0)
    """A worker without a heartbeat for this long is not listed in /v1/models."""


class WorkerSettings(_Section):
    model_path: Path | None = None
    served_model_name: str | None = None
    max_num_seqs: int = Field(default=64, ge=1)
    max_model_len: int | None = Field(default=None, ge=16)
    dtype: str = "auto"
    """``auto``: the model's dtype on GPUs; float32 on CPUs without bf16 instructions."""
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    cpu_kvcache_space_gib: int = Field(default=4, ge=1)
    failpoint: str | None = None
    """Fault injection for tests only: ``hold_before_generate`` claims jobs and never runs them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    model_dir: Path = Field(default_factory=default_model_dir)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    database: DatabaseSettings = DatabaseSettings()
    audit: AuditSettings = AuditSettings()
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.state_dir / 'enclave.db'}"

    @property
    def audit_database_url(self) -> str:
        if self.audit.database_url is not None:
            return self.audit.database_url.get_secret_value()
        return self.database_url

    @property
    def redis_url(self) -> str:
        if self.redis.url is not None:
            return self.redis.url.get_secret_value()
        return "redis://127.0.0.1:6379/0"


class ConfigurationError(Exception):
    """Bad configuration; the message is one line naming the environment variable."""


def load_settings() -> Settings:
    """Read and validate the environment; raise ConfigurationError with one clear line."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in error["loc"]).upper()
        raise ConfigurationError(f"invalid configuration: {variable}: {error['msg']}") from exc
