"""Configuration, from environment variables (and an optional `.env` file) only.

Validated once at start-up: a missing or malformed setting is reported by its variable name,
and secrets are held as `SecretStr` so they never print in a repr, a log line or an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The longest countdown a task retried for infrastructure errors waits in the broker.
INFRA_RETRY_BACKOFF_MAX = 120
REPO_MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"


class SettingsError(RuntimeError):
    """The environment does not describe a runnable callsync; the message names each variable."""


class BaseConfig(BaseSettings):
    """What every process needs, CRM or not: the broker and the database."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    celery_broker_url: str = "redis://localhost:6379/0"
    celery_visibility_timeout: int = Field(default=3600, ge=5)
    database_url: str = "sqlite:///callsync.db"
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    # A call untouched this long with work left is presumed abandoned and re-driven.
    sweep_quiet_seconds: float = Field(default=60.0, ge=0)
    task_time_limit_seconds: int = Field(default=900, ge=10)
    # Messages a worker reserves per pool slot. 1 keeps a killed worker's unacknowledged
    # messages to the ones it was running; a threads pool waiting on distant CRMs keeps its
    # threads busier with 4 (see README "Performance").
    celery_prefetch_multiplier: int = Field(default=1, ge=1)
    log_level: str = "INFO"
    # Deliveries of one message that may die mid-task before it is quarantined as poison.
    redelivery_cap: int = Field(default=5, ge=1)
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics endpoint
    liveness_file: Path | None = None  # touched while the worker consumes; for probes
    liveness_interval_seconds: float = Field(default=10.0, gt=0)


class Settings(BaseConfig):
    """The whole configuration of a worker: refuses to exist without the CRM settings."""

    oracle_base_url: AnyHttpUrl
    oracle_rest_version: str = "11.13.18.05"
    oracle_rest_framework_version: int = Field(default=4, ge=1, le=9)
    oracle_username: str | None = None
    oracle_password: SecretStr | None = None
    oracle_token: SecretStr | None = None
    oracle_phone_channel_id: int | None = None

    caliq_base_url: AnyHttpUrl
    caliq_api_key: SecretStr
    caliq_channel_id: int
    caliq_duplicate_pattern: str = "already exists"

    callsync_mappings_dir: Path = REPO_MAPPINGS
    # Connections a worker process may keep open to the database and to each CRM. They open on
    # demand: a prefork child uses one of each, a threads pool up to its concurrency.
    connection_pool_size: int = Field(default=64, ge=1)
    http_connect_timeout: float = Field(default=5.0, gt=0)
    http_read_timeout: float = Field(default=30.0, gt=0)
    lease_seconds: int = Field(default=120, ge=2)
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0)
    retry_max_attempts: int = Field(default=25, ge=1)
    # Shared across every worker through Redis (token bucket); 0 means no limit.
    oracle_rate_limit_per_second: float = Field(default=0.0, ge=0)
    caliq_rate_limit_per_second: float = Field(default=0.0, ge=0)
    rate_limit_redis_url: str | None = None  # default: the broker, when it is Redis

    def secrets(self) -> tuple[str, ...]:
        values = (self.oracle_password, self.oracle_token, self.caliq_api_key)
        return tuple(v.get_secret_value() for v in values if v is not None)

    @model_validator(mode="after")
    def _oracle_credentials(self) -> Settings:
        basic = self.oracle_username is not None and self.oracle_password is not None
        if not basic and self.oracle_token is None:
            raise ValueError(
                "set ORACLE_USERNAME and ORACLE_PASSWORD (Basic auth) or ORACLE_TOKEN (Bearer)"
            )
        if not self.callsync_mappings_dir.is_dir():
            raise ValueError(
                f"CALLSYNC_MAPPINGS_DIR={self.callsync_mappings_dir}: not a directory"
            )
        return self

    @property
    def oracle_api_root(self) -> str:
        host = str(self.oracle_base_url).rstrip("/")
        return f"{host}/crmRestApi/resources/{self.oracle_rest_version}"

    @property
    def caliq_root(self) -> str:
        return str(self.caliq_base_url).rstrip("/")

    def mapping_settings(self) -> dict[str, object]:
        """The values mapping files may read as `settings.<name>`: never a secret."""
        return {
            "oracle_phone_channel_id": self.oracle_phone_channel_id,
            "caliq_channel_id": self.caliq_channel_id,
        }


def delivery_warnings(settings: Settings) -> list[str]:
    """Settings that would let the broker hand a running or waiting task to a second worker."""
    visibility = settings.celery_visibility_timeout
    warnings = []
    if settings.task_time_limit_seconds >= visibility:
        warnings.append(
            f"TASK_TIME_LIMIT_SECONDS={settings.task_time_limit_seconds} is not below "
            f"CELERY_VISIBILITY_TIMEOUT={visibility}: a long task could be delivered twice"
        )
    if visibility <= INFRA_RETRY_BACKOFF_MAX:
        warnings.append(
            f"CELERY_VISIBILITY_TIMEOUT={visibility} is not above the {INFRA_RETRY_BACKOFF_MAX}s "
            "back-off of a task retried for a database outage: it could run twice"
        )
    step = 3 * (settings.http_connect_timeout + settings.http_read_timeout)
    if settings.lease_seconds < step:
        warnings.append(
            f"LEASE_SECONDS={settings.lease_seconds} is shorter than one step's worst case "
            f"({step:.0f}s: a look-up and a create): another worker could take a live thread"
        )
    return warnings


def inline_retry_limit(visibility_timeout: int) -> float:
    """Longest countdown left to the broker; longer waits go to the database and the sweep."""
    return min(300.0, visibility_timeout / 2)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the environment variable, never echoing a value."""
    lines = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
        problem = "is required but not set" if err["type"] == "missing" else err["msg"]
        lines.append(f"  {name}: {problem}")
    return "invalid callsync configuration:\n" + "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_base_config() -> BaseConfig:
    try:
        return BaseConfig()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
