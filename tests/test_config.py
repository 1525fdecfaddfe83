"""Settings: safe development defaults, and production refusing unsafe values."""

from __future__ import annotations

from pathlib import Path

import pytest

from webapp.config import ConfigError, Settings

STRONG = "x" * 48


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_development_needs_nothing_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DBOS_SYSTEM_DATABASE_URL", "ENV", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = make()
    settings.check()
    assert settings.database_url == "sqlite:///var/gatehouse.sqlite"
    assert settings.system_database_url == "sqlite:///var/gatehouse_dbos.sqlite"  # where `dbos` looks too
    assert settings.resolved_log_format == "console"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/gate")
    monkeypatch.setenv("EXECUTOR_ID", "app-7")
    settings = make()
    assert settings.database_url == "postgresql://u:p@db:5432/gate"
    # On PostgreSQL DBOS shares the database (its tables live in the `dbos` schema).
    assert settings.system_database_url == settings.database_url
    assert settings.executor_id == "app-7"


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASE_URL", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("BASE_URL=https://gate.example.org\n")
    assert Settings(_env_file=env_file).base_url == "https://gate.example.org"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "SECRET_KEY is not set"),
        ({"secret_key": "short"}, "SECRET_KEY is too weak"),
        ({"secret_key": STRONG, "executor_id": "local"}, "EXECUTOR_ID is not set"),
        ({"secret_key": STRONG, "executor_id": "a", "workers": 2}, "several executors need PostgreSQL"),
        ({"secret_key": STRONG, "executor_id": "a", "password_hashing": "light"}, "PASSWORD_HASHING is light"),
        ({"secret_key": STRONG, "executor_id": "a", "database_url": "postgresql://db/g"},
         "BASE_URL is http://127.0.0.1:8000; production needs its https:// address"),
        ({"secret_key": STRONG, "executor_id": "a", "oidc_issuer": "http://idp.example.org", "oidc_client_id": "g",
          "oidc_client_secret": "s"}, "production talks to its provider over https://"),
        ({"secret_key": STRONG, "executor_id": "a", "oidc_issuer": "https://idp.example.org", "oidc_client_id": "g"},
         "without OIDC_CLIENT_SECRET"),
    ],
)
def test_production_refuses_unsafe_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(env="production", **values).check()


def test_production_accepts_safe_values() -> None:
    settings = make(env="production", secret_key=STRONG, executor_id="app-1", database_url="postgresql://db/g",
                    base_url="https://gate.example.org")
    settings.check()
    plain = make(env="production", secret_key=STRONG, executor_id="app-1", database_url="postgresql://db/g",
                 allow_insecure_http=True)
    plain.check()  # plain http, on purpose
    assert settings.resolved_log_format == "json"


def test_passwords_are_off_in_production_once_oidc_is_set(tmp_path: Path) -> None:
    secret_file = tmp_path / "oidc-secret"
    secret_file.write_text("from-a-file\n")
    sso = {"oidc_issuer": "https://idp.example.org", "oidc_client_id": "gatehouse", "oidc_client_secret_file": secret_file}
    assert make(**sso).passwords_allowed, "development keeps them"
    production = make(env="production", **sso)
    assert not production.passwords_allowed and production.oidc_secret() == "from-a-file"
    assert make(env="production", password_sign_in=True, **sso).passwords_allowed
    assert make(env="production").passwords_allowed, "no provider: passwords are the way in"
    with pytest.raises(ValueError, match="OIDC_ROLE_GROUPS wants group=role pairs"):
        make(oidc_role_groups="gatehouse-admins=root")


def test_a_system_database_of_the_earlier_name_is_adopted(tmp_path: Path) -> None:
    """var/gatehouse-dbos.sqlite (before 0.2) becomes var/gatehouse_dbos.sqlite, WAL and all."""
    from webapp.workflows.runtime import adopt_earlier_system_file

    for suffix in ("", "-wal"):
        (tmp_path / f"gatehouse-dbos.sqlite{suffix}").write_text(f"workflows{suffix}")
    adopt_earlier_system_file(make(database_url=f"sqlite:///{tmp_path / 'gatehouse.sqlite'}"))
    assert (tmp_path / "gatehouse_dbos.sqlite").read_text() == "workflows"
    assert (tmp_path / "gatehouse_dbos.sqlite-wal").read_text() == "workflows-wal"
    assert not list(tmp_path.glob("gatehouse-dbos*"))

