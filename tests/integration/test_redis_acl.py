"""The Redis users cluster.yaml makes, on a real Redis of this test's own: Realm's
store works as `realm` and reaches nothing else, Ray's GCS works as `ray-gcs`
(fault-tolerance state in Redis) and reaches nothing of Realm's, and nobody
gets in without a user.

Before: one password (`requirepass`) opened every key and every command, and it
was on gcs_server's command line."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from actors.runtime.store import RedisStore
from serve_app import free_port
from tests.unit.test_cluster_yaml import PASSWORD_FILE, load_config

GCS_PASSWORD_FILE = "~/.realm/redis_gcs_password"


@dataclass
class AclRedis:
    port: int
    gcs_password: str
    realm_password: str

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


def user_lines(gcs_password: str, realm_password: str) -> list[str]:
    """cluster.yaml's `user ...` lines for the head's Redis, passwords filled in."""
    setup = "\n".join(load_config()["head_setup_commands"])
    lines = re.findall(r"[\"'](user [^\"']*)[\"']", setup)
    assert len(lines) == 3, lines
    return [
        line.replace(f"$(cat {GCS_PASSWORD_FILE})", gcs_password).replace(
            f"$(cat {PASSWORD_FILE})", realm_password
        )
        for line in lines
    ]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make test needs it; see .ci/run)")
    server = AclRedis(free_port(), secrets.token_hex(16), secrets.token_hex(16))
    directory = tmp_path_factory.mktemp("acl-redis")
    config = directory / "redis.conf"
    lines = [f"port {server.port}", "bind 127.0.0.1", 'save ""', f"dir {directory}"]
    config.write_text("\n".join([*lines, *user_lines(server.gcs_password, server.realm_password)]))
    process = subprocess.Popen(
        [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client = redis.Redis(port=server.port, username="realm", password=server.realm_password)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the test's Redis did not start"
                time.sleep(0.1)
        yield server
    finally:
        process.kill()
        process.wait()


def test_nobody_gets_in_without_a_user(acl_redis):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis.port).ping()
    with pytest.raises(redis.AuthenticationError):  # a password alone names no user
        redis.Redis(port=acl_redis.port, password=acl_redis.realm_password).ping()


async def test_realms_store_works_as_realm_and_reaches_nothing_else(acl_redis):
    url = acl_redis.url("realm", acl_redis.realm_password)
    store = RedisStore(url, prefix="realm")
    try:
        assert await store.append("acl", 0, [b"a", b"b"]) == 2
        await store.write_snapshot("acl", 1, b"state")
        assert await store.read_snapshot("acl") == (1, b"state")
        assert await store.read("acl") == [(2, b"b")]
        assert await store.incr("acl-counter") == 1
        await store.delete_stream("acl")
    finally:
        await store.close()
    realm = redis.Redis.from_url(url)
    for refused in (
        lambda: realm.hgetall("RAYdefault@KV"),  # Ray's GCS state
        lambda: realm.set("other:key", 1),
        lambda: realm.flushall(),
        lambda: realm.config_get("*"),
        lambda: realm.keys("*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()


def test_rays_gcs_keeps_its_state_as_ray_gcs_and_reaches_nothing_of_realms(acl_redis, tmp_path):
    # A Ray head with GCS fault tolerance in this Redis, logged in as ray-gcs,
    # runs a detached actor (in a process of its own, with its own Ray).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE")}
    env["RAY_REDIS_ADDRESS"] = f"127.0.0.1:{acl_redis.port}"
    script = (
        "import ray\n"
        "ray.init(address='local', include_dashboard=False, num_cpus=1,\n"
        "         object_store_memory=80 * 1024 * 1024,\n"
        f"         _redis_username='ray-gcs', _redis_password={acl_redis.gcs_password!r})\n"
        "@ray.remote(num_cpus=0)\n"
        "class Echo:\n"
        "    def echo(self, x):\n"
        "        return x\n"
        "echo = Echo.options(name='acl-echo', namespace='acl', lifetime='detached').remote()\n"
        "print('answer', ray.get(echo.echo.remote(42)), flush=True)\n"
        "ray.kill(echo)\n"
        "ray.shutdown()\n"
    )
    head = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = head.communicate(timeout=240)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    assert head.returncode == 0 and "answer 42" in output, output[-3000:]

    gcs = redis.Redis.from_url(acl_redis.url("ray-gcs", acl_redis.gcs_password))
    assert any(key.startswith(b"RAY") for key in gcs.scan_iter(count=1000))  # its state is there
    realm = redis.Redis.from_url(acl_redis.url("realm", acl_redis.realm_password))
    realm.set("realm:acl-probe", b"secret")
    for refused in (
        lambda: gcs.get("realm:acl-probe"),
        lambda: gcs.flushall(),
        lambda: gcs.config_set("requirepass", "x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
