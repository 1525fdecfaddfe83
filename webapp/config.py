"""Settings: one typed object read from the environment and an optional `.env` file.

Nothing reads the environment at import time; `Settings()` is built by the CLI or a
test and handed to `create_app`. Development needs nothing set (SQLite files under
`var/`); production refuses to start on missing or unsafe values.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_PLACEHOLDER = "dev-insecure-secret-key-change-me"
VAR_DIR = Path("var")


class ConfigError(Exception):
    """A setting is missing or unsafe; the message is one line meant for the operator."""


# An agent's secret comes from an environment variable with this prefix, or from a file in
# AGENT_SECRETS_DIR: a setting typed on a page can never send the app's own secrets
# (SECRET_KEY, DATABASE_URL, SMTP_PASSWORD, ...) to a system it names.
AGENT_SECRET_ENV_PREFIX = "GATEHOUSE_AGENT_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    env: Literal["development", "production"] = "development"
    database_url: str = f"sqlite:///{VAR_DIR}/gatehouse.sqlite"
    dbos_system_database_url: str | None = None
    secret_key: str = ""
    executor_id: str = "local"
    app_version: str = "0.1.0"
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: Literal["json", "console"] | None = None
    base_url: str = "http://127.0.0.1:8000"
    # Production refuses a plain-http BASE_URL (cookies without Secure, no HSTS) unless this
    # says so on purpose: a closed network, or a demo on localhost.
    allow_insecure_http: bool = False
    # argon2id parameters for new password hashes: "light" is for test suites (a millisecond a
    # hash instead of a fifth of a second) and production refuses it.
    password_hashing: Literal["recommended", "light"] = "recommended"

    slack_webhook_url: str | None = None
    # Decisions from Slack's buttons (POST /slack/actions, webapp/web/slack.py): the Slack app's
    # signing secret authenticates each click; its bot token (scopes users:read and
    # users:read.email) finds the Gatehouse person behind a Slack user and opens the reject form.
    slack_signing_secret: str | None = None
    slack_bot_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    # Replies go to the response_url of each click, and only where it starts with this.
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "gatehouse@localhost"
    smtp_starttls: bool = True

    # Queues: (worker concurrency, rate limit count, rate limit period in seconds).
    slack_concurrency: int = 1
    slack_rate_limit: int = 1
    slack_rate_period: float = 1.0
    email_concurrency: int = 5
    email_rate_limit: int = 50
    email_rate_period: float = 30.0
    # How often each process polls each queue (each poll is a few queries and a commit, about
    # 6 ms of CPU on PostgreSQL: an idle process polling six queues every 0.2 s used 30 % of a
    # core). The requests queue (operator batches), notifications (a person reads them, so
    # half a second is soon enough), background work (imports, adopted workflows).
    queue_polling_interval: float = Field(default=0.2, gt=0)
    notify_queue_polling_interval: float = Field(default=0.5, gt=0)
    background_queue_polling_interval: float = Field(default=2.0, gt=0)

    # On shutdown, how long running workflows may go on before DBOS stops (the rest resume
    # at the next start with this executor id).
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Each process rewrites its executor_heartbeat row this often; the ops console calls an
    # executor gone after three intervals without one.
    heartbeat_interval_seconds: float = Field(default=10.0, gt=0)
    # An executor whose heartbeat is older than this is dead: a live process adopts its
    # pending workflows (webapp/workflows/takeover.py). At least three heartbeats.
    executor_lease_seconds: float = Field(default=60.0, gt=0)
    # /readyz checks both databases at once, each for at most this long.
    ready_timeout_seconds: float = Field(default=2.0, gt=0)
    # The live feed's poll (SQLite; on PostgreSQL NOTIFY wakes it and this is a fallback).
    live_poll_interval: float = Field(default=0.25, gt=0)
    # A browser back after more changes than this is told to reload instead of replaying them;
    # one person keeps at most this many streams (the oldest closes) and opens at most this
    # many a minute.
    live_replay_limit: int = Field(default=1000, ge=1)
    live_streams_per_person: int = Field(default=10, ge=1)
    live_connects_per_minute: int = Field(default=30, ge=1)
    sweep_interval_seconds: int = Field(default=5, ge=1, le=59)
    # Grants at least this long get a reminder this long before they end.
    grant_reminder_min_seconds: int = Field(default=8 * 3600, ge=1)
    grant_reminder_before_seconds: int = Field(default=3600, ge=1)

    # Sign-in through the company's OpenID Connect provider (webapp/web/oidc.py): on once
    # OIDC_ISSUER and OIDC_CLIENT_ID are set. The client secret comes from the environment or a
    # file. People are created or updated from the ID token's claims at each sign-in; their role
    # from the groups claim (OIDC_ROLE_GROUPS: "group=role" pairs; no mapped group: member).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_client_secret_file: Path | None = None
    oidc_scopes: str = "openid email profile"
    oidc_provider_name: str = "your company account"  # the sign-in button says "Sign in with ..."
    oidc_email_claim: str = "email"
    oidc_name_claim: str = "name"
    oidc_department_claim: str = "department"
    oidc_title_claim: str = "title"
    oidc_groups_claim: str = "groups"
    oidc_role_groups: str = "gatehouse-admins=admin,gatehouse-approvers=approver"
    oidc_clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    # Local passwords: on by default, except in production once OIDC is set. With them off, only
    # BREAK_GLASS_EMAIL may still sign in with a password (an admin for when the provider is
    # down); each such sign-in is audited as auth.break_glass and logged as critical.
    password_sign_in: bool | None = None
    break_glass_email: str | None = None

    # Sessions and sign-in.
    session_idle_minutes: int = Field(default=60, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    # Failed sign-ins: an account may be tried this often from one address, and an address
    # this often across all accounts, within the window; each failure beyond that doubles the
    # wait before the next try from that address (from LOGIN_DELAY_SECONDS up to the window).
    # Nobody can lock an account from elsewhere.
    login_attempts_per_account: int = Field(default=5, ge=1)
    login_attempts_per_ip: int = Field(default=20, ge=1)
    login_attempt_window_seconds: int = Field(default=15 * 60, ge=1)
    login_delay_seconds: float = Field(default=1.0, gt=0)
    # The longest life a person may give an API token, in days.
    token_max_days: int = Field(default=90, ge=1, le=3650)
    # Addresses of the proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (comma-separated, "*" for any). None by default: a client cannot pick its own address.
    forwarded_allow_ips: str = ""
    # Request submissions per user.
    submit_rate_limit: int = 50
    submit_rate_period: float = 30.0

    # Notification delivery.
    outbox_concurrency: int = Field(default=10, ge=1)
    # The send step's retries: attempts in all, first pause, and the factor for each next pause.
    notify_max_attempts: int = Field(default=5, ge=1)
    notify_retry_interval_seconds: float = Field(default=2.0, gt=0)
    notify_backoff_rate: float = Field(default=2.0, ge=1)
    # One HTTP POST or SMTP conversation may take this long before it counts as failed.
    notify_timeout_seconds: float = Field(default=10.0, gt=0)

    # Fulfilment (webapp/workflows/fulfilment.py): a task whose target is down retries after
    # the first pause, each next pause this factor longer, up to the longest; a person's task
    # reminds its assignees at this interval and tells the admins from the second reminder on.
    # Where agents may connect: names, addresses or networks, comma-separated; "*" for anywhere.
    agent_allowed_hosts: str = "*"
    agent_secrets_dir: Path = Path("/run/secrets")
    agent_retry_first_seconds: float = Field(default=1.0, gt=0)
    agent_retry_max_seconds: float = Field(default=60.0, gt=0)
    agent_backoff_rate: float = Field(default=2.0, ge=1)
    # How often each agent's queue looks for work: the wait between an approval and the change
    # in the target is mostly this (one cheap query per agent per look, per process).
    agent_queue_polling_interval: float = Field(default=0.1, gt=0)
    task_remind_seconds: float = Field(default=24 * 3600.0, gt=0)

    # Bulk import.
    # Fetched pages are kept here, keyed by (source, seed, page, results, nat).
    import_cache_dir: Path = VAR_DIR / "import-cache"
    # File sources named on the web form must be in this directory (the CLI may read any file).
    import_files_dir: Path = Path("samples")
    import_chunk_size: int = Field(default=500, ge=1, le=5000)
    # People asked for in one API request (randomuser.me serves at most 5,000).
    import_page_size: int = Field(default=1000, ge=1, le=5000)
    import_max_count: int = Field(default=1_000_000, ge=1)
    # The import queue: chunk workflows at once per process, and chunks started per period.
    import_concurrency: int = Field(default=4, ge=1)
    import_rate_limit: int = Field(default=50, ge=1)
    import_rate_period: float = Field(default=1.0, gt=0)
    # The requests queue (operator batches, /ops/submit and /ops/batch): request workflows
    # at once per process, and started per period.
    batch_concurrency: int = Field(default=8, ge=1)
    batch_rate_limit: int = Field(default=50, ge=1)
    batch_rate_period: float = Field(default=1.0, gt=0)
    batch_max_count: int = Field(default=5_000, ge=1)
    # Page fetches: timeout per try, tries in all, first pause and its growth factor.
    import_fetch_timeout_seconds: float = Field(default=30.0, gt=0)
    import_fetch_max_attempts: int = Field(default=5, ge=1)
    import_fetch_retry_interval_seconds: float = Field(default=1.0, gt=0)
    import_fetch_backoff_rate: float = Field(default=2.0, ge=1)
    # API pages fetched ahead of the parent workflow, in parallel (0: one page at a time).
    import_prefetch_pages: int = Field(default=2, ge=0, le=8)
    # Where the import may fetch from (comma-separated names, addresses or networks; every address
    # a name resolves to must be public unless listed), and the largest page it reads.
    import_allowed_hosts: str = "randomuser.me"
    import_max_page_bytes: int = Field(default=20_000_000, ge=1024)
    # OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); unset: no tracing.
    import_otlp_endpoint: str | None = None

    @field_validator("database_url", "dbos_system_database_url")
    @classmethod
    def _normalise_postgres_scheme(cls, value: str | None) -> str | None:
        """`postgres://` (Heroku, compose files) means psycopg 3 to SQLAlchemy 2."""
        if value and value.startswith("postgres://"):
            return "postgresql://" + value.removeprefix("postgres://")
        return value

    @field_validator("oidc_role_groups")
    @classmethod
    def _role_groups(cls, value: str) -> str:
        for pair in filter(str.strip, value.split(",")):
            group, _, role = pair.partition("=")
            if not group.strip() or role.strip() not in ("member", "approver", "admin"):
                raise ValueError(f"OIDC_ROLE_GROUPS wants group=role pairs (roles: member, approver, admin), "
                                 f"not {pair.strip()!r}")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> Settings:
        """A lease shorter than three heartbeats would adopt the work of executors that are
        only a beat late."""
        if self.executor_lease_seconds < 3 * self.heartbeat_interval_seconds:
            raise ValueError(f"EXECUTOR_LEASE_SECONDS ({self.executor_lease_seconds:g}) must be at least three "
                             f"HEARTBEAT_INTERVAL_SECONDS ({self.heartbeat_interval_seconds:g} each)")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def https(self) -> bool:
        """Browsers reach Gatehouse over TLS: cookies are Secure (and __Host-), HSTS is sent."""
        return self.base_url.startswith("https://")

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def system_database_url(self) -> str:
        """DBOS's own tables: a file next to the app's on SQLite, the same database on PostgreSQL
        (DBOS keeps them in its `dbos` schema)."""
        if self.dbos_system_database_url:
            return self.dbos_system_database_url
        if self.uses_sqlite:
            return f"sqlite:///{system_file_beside(Path(self.database_url.removeprefix('sqlite:///')))}"
        return self.database_url

    @property
    def resolved_log_format(self) -> str:
        return self.log_format or ("json" if self.is_production else "console")

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    @property
    def passwords_allowed(self) -> bool:
        """Whether anyone but the break-glass account may sign in with a password."""
        if self.password_sign_in is not None:
            return self.password_sign_in
        return not (self.is_production and self.oidc_enabled)

    def oidc_secret(self) -> str | None:
        """The client secret, from OIDC_CLIENT_SECRET or the file OIDC_CLIENT_SECRET_FILE names."""
        if self.oidc_client_secret_file is not None:
            return self.oidc_client_secret_file.read_text().strip()
        return self.oidc_client_secret

    def oidc_roles(self) -> dict[str, str]:
        """OIDC_ROLE_GROUPS as {group: role}."""
        pairs = [pair.split("=", 1) for pair in self.oidc_role_groups.split(",") if pair.strip()]
        return {group.strip(): role.strip() for group, role in pairs}

    @property
    def session_secret(self) -> str:
        return self.secret_key or DEV_SECRET_PLACEHOLDER

    def check(self) -> None:
        """Refuse unsafe production settings with one clear line (raises ConfigError)."""
        if not self.is_production:
            return
        if not self.secret_key:
            raise ConfigError("SECRET_KEY is not set; production needs a random secret of 32+ characters")
        if len(self.secret_key) < 32 or self.secret_key == DEV_SECRET_PLACEHOLDER:
            raise ConfigError("SECRET_KEY is too weak; use at least 32 random characters")
        if self.system_database_url.startswith("sqlite") and self.workers > 1:
            raise ConfigError(
                "DBOS_SYSTEM_DATABASE_URL is SQLite but WORKERS > 1; "
                "several executors need PostgreSQL"
            )
        if self.password_hashing != "recommended":
            raise ConfigError("PASSWORD_HASHING is light; production hashes passwords with the recommended cost")
        if self.executor_id == "local":
            raise ConfigError(
                "EXECUTOR_ID is not set; give each production process a stable, distinct id "
                "so a restart recovers its own workflows"
            )
        if self.oidc_enabled and not str(self.oidc_issuer).startswith("https://"):
            raise ConfigError(f"OIDC_ISSUER is {self.oidc_issuer}; production talks to its provider over https://")
        if self.oidc_enabled and not self.oidc_secret():
            raise ConfigError("OIDC_CLIENT_ID is set without OIDC_CLIENT_SECRET (or OIDC_CLIENT_SECRET_FILE)")
        if not self.https and not self.allow_insecure_http:
            raise ConfigError(
                f"BASE_URL is {self.base_url}; production needs its https:// address (TLS may end in front of "
                "Gatehouse), or ALLOW_INSECURE_HTTP=1 to serve plain http on purpose"
            )


def system_file_beside(app_file: Path) -> Path:
    """The DBOS system database file beside an SQLite app database: var/gatehouse.sqlite has
    var/gatehouse_dbos.sqlite, which is also where DBOS's own CLI looks (dbos-config.yaml)."""
    return app_file.with_name(f"{app_file.stem}_dbos{app_file.suffix}")


def generate_secret_key() -> str:
    return secrets.token_urlsafe(48)
