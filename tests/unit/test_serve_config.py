"""serve_config.yaml (what `serve deploy` reads on a cluster) stays in sync with serve_app."""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

import serve_app
from actors.runtime.settings import Settings
from tests.conftest import ROOT


def test_the_committed_config_is_what_serve_app_writes():
    committed = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert committed == serve_app.serve_config(Settings()), "run `make docs`"


def test_the_config_is_valid_for_serve():
    committed = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(committed)
    assert [app.name for app in schema.applications] == [s.name for s in serve_app.SERVICES]


def test_every_service_has_a_unique_prefix_and_an_app_module_with_a_builder():
    prefixes = [service.prefix for service in serve_app.SERVICES]
    assert len(set(prefixes)) == len(prefixes)
    for service in serve_app.SERVICES:
        module = importlib.import_module(f"apps.{service.name}")
        assert callable(module.build), service.name


def test_the_serve_deploy_builder_builds_the_named_service_and_refuses_others():
    built = serve_app.app({"service": "cache", "cache_shards": 3})
    assert built._bound_deployment.name == "CacheIngress"
    assert built._bound_deployment.init_args[0].sections["cache"].shards == 3
    for args in ({}, {"service": "nope"}):
        with pytest.raises(ValueError, match=r"args\.service"):
            serve_app.app(args)


def test_write_config_writes_the_same_file(tmp_path):
    out = tmp_path / "config.yaml"
    assert serve_app.main(["--write-config", str(out)]) == 0
    assert out.read_text() == (ROOT / "serve_config.yaml").read_text()


def test_an_haproxy_that_outlived_serve_is_stopped_and_no_other_process(tmp_path):
    node = "1aa256882a6bf43aec6156c3963c9964f24b24295627b63708606866"
    haproxy = tmp_path / "haproxy"
    haproxy.symlink_to(sys.executable)  # a stand-in whose argv[0] names HAProxy, as Serve's

    def start(binary: str, config_dir: str) -> subprocess.Popen[bytes]:
        wait = "import time; time.sleep(60)"
        return subprocess.Popen([binary, "-c", wait, f"{config_dir}/haproxy.cfg"])

    ours = start(str(haproxy), f"/tmp/haproxy-serve/{node}")
    other_node = start(str(haproxy), "/tmp/haproxy-serve/another")
    not_haproxy = start(sys.executable, f"/tmp/haproxy-serve/{node}")
    try:
        assert serve_app.stop_haproxy_of(node) == [ours.pid]
        assert ours.wait(timeout=10) == -signal.SIGTERM
        assert other_node.poll() is None and not_haproxy.poll() is None
    finally:
        for process in (ours, other_node, not_haproxy):
            process.kill()
            process.wait()
