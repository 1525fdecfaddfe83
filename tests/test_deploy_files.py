"""The deployment files: docker-compose.yml, Dockerfile and .dockerignore.

No Docker needed: the files are parsed and checked against what the app expects
(its settings, its CLI, its probes), so a typo or an unsafe default fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from webapp.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("app1", "app2")
TEST_SECRET = "x" * 48

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Docker Compose variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error} and $$."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        is_set = name in env
        is_nonempty = bool(env.get(name))
        if op == ":-":
            return env[name] if is_nonempty else arg
        if op == "-":
            return env[name] if is_set else arg
        if op == ":?" and not is_nonempty or op == "?" and not is_set:
            raise MissingVariable(f"{name}: {arg}")
        return env.get(name, "")

    return _INTERPOLATION.sub(replace, value)


def as_mapping(value: Any) -> dict[str, str]:
    """Compose accepts `environment` as a mapping or a list of KEY=VALUE strings."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return dict(str(item).split("=", 1) for item in value)


def shell_script(command: Any) -> str:
    """The shell text a command runs: the `-c` argument of `sh -c`, or the words joined."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if len(words) >= 3 and Path(words[0]).name in ("sh", "bash") and words[1] == "-c":
        return words[2]
    return shlex.join(words)


def assert_migrates_then_serves(script: str) -> None:
    commands = [part.strip() for part in script.split("&&")]
    migrate = [i for i, part in enumerate(commands) if re.fullmatch(r"webapp\s+migrate", part)]
    serve = [i for i, part in enumerate(commands) if re.match(r"(exec\s+)?webapp\s+serve\b", part)]
    assert migrate, f"no `webapp migrate` step in {script!r}"
    assert serve, f"no `webapp serve` step in {script!r}"
    # Joined by && (serve only after a successful migrate), and serve is the last step.
    assert migrate[0] < serve[0] == len(commands) - 1, script
    assert ";" not in script and "||" not in script, f"a failed migration must stop the start: {script!r}"
    serve_args = shlex.split(commands[serve[0]])
    assert serve_args[0] == "exec", "serve should replace the shell so it receives SIGTERM"
    assert serve_args[serve_args.index("--host") + 1] == "0.0.0.0"
    assert serve_args[serve_args.index("--port") + 1] == "8000"


# --- docker-compose.yml ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def app_env(services: dict[str, Any], name: str) -> dict[str, str]:
    return as_mapping(services[name].get("environment"))


def resolved_app_env(services: dict[str, Any], name: str, **shell: str) -> dict[str, str]:
    return {key: interpolate(value, shell) for key, value in app_env(services, name).items()}


def test_services_present(services: dict[str, Any]) -> None:
    assert {"postgres", "mailpit", *APP_SERVICES} <= set(services)


def test_apps_are_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build is not None, f"{name} has no build section"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_replicas_have_distinct_executor_ids(services: dict[str, Any]) -> None:
    ids = [app_env(services, name).get("EXECUTOR_ID") for name in APP_SERVICES]
    assert all(ids), f"every replica needs an EXECUTOR_ID: {ids}"
    assert len(set(ids)) == len(ids), f"executor ids must differ: {ids}"
    for executor_id in ids:
        assert "$" not in executor_id, "a stable id, not one that depends on the shell"
        assert executor_id != "local"


def test_replicas_share_a_pinned_app_version(services: dict[str, Any]) -> None:
    versions = {app_env(services, name).get("APP_VERSION") for name in APP_SERVICES}
    assert len(versions) == 1, f"replicas must run the same application version: {versions}"
    (version,) = versions
    assert version and "$" not in version and version != "latest", f"APP_VERSION not pinned: {version!r}"


def test_apps_run_in_production(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        assert app_env(services, name).get("ENV") == "production"


def test_database_url_points_at_postgres_service(services: dict[str, Any]) -> None:
    pg_env = as_mapping(services["postgres"].get("environment"))
    for name in APP_SERVICES:
        raw = app_env(services, name)["DATABASE_URL"]
        url = urlsplit(interpolate(raw, {}))
        assert url.scheme.split("+")[0] in ("postgresql", "postgres"), raw
        assert url.hostname == "postgres" and (url.port or 5432) == 5432, raw
        assert url.username == pg_env.get("POSTGRES_USER", "postgres"), raw
        assert url.path.lstrip("/") == pg_env.get("POSTGRES_DB", url.username), raw
        # The same password (variable and default) as the postgres service, both with a
        # shell override.
        assert interpolate(raw, {"POSTGRES_PASSWORD": "s3cret"}).count(":s3cret@") == 1, raw
        assert url.password == interpolate(pg_env["POSTGRES_PASSWORD"], {}), raw
        assert interpolate(pg_env["POSTGRES_PASSWORD"], {"POSTGRES_PASSWORD": "s3cret"}) == "s3cret"


def test_secret_key_comes_from_the_environment(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        raw = app_env(services, name)["SECRET_KEY"]
        assert re.fullmatch(r"\$\{SECRET_KEY:?\?[^}]*\}", raw), (
            f"{name}: SECRET_KEY must be a required reference like ${{SECRET_KEY:?...}}, got {raw!r}"
        )
        with pytest.raises(MissingVariable):
            interpolate(raw, {})
        assert interpolate(raw, {"SECRET_KEY": TEST_SECRET}) == TEST_SECRET


def test_no_secret_literals_in_compose(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = app_env(services, name)
        for key in ("SECRET_KEY", "SMTP_PASSWORD", "SLACK_WEBHOOK_URL", "DBOS_SYSTEM_DATABASE_URL"):
            if key in env and env[key]:
                assert "${" in env[key], f"{name}: {key} is a literal"
    pg_password = as_mapping(services["postgres"].get("environment"))["POSTGRES_PASSWORD"]
    assert pg_password.startswith("${POSTGRES_PASSWORD"), "the database password must be overridable"


def test_app_env_names_are_settings_fields(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in APP_SERVICES:
        unknown = sorted(key for key in app_env(services, name) if key.lower() not in fields)
        assert not unknown, f"{name}: not Settings fields (typo?): {unknown}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_builds_valid_production_settings(services: dict[str, Any], name: str) -> None:
    env = resolved_app_env(services, name, SECRET_KEY=TEST_SECRET)
    settings = Settings(_env_file=None, **{key.lower(): value for key, value in env.items()})  # type: ignore[arg-type]
    settings.check()  # raises ConfigError on unsafe production settings
    assert settings.is_production and not settings.uses_sqlite
    assert settings.system_database_url == settings.database_url  # DBOS tables on PostgreSQL too
    assert settings.smtp_host == "mailpit" and settings.smtp_starttls is False


def test_smtp_points_at_mailpit(services: dict[str, Any]) -> None:
    mailpit = services["mailpit"]
    assert str(mailpit["image"]).split(":")[0] == "axllent/mailpit"
    container_ports = {str(p).rsplit(":", 1)[-1] for p in mailpit.get("ports", [])}
    assert {"8025", "1025"} <= container_ports
    for name in APP_SERVICES:
        env = app_env(services, name)
        assert env["SMTP_HOST"] == "mailpit"
        assert env["SMTP_PORT"] == "1025"
        assert env["SMTP_STARTTLS"].lower() == "false"


def test_apps_run_migrations_then_serve(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        command = services[name].get("command")
        assert command, f"{name} has no command"
        assert_migrates_then_serves(shell_script(command))


def test_apps_publish_distinct_ports(services: dict[str, Any]) -> None:
    published = {}
    for name in APP_SERVICES:
        ports = [str(p) for p in services[name].get("ports", [])]
        assert len(ports) == 1, f"{name}: {ports}"
        host, container = ports[0].rsplit(":", 1)
        assert container == "8000"
        published[name] = host.rsplit(":", 1)[-1]
    assert published == {"app1": "8001", "app2": "8002"}


def test_apps_wait_for_healthy_postgres(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        depends_on = services[name].get("depends_on")
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert depends_on.get("postgres", {}).get("condition") == "service_healthy", name
        assert services[name].get("restart") == "unless-stopped", name


def test_only_one_replica_migrates_at_a_time(services: dict[str, Any]) -> None:
    """app2 starts (and migrates) only once app1 has migrated and answers its health check."""
    assert services["app2"]["depends_on"].get("app1", {}).get("condition") == "service_healthy"
    assert "app2" not in services["app1"].get("depends_on", {})
    healthcheck = services["app1"].get("healthcheck")
    assert healthcheck and not healthcheck.get("disable"), "service_healthy needs a health check"
    test = healthcheck["test"]
    text = test if isinstance(test, str) else " ".join(test)
    assert "/healthz" in text and "curl" not in text and "wget" not in text


def test_postgres_has_volume_and_healthcheck(compose: dict[str, Any], services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    named_volumes = set(compose.get("volumes") or {})
    mounts = [str(v) for v in postgres.get("volumes", [])]
    data_mounts = [m for m in mounts if m.split(":")[1] == "/var/lib/postgresql/data"]
    assert data_mounts, f"postgres data is not on a volume: {mounts}"
    assert data_mounts[0].split(":")[0] in named_volumes, "use a named volume declared at top level"
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else ["sh", "-c", args]


def test_dockerfile_base_image() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.12-slim"


def test_dockerfile_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "no USER instruction: the app would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    cmd_index = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "CMD")
    assert index < cmd_index
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(rf"(useradd|adduser)\b.*\b{re.escape(user.split(':')[0])}\b", runs), "user is never created"


def test_dockerfile_installs_package_without_dev_extras() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    installs = [r for r in runs if re.search(r"pip install\b", r)]
    assert any(re.search(r"pip install (\S+ )*\.(\s|$)", r) for r in installs), installs
    assert not any("[test" in r or " -e " in r or "--editable" in r for r in installs), installs


def test_dockerfile_copies_what_the_app_needs() -> None:
    instructions = dockerfile_instructions()
    assert ("WORKDIR", "/app") in instructions
    copied = set()
    for keyword, args in instructions:
        if keyword == "COPY":
            *sources, _dest = [a for a in args.split() if not a.startswith("--")]
            copied |= {s.rstrip("/") for s in sources}
    needed = {"webapp", "templates", "static", "migrations", "alembic.ini", "dbos-config.yaml", "pyproject.toml",
              "README.md"}
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"
    assert not copied & {".", "tests", "bench", ".venv", "var"}, copied
    missing = sorted(name for name in copied if not (ROOT / name).exists())
    assert not missing, f"COPY sources missing from the repository: {missing}"


def test_dockerfile_app_code_shadows_site_packages() -> None:
    """templates/, static/ and migrations/ are found next to the imported `webapp` package,
    so the image must import it from WORKDIR, not from site-packages."""
    env = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    assert re.search(r"\bPYTHONPATH=/app\b", env), env


def test_dockerfile_exposes_and_probes_port_8000() -> None:
    instructions = dockerfile_instructions()
    assert any(keyword == "EXPOSE" and "8000" in args.split() for keyword, args in instructions)
    healthchecks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].partition("CMD")
    probe = exec_form(command.strip())
    assert probe[0] == "python", "python:3.12-slim has no curl or wget"
    assert "http://127.0.0.1:8000/healthz" in " ".join(probe)
    compile(probe[probe.index("-c") + 1], "<healthcheck>", "exec")


def test_dockerfile_cmd_migrates_then_serves() -> None:
    cmds = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "no CMD"
    assert_migrates_then_serves(shell_script(exec_form(cmds[-1])))


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git", "tests", "bench"} <= patterns
    assert any("__pycache__" in p for p in patterns)
    for needed in ("webapp", "templates", "static", "migrations", "alembic.ini", "pyproject.toml", "README.md"):
        assert needed not in patterns, f"{needed} is copied by the Dockerfile but ignored"
