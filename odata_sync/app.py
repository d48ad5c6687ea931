"""Builds the aiohttp application: store, migrations, service, the OData handler, the request log; start and stop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.exc import DataError

from odata_sync.config import Config
from odata_sync.edm import metadata_xml
from odata_sync.edm.model import default_model
from odata_sync.errors import BadRequest, NotFound, ODataSyncError, PayloadTooLarge
from odata_sync.executor import Executor
from odata_sync.executor.actions import JobActions
from odata_sync.executor.notify import SmtpSettings
from odata_sync.odata.handler import ODATA_VERSION, ODataHandler
from odata_sync.odata.paging import TokenSigner
from odata_sync.odata.serialize import dumps
from odata_sync.service.auth import Authenticator
from odata_sync.service.bootstrap import ensure_admin
from odata_sync.service.cdata import CDataService
from odata_sync.service.requestlog import RequestLog
from odata_sync.service.secrets import SecretBox, load_key
from odata_sync.store import create_store
from odata_sync.store.engine import Store
from odata_sync.store.migrate import upgrade

log = logging.getLogger("odata_sync")
ROOT = "/api.rsc"
_ERROR_TYPE = "application/json;odata.metadata=minimal;charset=utf-8"


@dataclass
class Runtime:
    config: Config
    store: Store
    service: CDataService
    handler: ODataHandler
    authenticator: Authenticator
    request_log: RequestLog
    executor: Executor
    new_admin_token: str | None


RUNTIME = web.AppKey("runtime", Runtime)


def error_response(error: ODataSyncError) -> web.Response:
    response = web.Response(body=dumps(error.to_json()), status=error.status, headers=error.headers)
    response.headers["Content-Type"] = _ERROR_TYPE
    return response


def _internal_error() -> web.Response:
    body = {"error": {"code": "InternalError", "message": "The server failed to process the request; see its log",
                      "details": []}}
    response = web.Response(body=dumps(body), status=500)
    response.headers["Content-Type"] = _ERROR_TYPE
    return response


async def _dispatch(request: web.Request) -> web.StreamResponse:
    runtime: Runtime = request.app[RUNTIME]
    started = time.perf_counter()
    user = error = None
    path = request.raw_path.split("?", 1)[0]
    try:
        if not path.lower().startswith(ROOT) or path[len(ROOT):len(ROOT) + 1] not in ("", "/"):
            raise NotFound(f"Nothing here; the OData service is at {ROOT}/")
        query = request.raw_path.partition("?")[2]
        principal = await runtime.authenticator.authenticate(request.headers, query)
        user = principal.name
        response = await runtime.handler.handle(request, principal)
    except ODataSyncError as exc:
        error = exc.message
        response = error_response(exc)
    except DataError as exc:  # a value the database refuses (overflow, bad cast) is the client's input
        error = "database refused a value"
        response = error_response(BadRequest(f"A value cannot be processed: {exc.orig}"))
    except web.HTTPRequestEntityTooLarge:
        error = "request body too large"
        response = error_response(PayloadTooLarge(
            f"The request body exceeds {runtime.config.max_body_bytes} bytes"))
    except Exception:
        log.exception("unhandled error for %s %s", request.method, path)
        error = "internal error"
        response = _internal_error()
    response.headers["OData-Version"] = ODATA_VERSION
    runtime.request_log.record(method=request.method, url=request.raw_path, user=user, remote=request.remote,
                               status=response.status, runtime_ms=int((time.perf_counter() - started) * 1000),
                               error=error)
    return response


async def create_runtime(config: Config) -> Runtime:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    model = default_model()
    store = create_store(config.store_url, model)
    await upgrade(store)
    key = load_key(config.data_dir, config.secret_key)
    box = SecretBox(key)
    authenticator = Authenticator(store, allow_url_token=config.allow_url_token)
    service = CDataService(store, box, authenticator)
    handler = ODataHandler(model, store, service, TokenSigner(key), metadata_xml(model), root_path=ROOT,
                           max_page_size=config.max_page_size)
    token = await ensure_admin(store, token=config.admin_token, password=config.admin_password)
    request_log = RequestLog(store, authenticator.last_login, keep_days=config.request_log_days)
    smtp = SmtpSettings(config.smtp_host, config.smtp_port, config.smtp_user, config.smtp_password, config.smtp_from,
                        config.smtp_starttls)
    executor = Executor(store, service.connections.plain, workers=config.workers, smtp=smtp,
                        retry_backoff=config.retry_backoff_seconds, schedule_every=config.schedule_seconds,
                        per_connection=config.runs_per_connection)
    service.register_job_actions(JobActions(store, executor))
    return Runtime(config, store, service, handler, authenticator, request_log, executor, token)


def build_app(runtime: Runtime) -> web.Application:
    # long URLs (large $filter expressions) reach the handler, which answers them with an OData error
    app = web.Application(client_max_size=runtime.config.max_body_bytes,
                          handler_args={"max_line_size": 262_144, "max_field_size": 65_536})
    app[RUNTIME] = runtime
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def start(_app: web.Application) -> None:
        runtime.request_log.start()
        if runtime.config.role in ("all", "worker"):
            await runtime.executor.start()

    async def stop(_app: web.Application) -> None:
        await runtime.executor.stop()
        await runtime.request_log.stop()
        await runtime.store.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
