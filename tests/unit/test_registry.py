"""Every list of services is the registry's: the Serve applications, the settings
sections, the benchmark run. (The README table and the generated docs are checked
in test_docs.py and test_settings.py.)"""

from __future__ import annotations

import ast
import importlib

from actors.runtime.registry import SERVICES, section_classes
from benchmarks import run_all
from tests.conftest import ROOT

#: Modules under benchmarks/ that support the others and measure nothing themselves.
SUPPORT = {"harness", "run_all", "queue_celery", "compare_revisions"}


def test_every_registered_service_has_its_package_app_and_settings_section():
    names = [service.name for service in SERVICES]
    assert len(set(names)) == len(names)
    assert len({service.prefix for service in SERVICES}) == len(SERVICES)
    for service in SERVICES:
        assert service.prefix == f"/{service.name}", "a service's prefix is its name"
        assert (ROOT / "actors" / service.name / "client.py").exists(), service.name
        assert callable(importlib.import_module(f"apps.{service.name}").build), service.name
    assert list(section_classes()) == names


def runs_as_a_script(path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body
    )


def test_make_bench_runs_every_benchmark_and_one_per_service_that_has_one():
    scripts = {
        f"benchmarks.{path.stem}"
        for path in (ROOT / "benchmarks").glob("*.py")
        if path.stem not in SUPPORT and runs_as_a_script(path)
    }
    listed = run_all.benchmarks()
    assert set(listed) | set(run_all.SEPARATE) == scripts, (
        "a benchmark is named after its service, or is a platform one, or runs on its own"
    )
    assert not set(listed) & set(run_all.SEPARATE)
    assert listed[: len(run_all.PLATFORM)] == run_all.PLATFORM
    services = [m.split(".")[1] for m in listed[len(run_all.PLATFORM) :]]
    assert services == [s.name for s in SERVICES if s.name in services]  # the registry's order
