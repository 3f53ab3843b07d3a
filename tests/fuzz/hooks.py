"""Schemathesis hooks of the fuzz run (``SCHEMATHESIS_HOOKS=tests.fuzz.hooks``).

Long polls (``POST /pubsub/request``, ``GET /queue/{queue}/jobs/{job_id}/wait``)
take a ``timeout_s`` of up to a minute, and a fuzzed case would wait all of it.
A ``timeout_s`` its operation documents as valid and longer than
``LONGEST_WAIT_S`` is shortened to that (and one left out is given, rather than
wait the default), so the case stays valid and the run stays short; a value the
schema refuses is left as it is, so the refusal is still tested.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: The longest a fuzzed long poll waits, in seconds.
LONGEST_WAIT_S = 0.1
#: The field (in a JSON body or the query) of a long poll's wait.
FIELD = "timeout_s"


def _resolve(document: dict[str, Any], schema: Any) -> dict[str, Any]:
    """``schema`` with local ``$ref``s followed (``#/components/...``)."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 16:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema, seen = node, seen + 1
    return schema if isinstance(schema, dict) else {}


def _bound(document: dict[str, Any], schema: Any) -> tuple[float, bool] | None:
    """The upper bound a number schema documents, and whether it is exclusive."""
    schema = _resolve(document, schema)
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        found = _bound(document, option)
        if found is not None:
            return found
    if "exclusiveMaximum" in schema:
        return float(schema["exclusiveMaximum"]), True
    if "maximum" in schema:
        return float(schema["maximum"]), False
    return None


def _shortened(value: Any, bound: tuple[float, bool] | None) -> Any:
    if bound is None or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    maximum, exclusive = bound
    valid = value < maximum if exclusive else value <= maximum
    return LONGEST_WAIT_S if valid and value > LONGEST_WAIT_S else value


def _document(context: Any) -> dict[str, Any]:
    raw = getattr(context.operation.schema, "raw_schema", {})
    return raw if isinstance(raw, dict) else {}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every case of every phase passes here just before it is sent (schemathesis
    then checks again whether it is valid)."""
    operation = context.operation
    if operation is None:
        return
    document = _document(context)
    raw = operation.definition.raw
    if isinstance(case.body, dict):
        content = raw.get("requestBody", {}).get("content", {}).get("application/json", {})
        field = _resolve(document, content.get("schema")).get("properties", {}).get(FIELD)
        bound = _bound(document, field)
        if FIELD in case.body:
            case.body[FIELD] = _shortened(case.body[FIELD], bound)
        elif bound is not None and _resolve(document, field).get("default", 0) > LONGEST_WAIT_S:
            case.body[FIELD] = LONGEST_WAIT_S  # rather than wait the default
    if isinstance(case.query, dict) and FIELD in case.query:
        for parameter in raw.get("parameters", []):
            if parameter.get("in") == "query" and parameter.get("name") == FIELD:
                bound = _bound(document, parameter.get("schema"))
                case.query[FIELD] = _shortened(case.query[FIELD], bound)
