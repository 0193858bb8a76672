"""Settings: read from the environment once (prefix ENCLAVE_, nesting with __), then frozen.

Tests build ``Settings(...)`` explicitly; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.auth.access_tokens import IssuerPolicy
from gateway.auth.claims import ClaimMapping

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
    cache_rows: bool = True
    """Keep the key, user, tenant and limit rows each request reads in memory until they
    change (PostgreSQL only: its NOTIFY tells every replica of every change at commit)."""


class AuditSettings(_Section):
    database_url: SecretStr | None = None
    """Where audit records go; default: the main database."""
    sequencer_database_url: SecretStr | None = None
    """The in-process sequencer and checkpointer connect with this (a role with
    enclave_sequencer); default: the audit database URL."""
    origin: str = Field(default="enclave.local/audit", min_length=1, pattern=r"^[^\s+]+$")
    """The log's name in its checkpoints (and its signing key's name); unique per deployment."""
    signing_key_file: Path | None = None
    """Ed25519 checkpoint signing key (``enclave audit keygen``); mode 0600, never in the DB."""
    verifier_key: str | None = None
    """The public verifier key; default: derived from ``signing_key_file``."""
    checkpoint_dir: Path | None = None
    """Every checkpoint is also written here, once (an external, write-once location)."""
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    """A checkpoint at least this often while records arrive..."""
    checkpoint_every_records: int = Field(default=10_000, ge=1)
    """...and as soon as this many records wait uncovered."""
    content_key_file: Path | None = None
    """Master key wrapping the per-subject keys of sealed content (tenants that keep
    prompts and answers); default: created in the state directory. Never in the database."""
    content_retention_days: int = Field(default=365, ge=1)
    """Sealed content is shredded this long after its month ends, unless a tenant sets its
    own period or a legal hold applies."""
    metadata_retention_days: int = Field(default=6 * 365, ge=183)
    """How long records are kept (six years by default; never under six months)."""
    pseudonym_key_file: Path | None = None
    """HMAC key for user pseudonyms in the log; default: created in the state directory."""


class RedisSettings(_Section):
    url: SecretStr | None = None
    """Default: redis://127.0.0.1:6379/0 (``enclave run`` starts an embedded server instead)."""
    max_connections: int = Field(default=256, ge=4)
    """Connections a gateway or worker process opens to Redis at most; a command that finds
    them all busy waits for one (up to 5 s)."""


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    management_port: int = Field(default=0, ge=0, le=65535)
    """The management listener (``/healthz``, ``/readyz``, ``/metrics``) of a gateway or a
    worker, on ``host``; 0: none. Keep it off the ingress: metrics name tenants and models."""
    drain_timeout_s: int = Field(default=30, ge=0)
    """After SIGTERM a gateway takes no new connections and gives open streams this long."""


class QuotaSettings(_Section):
    completion_tokens_estimate: int = Field(default=1024, ge=1)
    """Tokens reserved for the answer when a request sets no max_tokens (corrected to the
    true usage when it ends)."""
    lease_ttl_s: float = Field(default=30.0, gt=0)
    """A concurrency slot of a gateway that stopped renewing it frees after this long."""
    fail_open: bool = False
    """Redis unreachable: admit without limits (true) or refuse with 503 (false, default)."""


class QueueSettings(_Section):
    lease_timeout_s: float = Field(default=15.0, gt=0)
    """A job held this long by a silent worker is reclaimed by another."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """A request with no event for this long ends with 504."""
    worker_ttl_s: float = Field(default=10.0, gt=0)
    """A worker without a heartbeat for this long is not listed in /v1/models."""
    start_timeout_s: float = Field(default=30.0, gt=0)
    """How long a request may wait for a free worker before a 503 (header
    ``x-enclave-queue-timeout`` sets it per request, up to request_timeout_s)."""
    max_queued_per_tenant: int = Field(default=100, ge=1)
    """Requests of one tenant that may wait for a model at once; more get a 503."""
    scheduling: Literal["fair", "fifo"] = "fair"
    """``fair``: each tenant waits in its own queue and workers serve the tenant with the
    least weighted service first, interactive before batch; ``fifo``: one queue, in order."""
    gateway_ttl_s: float = Field(default=15.0, gt=0)
    """A gateway that has not renewed its liveness key for this long is taken for dead:
    another gateway writes a ``gateway_lost`` outcome record for each request it had
    accepted. Renewed every fifth of it."""


class OllamaSettings(_Section):
    aliases: dict[str, str] = Field(default_factory=dict)
    """Ollama model names (``name:tag``) to Enclave model names, as JSON, e.g.
    ``{"smollm2:135m": "smollm2-135m"}``; other names are Enclave's, ``:latest`` dropped."""
    version: str = "0.13.0"
    """What ``/api/version`` reports: the Ollama API version clients may expect."""


class WorkerSettings(_Section):
    model_path: Path | None = None
    served_model_name: str | None = None
    max_num_seqs: int = Field(default=64, ge=1)
    interactive_reserve: int = Field(default=1, ge=0)
    """A batch job starts only if this many slots stay free after it, so interactive work
    starts at once during a batch flood (at most max_num_seqs - 1)."""
    max_model_len: int | None = Field(default=None, ge=16)
    dtype: str = "auto"
    """``auto``: the model's dtype on GPUs; float32 on CPUs without bf16 instructions."""
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    cpu_kvcache_space_gib: int = Field(default=4, ge=1)
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1)
    """The KV cache's size in bytes, finer than ``cpu_kvcache_space_gib`` (which it replaces)
    and, on GPUs, than ``gpu_memory_utilization``: the tokens all running requests hold
    together; past it vLLM queues or preempts requests. Must hold one ``max_model_len``."""
    fim_template: str = ""
    """The model's fill-in-the-middle prompt, holding ``{prefix}`` and ``{suffix}`` once each
    (e.g. ``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>``); empty: ``suffix`` is a
    400."""
    tool_call_parser: str = ""
    """vLLM's tool-call parser for the model's own syntax (e.g. ``hermes``), needed for
    ``tool_choice: "auto"``; ``required`` and a named function work without one."""
    runner: Literal["auto", "generate", "pooling"] = "auto"
    """vLLM's runner: ``auto`` takes it from the model's architecture (an encoder such as
    BERT serves embeddings, a decoder chat and completions); ``pooling`` serves embeddings."""
    failpoint: str | None = None
    """Fault injection for tests only: ``hold_before_generate`` claims jobs and never runs them."""

    @field_validator("fim_template")
    @classmethod
    def _one_prefix_one_suffix(cls, template: str) -> str:
        if template and (template.count("{prefix}") != 1 or template.count("{suffix}") != 1):
            raise ValueError("a FIM template holds {prefix} and {suffix} exactly once each")
        return template


class IssuerSettings(_Section):
    """One trusted identity provider: how its tokens are checked and mapped to people.

    ``preset`` fills the claim layout of a known provider (``keycloak`` needs ``client_id``
    for client roles; ``entra`` keys users by ``oid``; ``okta`` reads roles from ``groups``);
    ``subject_claim`` and ``role_claims`` override it. Exactly one of ``tenant_claim`` and
    ``group_tenants`` says where the tenant comes from.
    """

    issuer: str
    audiences: list[str] = Field(min_length=1)
    algorithms: list[str] = ["RS256"]
    leeway_s: int = Field(default=60, ge=0, le=600)
    require_typ: str | None = None
    """``at+jwt`` to insist on RFC 9068 access tokens."""
    allowed_hosts: list[str] = []
    """Hosts the discovery document may point keys at; default: the issuer's own host."""
    preset: Literal["generic", "keycloak", "entra", "okta"] = "generic"
    client_id: str | None = None
    """Keycloak: the client whose ``resource_access.<client_id>.roles`` hold roles."""
    subject_claim: str | None = None
    tenant_claim: str | None = None
    group_tenants: dict[str, str] = {}
    groups_claim: str = "groups"
    role_claims: list[str] | None = None
    role_map: dict[str, str] = {}
    introspection_client_id: str | None = None
    """Set with the secret to accept opaque tokens through RFC 7662 introspection."""
    introspection_client_secret: SecretStr | None = None
    login_client_id: str | None = None
    """A public client allowed the device grant, for ``enclave login``."""
    login_scope: str = "openid"
    login_resource: str | None = None
    """RFC 8707 resource indicator ``enclave login`` asks for (e.g. the audience)."""
    console_client_id: str | None = None
    """The client the compliance console signs people in with (authorization code + PKCE;
    redirect URI ``<console public URL>/console/callback``); none: no console sign-in here."""
    console_client_secret: SecretStr | None = None
    """Set for a confidential client (``client_secret_basic``); unset: a public client."""
    console_scope: str = "openid"
    console_resource: str | None = None
    """RFC 8707 resource indicator the console asks for, so the access token it gets is one
    this issuer's ``audiences`` accept (e.g. the audience itself)."""

    @model_validator(mode="after")
    def _consistent(self) -> IssuerSettings:
        """Build policy and mapping once, so a bad issuer fails at start-up, not per request."""
        if (self.introspection_client_id is None) != (self.introspection_client_secret is None):
            raise ValueError("set both introspection_client_id and introspection_client_secret")
        if self.console_client_secret is not None and self.console_client_id is None:
            raise ValueError("console_client_secret needs console_client_id")
        if self.preset == "keycloak" and not self.client_id:
            raise ValueError("the keycloak preset needs client_id")
        self.policy()
        self.mapping()
        return self

    def policy(self) -> IssuerPolicy:
        return IssuerPolicy(
            issuer=self.issuer,
            audiences=frozenset(self.audiences),
            algorithms=frozenset(self.algorithms),
            leeway_s=self.leeway_s,
            require_typ=self.require_typ,
        )

    def mapping(self) -> ClaimMapping:
        preset = PRESET_LAYOUTS[self.preset](self)
        return ClaimMapping(
            subject_claim=self.subject_claim or preset.subject_claim,
            tenant_claim=self.tenant_claim,
            group_tenants=self.group_tenants,
            groups_claim=self.groups_claim,
            role_claims=tuple(self.role_claims)
            if self.role_claims is not None
            else preset.role_claims,
            role_map=self.role_map,
        )


@dataclass(frozen=True)
class _Layout:
    subject_claim: str
    role_claims: tuple[str, ...]


PRESET_LAYOUTS: dict[str, Callable[[IssuerSettings], _Layout]] = {
    "generic": lambda s: _Layout("sub", ("roles",)),
    "keycloak": lambda s: _Layout(
        "sub", ("realm_access.roles", f"resource_access.{s.client_id}.roles")
    ),
    "entra": lambda s: _Layout("oid", ("roles",)),
    "okta": lambda s: _Layout("sub", ("groups",)),
}


class OidcSettings(_Section):
    issuers: list[IssuerSettings] = []
    """Trusted identity providers; none means API keys only."""
    create_tenants: bool = True
    """Create a tenant the first time a provider names it; off: unknown tenants are refused."""
    personal_key_days: int = Field(default=90, ge=1)
    personal_key_max_days: int = Field(default=365, ge=1)
    jwks_refresh_cooldown_s: float = Field(default=30.0, ge=0)
    """At most one key refresh per issuer in this time, however many unknown kids arrive."""
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    """Keys are refreshed when older than this (new keys are also fetched on an unknown kid)."""
    jwks_max_stale_s: float = Field(default=3600.0, gt=0)
    """Serve cached keys this long while the provider is unreachable, then refuse."""

    @model_validator(mode="after")
    def _distinct(self) -> OidcSettings:
        issuers = [i.issuer for i in self.issuers]
        if len(set(issuers)) != len(issuers):
            raise ValueError("each issuer may be configured once")
        if self.jwks_max_stale_s < self.jwks_max_age_s:
            raise ValueError("jwks_max_stale_s must not be below jwks_max_age_s")
        if self.personal_key_days > self.personal_key_max_days:
            raise ValueError("personal_key_days exceeds personal_key_max_days")
        return self


class ConsoleSettings(_Section):
    """The compliance console under ``/console/``: sign-in through an issuer's
    ``console_client_id``, sessions kept in Redis."""

    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    """The gateway's external base URL (e.g. ``https://enclave.example.org``), which the
    redirect URI is built on; default: the URL the request came in on. Plain http is
    refused unless the host is a loopback address."""
    session_idle_s: int = Field(default=1800, ge=60)
    """A console session unused this long ends."""
    session_max_s: int = Field(default=8 * 3600, ge=60)
    """A console session ends this long after sign-in, used or not."""
    login_timeout_s: int = Field(default=600, ge=30)
    """How long a sign-in begun at the identity provider may take to come back."""


class TelemetrySettings(_Section):
    """Traces go to an OTLP/HTTP endpoint ops run; none configured, nothing is traced and
    nothing leaves the process."""

    otlp_endpoint: str | None = None
    """e.g. ``http://otel-collector:4318/v1/traces``."""
    service_name: str = "enclave"


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
    log_format: Literal["json", "text"] = "json"
    """``json``: one object per line with the request and trace ids; ``text`` for people."""
    database: DatabaseSettings = DatabaseSettings()
    audit: AuditSettings = AuditSettings()
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    queue: QueueSettings = QueueSettings()
    quota: QuotaSettings = QuotaSettings()
    worker: WorkerSettings = WorkerSettings()
    oidc: OidcSettings = OidcSettings()
    ollama: OllamaSettings = OllamaSettings()
    console: ConsoleSettings = ConsoleSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

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
    def sequencer_database_url(self) -> str:
        if self.audit.sequencer_database_url is not None:
            return self.audit.sequencer_database_url.get_secret_value()
        return self.audit_database_url

    @property
    def pseudonym_key_path(self) -> Path:
        return self.audit.pseudonym_key_file or self.state_dir / "audit-pseudonym.key"

    @property
    def content_key_path(self) -> Path:
        return self.audit.content_key_file or self.state_dir / "audit-content.key"

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
