"""The `webapp` command: serve, migrate, seed-demo, create-user, import-users.

Configuration errors end the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from webapp.config import ConfigError, Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from webapp.app import create_app
    from webapp.core.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.resolved_log_format)
    app = create_app(settings)
    app.state.serving_pid = os.getpid()  # POST /ops/shutdown may stop this process: uvicorn handles its SIGTERM
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,  # our handler, set up above, formats uvicorn's lines too
        access_log=args.access_log,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )
    # Workflows waiting in DBOS.recv (a grant's end, a pending decision) sit in executor
    # threads that DBOS.destroy() does not wake; the interpreter would wait for them at exit.
    # Their state is durable and this executor recovers them at its next start, so leave now.
    logging.shutdown()
    os._exit(0)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from webapp.core.migrate import upgrade

    upgrade(settings.database_url)
    print(f"database is at the latest schema ({_redact(settings.database_url)})")
    return 0


def _seed_demo(settings: Settings, args: argparse.Namespace) -> int:
    from webapp.core.db import Database
    from webapp.services.demo import DEMO_PASSWORD, database_has_users, demo_logins, seed_demo

    if settings.is_production and not args.force:
        print("refusing to seed demo data with ENV=production (use --force)", file=sys.stderr)
        return 2
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            if database_has_users(session):
                logins = demo_logins(session)
                print("the database already has users; demo data not added")
                if not logins:
                    return 0
                print(f"Demo logins (password: {DEMO_PASSWORD}):")
            else:
                logins = seed_demo(session)
                print(f"Demo organisation created. Every demo login uses the password: {DEMO_PASSWORD}")
    finally:
        database.dispose()
    for role in ("admin", "approver", "member"):
        for login in [entry for entry in logins if entry.role == role][:3]:
            print(f"  {role:<8} {login.email:<32} {login.name}")
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from webapp.services.accounts import AccountError, create_user
    from webapp.core.db import Database

    password = args.password
    if password is None and not args.no_password:
        password = getpass.getpass("Password: ")
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            user = create_user(
                session, email=args.email, name=args.name, password=password, role=args.role,
                department=args.department, title=args.title, actor="cli",
            )
            print(f"created {user.role} {user.email} (id {user.id})")
    except AccountError as exc:
        print(f"cannot create user: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    return 0


def _import_users(settings: Settings, args: argparse.Namespace) -> int:
    from webapp.cli.imports import CommandError, import_users

    try:
        status = import_users(settings, source=args.source, count=args.count, seed=args.seed,
                              chunk_size=args.chunk_size, nat=args.nat, create_users=args.create_users,
                              resume=args.resume, quiet=args.quiet)
    except CommandError as exc:
        print(f"cannot import: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("\nstopped; run the same command again to finish the import", file=sys.stderr)
        status = 130
    # Like `serve`: DBOS executor threads may still wait; the import's state is durable.
    sys.stdout.flush()
    logging.shutdown()
    os._exit(status)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webapp", description="Gatehouse access-request portal")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the web app and its workflows")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database to the latest schema")
    migrate.set_defaults(run=_migrate)

    seed = commands.add_parser("seed-demo", help="create a demo organisation in an empty database")
    seed.add_argument("--force", action="store_true", help="allow it with ENV=production")
    seed.set_defaults(run=_seed_demo)

    user = commands.add_parser("create-user", help="add a person who can sign in")
    user.add_argument("--email", required=True)
    user.add_argument("--name", required=True)
    user.add_argument("--role", default="member", choices=["member", "approver", "admin"])
    user.add_argument("--department", default="")
    user.add_argument("--title", default="")
    user.add_argument("--password", help="omit to be asked (safer than the command line)")
    user.add_argument("--no-password", action="store_true", help="a person who cannot sign in yet")
    user.set_defaults(run=_create_user)

    imports = commands.add_parser("import-users", help="import people from a randomuser-compatible API or file")
    imports.add_argument("--source", help="API address (e.g. https://randomuser.me) or a JSON file")
    imports.add_argument("--count", type=int, default=1000)
    imports.add_argument("--seed", default="gatehouse")
    imports.add_argument("--chunk-size", type=int, help="people per transaction (default IMPORT_CHUNK_SIZE)")
    imports.add_argument("--nat", default="", help="nationalities for an API, e.g. DE,FR")
    imports.add_argument("--create-users", action="store_true", help="also create a member per person")
    imports.add_argument("--resume", type=int, metavar="JOB", help="finish a cancelled or failed import")
    imports.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    imports.set_defaults(run=_import_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        settings.check()
        return int(args.run(settings, args))
    except ConfigError as exc:
        print(f"gatehouse: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
