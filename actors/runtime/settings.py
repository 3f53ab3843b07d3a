"""Settings: the runtime's own, plus one section per service, read from ``REALM_*``.

Settings are read once where a deployment is built (the driver, or the Serve
controller for ``serve deploy``) and passed to actors and replicas as an
argument, so every process of a deployment agrees on them whatever its own
environment holds. Units are in the names.

The runtime's fields are ``REALM_<FIELD>``. Each service keeps its own fields
in a ``Section`` subclass in ``actors/<service>/settings.py``; they are
``REALM_<SERVICE>_<FIELD>`` in the environment and ``<service>_<field>`` as a
keyword (``Settings(cache_shards=8)``), and the service reads them with
``CacheSettings.of(settings)``. Building ``Settings`` reads every registered
service's section (``actors.runtime.registry``), so none is read later in
another process. Field docstrings are the reference: ``docs/configuration.md``
is generated from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024

S = TypeVar("S", bound="Section")


class Section(BaseSettings):
    """One service's settings: subclass with ``service="<name>"``; its fields are
    ``REALM_<NAME>_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    #: The service this section belongs to.
    service: ClassVar[str] = ""
    #: Every section class, by service name (filled as they are defined).
    by_service: ClassVar[dict[str, type[Section]]] = {}

    def __init_subclass__(cls, *, service: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if service:
            cls.service = service
            cls.model_config = {**cls.model_config, "env_prefix": f"REALM_{service.upper()}_"}
            Section.by_service[service] = cls

    @classmethod
    def of(cls: type[S], settings: Settings) -> S:
        """This service's section of ``settings``."""
        section = settings.sections.get(cls.service)
        if not isinstance(section, cls):
            raise LookupError(f"settings hold no {cls.service!r} section; is it registered?")
        return section


class Settings(BaseSettings):
    """The deployment's settings: the runtime's fields, and ``sections`` by service."""

    # Unknown keywords are refused by ``_sections`` rather than by ``extra``, so
    # that type checkers accept the ``<service>_<field>`` keywords it routes.
    model_config = SettingsConfigDict(
        env_prefix="REALM_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    # --- runtime -----------------------------------------------------------
    namespace: str = "realm"
    """Ray namespace that holds every named actor of this deployment."""

    store_url: str = ""
    """``redis://host:port/db`` selects the Redis store (clusters); empty selects SQLite
    under ``data_dir`` (one machine)."""

    data_dir: Path = Path("data")
    """Where the SQLite store keeps its files (one per durable actor)."""

    store_prefix: str = "realm"
    """Prefix of every key the store writes, so deployments can share a Redis."""

    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite ``synchronous`` pragma: FULL survives power loss, NORMAL only a process
    crash (which is what an actor restart is)."""

    snapshot_every: int = Field(10_000, ge=1)
    """Journal entries between snapshots (at least); bounds replay time after a restart."""

    group_commit_max: int = Field(1_000, ge=1)
    """Most journal entries committed in one group commit."""

    # --- HTTP --------------------------------------------------------------
    http_host: str = "127.0.0.1"
    """Address the HTTP ingress listens on: loopback unless you mean to expose it."""

    http_port: int = Field(8000, ge=1, le=65_535)
    """Port of the HTTP ingress."""

    replicas: int = Field(1, ge=1)
    """Replicas per service ingress."""

    max_ongoing_requests: int = Field(256, ge=1)
    """Requests one replica works on at once; requests are light (they await actors)."""

    max_body_bytes: int = Field(8 * MiB, ge=1024)
    """Largest request body accepted; batch writes are the biggest bodies."""

    # --- metrics -----------------------------------------------------------
    metrics_port: int = Field(8090, ge=0, le=65_535)
    """Port of the Prometheus scrape page (Ray's metrics export port) on loopback, for the
    Ray that ``make run`` starts; 0 lets Ray choose. See docs/observability.md."""

    # --- services ----------------------------------------------------------
    sections: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """Each registered service's section, by name (built from its own variables)."""

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Route ``<service>_<field>`` keywords (and ``<service>=`` dicts or
        sections) to each registered service's section, and build every section."""
        from actors.runtime.registry import section_classes

        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = dict(data.pop("sections", None) or {})
        sections: dict[str, Section] = {}
        for name, section_class in section_classes().items():
            if isinstance(given.get(name), section_class):
                sections[name] = given[name]
                continue
            values = dict(given.get(name) or {})
            if isinstance(data.get(name), Section | dict):
                values |= dict(data.pop(name))
            for field in section_class.model_fields:
                if f"{name}_{field}" in data:
                    values[field] = data.pop(f"{name}_{field}")
            sections[name] = section_class(**values)
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"no such setting: {', '.join(unknown)}")
        data["sections"] = sections
        return data

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


__all__ = ["MiB", "Section", "Settings"]
