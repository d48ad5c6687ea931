"""Settings from flags and ODATA_SYNC_* environment variables (flags win), as one frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8181
    data_dir: Path = Path("./odata-sync-data")
    database_url: str | None = None
    workers: int = 2
    runs_per_connection: int = 2  # concurrent runs, cluster-wide, that may use one connection
    role: str = "all"
    allow_url_token: bool = False
    admin_password: str | None = None
    admin_token: str | None = None
    secret_key: str | None = None
    max_page_size: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    request_log_days: int = 30  # Requests entries older than this are pruned (0 keeps them forever)
    schedule_seconds: float = 15.0  # how often the scheduler looks for due jobs
    retry_backoff_seconds: float = 30.0  # AutomaticJobRetry: the first retry's delay, doubled for each further one
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "odata-sync@localhost"
    smtp_starttls: bool = False

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'odata-sync.db').resolve()}"


def from_environment(**flags) -> Config:
    """Environment first, then any flag that was given (not None) on top."""
    env = os.environ
    values = {
        "host": env.get("ODATA_SYNC_HOST", Config.host),
        "port": int(env.get("ODATA_SYNC_PORT", Config.port)),
        "data_dir": Path(env.get("ODATA_SYNC_DATA_DIR", str(Config.data_dir))),
        "database_url": env.get("ODATA_SYNC_DATABASE_URL") or None,
        "workers": int(env.get("ODATA_SYNC_WORKERS", Config.workers)),
        "runs_per_connection": int(env.get("ODATA_SYNC_RUNS_PER_CONNECTION", Config.runs_per_connection)),
        "role": env.get("ODATA_SYNC_ROLE", Config.role),
        "allow_url_token": _env_bool("ODATA_SYNC_ALLOW_URL_TOKEN"),
        "admin_password": env.get("ODATA_SYNC_ADMIN_PASSWORD") or None,
        "admin_token": env.get("ODATA_SYNC_ADMIN_TOKEN") or None,
        "secret_key": env.get("ODATA_SYNC_SECRET_KEY") or None,
        "max_page_size": int(env.get("ODATA_SYNC_MAX_PAGE_SIZE", Config.max_page_size)),
        "request_log_days": int(env.get("ODATA_SYNC_REQUEST_LOG_DAYS", Config.request_log_days)),
        "schedule_seconds": float(env.get("ODATA_SYNC_SCHEDULE_SECONDS", Config.schedule_seconds)),
        "retry_backoff_seconds": float(env.get("ODATA_SYNC_RETRY_BACKOFF_SECONDS", Config.retry_backoff_seconds)),
        "smtp_host": env.get("ODATA_SYNC_SMTP_HOST") or None,
        "smtp_port": int(env.get("ODATA_SYNC_SMTP_PORT", Config.smtp_port)),
        "smtp_user": env.get("ODATA_SYNC_SMTP_USER") or None,
        "smtp_password": env.get("ODATA_SYNC_SMTP_PASSWORD") or None,
        "smtp_from": env.get("ODATA_SYNC_SMTP_FROM", Config.smtp_from),
        "smtp_starttls": _env_bool("ODATA_SYNC_SMTP_STARTTLS"),
    }
    for name, value in flags.items():
        if value is not None:
            values[name] = Path(value) if name == "data_dir" else value
    if values["role"] not in ("all", "api", "worker"):
        raise ValueError(f"role must be all, api or worker, not {values['role']!r}")
    return Config(**values)
