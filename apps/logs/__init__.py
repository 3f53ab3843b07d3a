"""HTTP, WebSocket and SSE front of distributed logs (service 10), under ``/logs``.

Modules: ``routes`` (push, queries, labels, deletes, retention, limits; Realm's
own shapes and Loki's), ``loki_proto`` (Loki's snappy-compressed protobuf push,
read into the JSON push's shape) and ``tail`` (live tail over SSE and WebSocket
with resume cursors, on the shared stream skeleton of ``apps/streams.py``).
``build(settings)`` is the Serve application.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from actors.logs.client import LogsClient
from actors.logs.settings import LogsSettings
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.logs import routes, tail

DESCRIPTION = """Logs in labelled streams: push (Realm's JSON or Loki's), LogQL queries
(selector, line filters, `| json`, `| logfmt`, label filters; `count_over_time`,
`rate`, `bytes_over_time`, `sum by`), label listing, live tail with resume
cursors, retention and deletes.

Every route needs a principal (`Authorization: Bearer`): a signed-in user, or an
API key with `logs:push`, `logs:read` or `logs:delete`. Each caller is its own
tenant; the admin may also read Realm's own logs (tenant `realm`).
"""


def make_app(client: LogsClient, settings: Settings) -> FastAPI:
    config = LogsSettings.of(settings)
    app = service_app(
        "logs",
        description="\n\n".join([DESCRIPTION, tail.__doc__ or ""]),
        settings=settings,
    )
    app.include_router(routes.router(client, config))
    app.include_router(tail.router(client, config))
    return app


@serve.deployment
@serve.ingress()
class LogsIngress(ClientIngress):
    make_client = LogsClient
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(LogsIngress, settings, streams=True)
