"""Schemathesis over every service's OpenAPI, signed in as a user.

Every route must answer no 5xx, only the statuses its OpenAPI documents (with
their headers, in the schema it documents); refuse input its schema refuses;
answer 401 without credentials where it needs them, 405 with a true ``Allow``
to a method it does not take. Every check of schemathesis runs but
``positive_data_acceptance``: a service may refuse input for rules a schema
cannot state (give one of ``cron``, ``every_s`` or ``at``; no repeated id in
a batch); ``REALM_FUZZ_CHECKS=all`` runs it too, to list them.

The budget: ``REALM_FUZZ_MAX_EXAMPLES`` cases per operation and phase (5 by
default: ``make test``; ``make fuzz`` runs 200). With ``REALM_FUZZ_SEED`` unset
the cases are derandomized (the same on every run, as CI wants); with a seed
they are drawn from it (``make fuzz`` draws a new one; a failure shows it).
Reproduce a failure with the ``curl`` lines schemathesis prints, or run this
against a stack of ``make run``: ``REALM_FUZZ_URL=http://127.0.0.1:8000``.
Services run two at a time (``LANES``), every one as a test of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fuzz.conftest import SERVICES, Stack

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis.toml"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

MAX_EXAMPLES = int(os.environ.get("REALM_FUZZ_MAX_EXAMPLES", "5"))
SEED = os.environ.get("REALM_FUZZ_SEED", "")
CHECKS = os.environ.get("REALM_FUZZ_CHECKS", "")
#: How long one service's run may take (and so a test waiting for it).
RUN_TIMEOUT_S = max(300, 15 * MAX_EXAMPLES)
#: Routes that end the caller's session: fuzzed last, after every other route.
SIGN_OUT = "^/logout"

pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S * 2)


def budget() -> list[str]:
    drawn = ["--seed", SEED] if SEED else ["--generation-deterministic"]
    return ["--max-examples", str(MAX_EXAMPLES), *drawn]


def checks() -> list[str]:
    if CHECKS:
        return ["--checks", CHECKS]
    return ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def schemathesis(stack: Stack, service: str, authorization: str, *extra: str) -> str | None:
    """Run schemathesis over ``service``; what it found, or None."""
    prefix = f"{stack.base_url}/{service}"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{prefix}/openapi.json",
        "--url",
        prefix,
        "--header",
        f"Authorization: {authorization}",
        *checks(),
        "--request-timeout",
        "20",
        "--workers",
        "1",
        *budget(),
        *extra,
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
    }
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=HERE, env=environment
    )
    if done.returncode == 0:
        return None
    found = done.stdout[-20_000:] + done.stderr[-5_000:]
    return f"schemathesis found problems in /{service}:\n{found}"


def fuzz(stack: Stack, service: str) -> str | None:
    authorization = stack.users[service]
    if service != "auth":
        return schemathesis(stack, service, authorization)
    # Signing out would sign the rest of the run out: those routes go last.
    found = [
        schemathesis(stack, service, authorization, "--exclude-path-regex", SIGN_OUT),
        schemathesis(stack, service, authorization, "--include-path-regex", SIGN_OUT),
    ]
    return "\n".join(problem for problem in found if problem) or None


#: Runs at once. Pub/sub's streams mostly wait (each is read for a moment, see
#: schemathesis.toml): it runs beside the others, which run one after another.
LANES = 2


@pytest.fixture(scope="session")
def runs(stack: Stack) -> Iterator[dict[str, Future[str | None]]]:
    """Every service's run, started at once (the longest first) in ``LANES`` lanes."""
    names = sorted((service.name for service in SERVICES), key=lambda name: name != "pubsub")
    with ThreadPoolExecutor(max_workers=LANES, thread_name_prefix="fuzz") as pool:
        yield {name: pool.submit(fuzz, stack, name) for name in names}


@pytest.mark.parametrize("service", [service.name for service in SERVICES])
def test_every_route_answers_as_its_openapi_says(
    runs: dict[str, Future[str | None]], service: str
) -> None:
    problems = runs[service].result()
    if problems:
        pytest.fail(problems, pytrace=False)
