"""``odata-sync serve | run JOB | migrate | user reset-token NAME``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from odata_sync.config import Config, from_environment
from odata_sync.sqlite_allocator import stop_counting_allocations


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odata-sync", description="Self-hosted data replication, managed over OData")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="holds the SQLite store, the secret key file and logs "
                                          "(ODATA_SYNC_DATA_DIR, default ./odata-sync-data)")
        p.add_argument("--database", dest="database_url",
                       help="store URL: sqlite:///path or postgresql://… (ODATA_SYNC_DATABASE_URL)")

    serve = sub.add_parser("serve", help="run the API server (and, later, the workers)")
    common(serve)
    serve.add_argument("--host", help="listen address (ODATA_SYNC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (ODATA_SYNC_PORT, default 8181)")
    serve.add_argument("--workers", type=int, help="concurrent runs per process (ODATA_SYNC_WORKERS, default 2)")
    serve.add_argument("--role", choices=("all", "api", "worker"), help="ODATA_SYNC_ROLE, default all")
    serve.add_argument("--allow-url-token", action="store_true", default=None,
                       help="accept @authtoken= in URLs (ODATA_SYNC_ALLOW_URL_TOKEN)")
    serve.add_argument("--log-level", default="INFO")

    migrate = sub.add_parser("migrate", help="bring the store's schema up to date and exit")
    common(migrate)

    run = sub.add_parser("run", help="run one job now, in this process, with a progress bar")
    run.add_argument("job", help="the JobName")
    run.add_argument("--force-full", action="store_true", help="re-read everything and reconcile (ForceFullSync)")
    common(run)

    user = sub.add_parser("user", help="manage users from the command line")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    reset = user_sub.add_parser("reset-token", help="issue a new auth token for a user (printed once)")
    reset.add_argument("name")
    common(reset)
    return parser


async def _serve(config: Config) -> None:
    from aiohttp import web  # imported here: `odata-sync run` starts faster without the HTTP stack

    from odata_sync.app import build_app, create_runtime

    runtime = await create_runtime(config)
    if runtime.new_admin_token and not config.admin_token:
        print(f"Created user 'admin' (role cdata_admin). Its auth token, shown only this once: "
              f"{runtime.new_admin_token}", flush=True)
    app = build_app(runtime)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1] if config.port == 0 else config.port
    print(f"odata-sync listening on http://{config.host}:{port}/api.rsc/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("odata-sync stopping: finishing in-flight requests", flush=True)
    await runner.cleanup()


async def _migrate(config: Config) -> None:
    from odata_sync.edm.model import default_model
    from odata_sync.store import create_store
    from odata_sync.store.migrate import current_revision, upgrade

    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = create_store(config.store_url, default_model())
    try:
        await upgrade(store)
        print(f"store at revision {await current_revision(store)}")
    finally:
        await store.close()


async def _reset_token(config: Config, name: str) -> int:
    import sqlalchemy as sa

    from odata_sync.edm.model import default_model
    from odata_sync.service.passwords import new_token, token_hash
    from odata_sync.store import create_store
    from odata_sync.store.migrate import upgrade

    store = create_store(config.store_url, default_model())
    try:
        await upgrade(store)
        users = store.table("Users")
        token = new_token()
        async with store.write() as conn:
            result = await conn.execute(sa.update(users).where(users.c.User == name).values(_TokenHash=token_hash(token)))
        if result.rowcount == 0:
            print(f"no user named {name!r}", file=sys.stderr)
            return 1
        print(token)
        return 0
    finally:
        await store.close()


def _run(coroutine) -> None:
    """uvloop's event loop where installed (markedly faster for the HTTP server), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> None:
    stop_counting_allocations()  # (first: SQLite allows it only before any database is opened)
    args = _parser().parse_args(argv)
    flags = {k: getattr(args, k, None) for k in ("host", "port", "data_dir", "database_url", "workers", "role",
                                                 "allow_url_token")}
    try:
        config = from_environment(**flags)
    except ValueError as exc:
        raise SystemExit(f"odata-sync: {exc}") from exc
    logging.basicConfig(level=getattr(args, "log_level", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "serve":
        _run(_serve(config))
    elif args.command == "migrate":
        asyncio.run(_migrate(config))
    elif args.command == "run":
        from odata_sync.run_command import run_job_from_store

        raise SystemExit(asyncio.run(run_job_from_store(config, args.job, args.force_full)))
    elif args.command == "user":
        raise SystemExit(asyncio.run(_reset_token(config, args.name)))
