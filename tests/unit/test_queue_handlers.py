"""Which handlers a job may name: only functions an allowed module defines (or marks).

This module stands for an allowed module that imports dangerous names, as any
module may: ``system``, ``run`` and ``check_output`` are attributes of it, and a
job naming them must be refused all the same.
"""

from __future__ import annotations

import os
from os import system  # noqa: F401 (imported on purpose: a job must not reach it)
from subprocess import check_output, run  # noqa: F401 (likewise)
from typing import Any

import pytest

from actors.queue.errors import UnknownHandler
from actors.queue.handlers import echo
from actors.queue.model import HandlerCache, job_handler, resolve_handler

HERE = (__name__,)


def own_function(**args: Any) -> dict[str, Any]:
    """Defined here: a handler."""
    return args


async def own_coroutine() -> None:
    """Defined here too."""


#: Defined elsewhere and marked: a handler here, on purpose.
lent = job_handler(echo)


class NotAFunction:
    """A class is callable, but it is no handler."""


@pytest.mark.parametrize(
    "name",
    [
        "system",  # os.system, imported by name
        "run",  # subprocess.run
        "check_output",
        "os",  # a module
        "NotAFunction",  # a class defined here
        "Any",  # typing.Any, imported
        "pytest",
        "_private",
        "own_function.__call__",  # no attribute paths
        "__builtins__",
    ],
)
def test_a_name_the_module_did_not_define_is_refused(name: str) -> None:
    with pytest.raises(UnknownHandler):
        resolve_handler(f"{__name__}:{name}", HERE)


def test_functions_defined_in_the_module_or_marked_are_handlers() -> None:
    assert not resolve_handler(f"{__name__}:own_function", HERE).is_async
    assert resolve_handler(f"{__name__}:own_coroutine", HERE).is_async
    assert resolve_handler(f"{__name__}:lent", HERE).fn is echo


def test_the_sample_handlers_module_lends_only_its_own_functions() -> None:
    handlers = HandlerCache("actors.queue.handlers")
    assert handlers.get("actors.queue.handlers:echo").fn is echo
    for imported in ("asyncio", "time", "Any", "HandlerFailed"):
        with pytest.raises(UnknownHandler):
            handlers.get(f"actors.queue.handlers:{imported}")


def test_a_refusal_tells_no_internal_detail() -> None:
    with pytest.raises(UnknownHandler) as refused:
        resolve_handler(f"{__name__}.missing:f", HERE)
    assert os.sep not in str(refused.value.details) and "error" not in refused.value.details
