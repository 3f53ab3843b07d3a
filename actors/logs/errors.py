"""Errors of the logs service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import InvalidInput, NotFound, RateLimited


class BadQuery(InvalidInput):
    """The LogQL query does not parse, or asks for something this subset lacks."""

    code = "bad_query"


class BadEntry(InvalidInput):
    """An entry or its labels break an ingest rule (names, sizes, counts)."""

    code = "bad_entry"


class IngestLimited(RateLimited):
    """A push went over one of the tenant's limits (``reason``: ``rate_limited``,
    ``stream_limit``, ``line_too_long``, ``max_label_names_per_series``); nothing was kept."""

    code = "ingest_limited"


class DeleteNotFound(NotFound):
    """No such delete request (or it belongs to another tenant)."""

    code = "delete_not_found"
