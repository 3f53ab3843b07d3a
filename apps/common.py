"""What every service's HTTP front shares: the app factory and replica options."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from actors.settings import Settings
from apps.errors import install_error_handlers
from apps.limits import BodyLimit


def service_app(*, title: str, description: str, settings: Settings) -> FastAPI:
    """A FastAPI app with Realm's error envelope and body limit.

    OpenAPI lives at ``/<prefix>/docs`` (Serve mounts the app under its prefix).
    """
    app = FastAPI(
        title=f"Realm {title}",
        description=description,
        version="0.1.0",
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def ingress_options(settings: Settings) -> dict[str, Any]:
    """Serve options for an ingress deployment.

    Replicas ask for no CPU (on a small machine a replica's default CPU would
    starve the actors behind it); their requests mostly await actor calls, so
    one replica can work on many at once.
    """
    return {
        "num_replicas": settings.replicas,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": 0},
    }
