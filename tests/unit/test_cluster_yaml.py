"""cluster.yaml: valid for Ray's cluster launcher, and wired the way Realm needs.

Nothing here contacts the addresses in the file and nothing starts Ray: the
schema is read from the installed wheel, found without importing ``ray``.
Every check is a plain function so that ``test_checks_catch_broken_configs``
can show each one failing on a config broken in the way it guards against.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

CLUSTER_YAML = ROOT / "cluster.yaml"
REDIS_PORT = 6379
RAY_DEFAULT_PORT = 6379  # what `ray start --head` uses without --port
PASSWORD_FILE = "~/.realm/redis_password"
#: Ray GCS's own Redis password, made on the head (never copied).
GCS_PASSWORD_FILE = "~/.realm/redis_gcs_password"
TOKEN_FILE = "~/.ray/auth_token"

Config = dict[str, Any]


def ray_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("ray")  # locates the package; runs none of it
    assert spec is not None and spec.origin is not None, "ray is not installed"
    path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def load_config() -> Config:
    return yaml.safe_load(CLUSTER_YAML.read_text())


# --- reading shell commands ---------------------------------------------------


@dataclass
class Simple:
    """One simple command: its environment assignments and its arguments."""

    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    def is_(self, *words: str) -> bool:
        """Whether this runs ``words`` (the program compared by file name)."""
        head = self.argv[: len(words)]
        return len(head) == len(words) and [Path(head[0]).name, *head[1:]] == list(words)

    def option(self, name: str) -> str | None:
        """The value of ``--name=value`` or ``--name value``; None when absent."""
        for i, arg in enumerate(self.argv):
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
            if arg == name and i + 1 < len(self.argv):
                return self.argv[i + 1]
        return None


_SUBST = re.compile(r"\$\([^()]*\)")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = {";", "&&", "||", "|", "&"}


def simple_commands(line: str) -> list[Simple]:
    """Split a shell line on ; && || | & into simple commands.

    ``$(...)`` is kept verbatim (as one word, quotes removed around it), which
    is enough for the commands in cluster.yaml; ``export A=B`` carries over to
    the commands after it on the same line.
    """
    found: dict[str, str] = {}

    def hide(match: re.Match[str]) -> str:
        key = f"@@SUBST{len(found)}@@"
        found[key] = match.group(0)
        return key

    def unhide(word: str) -> str:
        for key, text in found.items():
            word = word.replace(key, text)
        return word

    lexer = shlex.shlex(_SUBST.sub(hide, line), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out: list[Simple] = []
    exported: dict[str, str] = {}
    current = Simple()
    for token in (*lexer, ";"):
        if token in _OPERATORS:
            if current.argv and current.argv[0] == "export":
                exported.update(dict(a.split("=", 1) for a in current.argv[1:] if "=" in a))
            elif current.argv:
                current.env = {**exported, **current.env}
                out.append(current)
            current = Simple()
            continue
        word = unhide(token)
        if not current.argv and _ASSIGN.match(word):
            name, value = word.split("=", 1)
            current.env[name] = value
        else:
            current.argv.append(word)
    return out


def commands(config: Config, section: str) -> Iterator[Simple]:
    for line in config.get(section, []):
        yield from simple_commands(line)


def ray_starts(config: Config, section: str) -> list[Simple]:
    return [c for c in commands(config, section) if c.is_("ray", "start")]


def one_ray_start(config: Config, section: str) -> Simple:
    starts = ray_starts(config, section)
    assert len(starts) == 1, f"{section}: expected one `ray start`, found {len(starts)}"
    return starts[0]


def head_ip(config: Config) -> str:
    return config["provider"]["head_ip"]


def head_ray_port(config: Config) -> int:
    port = one_ray_start(config, "head_start_ray_commands").option("--port")
    return RAY_DEFAULT_PORT if port is None else int(port)


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"not host:port: {address!r}"
    return host, int(port)


# --- the checks ---------------------------------------------------------------


def check_schema(config: Config) -> None:
    try:
        jsonschema.validate(config, ray_schema())
    except jsonschema.ValidationError as error:
        raise AssertionError(f"cluster.yaml fails Ray's schema: {error.message}") from error


def check_local_provider(config: Config) -> None:
    provider = config["provider"]
    assert provider["type"] == "local", f"provider type {provider['type']!r}, not local"
    assert provider.get("head_ip"), "the local provider needs head_ip"
    assert provider.get("worker_ips"), "the local provider needs worker_ips"
    assert provider["head_ip"] not in provider["worker_ips"]
    # `ray up` aborts on these for the local provider (it builds its own node type).
    for key in ("available_node_types", "head_node", "worker_nodes"):
        assert key not in config, f"{key} is not supported with provider type local"


def check_ray_avoids_redis_port(config: Config) -> None:
    starts = ray_starts(config, "head_start_ray_commands") + ray_starts(
        config, "worker_start_ray_commands"
    )
    assert starts, "no `ray start` at all"
    assert head_ray_port(config) != REDIS_PORT, "the head's Ray port is Redis's"
    for start in starts:
        for arg in start.argv:
            if arg.startswith("--") and "port" in arg and "=" in arg:
                assert arg.split("=", 1)[1] != str(REDIS_PORT), f"ray start {arg}"
        address = start.option("--address")
        if address is not None:
            assert split_host_port(address)[1] != REDIS_PORT, f"ray start --address={address}"


def check_gcs_in_redis(config: Config) -> None:
    start = one_ray_start(config, "head_start_ray_commands")
    address = start.env.get("RAY_REDIS_ADDRESS")
    assert address == f"{head_ip(config)}:{REDIS_PORT}", f"RAY_REDIS_ADDRESS={address}"
    assert start.option("--redis-username") == "ray-gcs", "the GCS logs in as its own user"
    password = start.option("--redis-password")
    assert password == f"$(cat {GCS_PASSWORD_FILE})", f"--redis-password={password}"


def check_store_url(config: Config) -> None:
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        for start in ray_starts(config, section):
            url = start.env.get("REALM_STORE_URL")
            assert url, f"{section}: ray start without REALM_STORE_URL"
            # The password is read from its file when the command runs.
            parts = urlsplit(url.replace(f"$(cat {PASSWORD_FILE})", "PASSWORD"))
            assert parts.scheme == "redis", url
            assert parts.hostname == head_ip(config), url
            assert parts.port == REDIS_PORT, url
            assert parts.path == "/0", url
            assert parts.password == "PASSWORD", "store URL without the password file's password"


def check_workers_join_head(config: Config) -> None:
    starts = ray_starts(config, "worker_start_ray_commands")
    assert starts, "workers never start Ray"
    for start in starts:
        address = start.option("--address")
        assert address == f"{head_ip(config)}:{head_ray_port(config)}", f"--address={address}"


def check_token_auth(config: Config) -> None:
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        for start in ray_starts(config, section):
            assert start.env.get("RAY_AUTH_MODE") == "token", f"{section}: token auth off"
    mounts = config.get("file_mounts", {})
    assert mounts.get(TOKEN_FILE, "").endswith(".ray/auth_token"), "token not copied to nodes"
    assert PASSWORD_FILE in mounts, "Redis password not copied to nodes"


def check_workers_at_default_priority(config: Config) -> None:
    """Realm's actors and replicas run at nice 0 on every node, not at Ray's 15."""
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        for start in ray_starts(config, section):
            level = start.env.get("RAY_worker_niceness")
            assert level == "0", f"{section}: RAY_worker_niceness={level}"


def check_deploys_last(config: Config) -> None:
    last = simple_commands(config["head_start_ray_commands"][-1])
    assert [c.argv for c in last[:1]] == [["cd", "~/realm"]], "deploy from the synced project"
    deploys = [c for c in last if c.is_("serve", "deploy")]
    assert deploys, "the last head command does not run `serve deploy`"
    assert deploys[-1].argv[2:] == ["serve_config.yaml"], deploys[-1].argv
    assert deploys[-1].env.get("RAY_AUTH_MODE") == "token"


def check_project_installed(config: Config) -> None:
    assert config.get("file_mounts", {}).get("~/realm") == ".", "the project is not synced"
    for line in config.get("setup_commands", []):
        steps = simple_commands(line)
        if [c.argv for c in steps[:1]] == [["cd", "~/realm"]] and any(
            Path(c.argv[0]).name == "pip" and c.argv[1:] == ["install", "-e", "."] for c in steps
        ):
            return
    raise AssertionError("setup_commands never run `cd ~/realm && pip install -e .`")


def check_redis_on_head(config: Config) -> None:
    setup = "\n".join(config.get("head_setup_commands", []))
    assert re.search(r"apt-get install\b.*\bredis-server\b", setup), "redis-server not installed"
    assert f"'bind {head_ip(config)} " in setup, "Redis not bound to the head's address"
    assert "'appendonly yes'" in setup, "Redis without the append-only log is not durable"
    assert "'user default off'" in setup, "Redis with a default user"
    assert f"user realm on >$(cat {PASSWORD_FILE}) ~realm:*" in setup, "no store user"
    assert "systemctl restart redis-server" in setup
    for section in ("setup_commands", "worker_setup_commands", "initialization_commands"):
        assert "redis-server" not in "\n".join(config.get(section, [])), section


def check_one_head_address(config: Config) -> None:
    """Commands name no machine but the head (catches a half-done search and replace)."""
    text = "\n".join(
        line
        for section in (
            "initialization_commands",
            "setup_commands",
            "head_setup_commands",
            "worker_setup_commands",
            "head_start_ray_commands",
            "worker_start_ray_commands",
        )
        for line in config.get(section, [])
    )
    found = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    others = found - {head_ip(config), "127.0.0.1"}
    assert not others, f"addresses other than the head: {sorted(others)}"


CHECKS: list[Callable[[Config], None]] = [
    check_schema,
    check_local_provider,
    check_ray_avoids_redis_port,
    check_gcs_in_redis,
    check_store_url,
    check_workers_join_head,
    check_token_auth,
    check_workers_at_default_priority,
    check_deploys_last,
    check_project_installed,
    check_redis_on_head,
    check_one_head_address,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_cluster_yaml(check: Callable[[Config], None]) -> None:
    check(load_config())


# --- each check fails on the mistake it guards against ------------------------


def replace_in(section: str, old: str, new: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        lines = config[section]
        assert any(old in line for line in lines), f"{old!r} not in {section}"
        config[section] = [line.replace(old, new) for line in lines]

    return mutate


def setter(*path: str, value: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def deleter(*path: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def appender(section: str, line: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[section] = [*config[section], line]

    return mutate


HEAD, WORKER = "head_start_ray_commands", "worker_start_ray_commands"
BROKEN: dict[str, tuple[Callable[[Config], None], Callable[[Config], None]]] = {
    "unknown top-level key": (setter("min_workers", value=2), check_schema),
    "cluster_name missing": (deleter("cluster_name"), check_schema),
    "cloud provider": (setter("provider", "type", value="aws"), check_local_provider),
    "node types on local": (
        setter("available_node_types", value={}),
        check_local_provider,
    ),
    "head on 6379": (replace_in(HEAD, "--port=6380", "--port=6379"), check_ray_avoids_redis_port),
    "head on the default port": (replace_in(HEAD, " --port=6380", ""), check_ray_avoids_redis_port),
    "dashboard on 6379": (
        replace_in(HEAD, "--head", "--head --dashboard-port=6379"),
        check_ray_avoids_redis_port,
    ),
    "workers dial Redis": (
        replace_in(WORKER, "--address=192.0.2.10:6380", "--address=192.0.2.10:6379"),
        check_ray_avoids_redis_port,
    ),
    "GCS without Redis": (
        replace_in(HEAD, "RAY_REDIS_ADDRESS=192.0.2.10:6379 ", ""),
        check_gcs_in_redis,
    ),
    "GCS on another Redis": (
        replace_in(HEAD, "RAY_REDIS_ADDRESS=192.0.2.10:6379", "RAY_REDIS_ADDRESS=127.0.0.1:6379"),
        check_gcs_in_redis,
    ),
    "GCS without the password": (
        replace_in(HEAD, '--redis-password="$(cat ~/.realm/redis_gcs_password)"', ""),
        check_gcs_in_redis,
    ),
    "worker store on its own host": (
        replace_in(WORKER, "@192.0.2.10:6379/0", "@127.0.0.1:6379/0"),
        check_store_url,
    ),
    "store on Ray's port": (
        replace_in(HEAD, "@192.0.2.10:6379/0", "@192.0.2.10:6380/0"),
        check_store_url,
    ),
    "store URL missing on workers": (
        replace_in(WORKER, 'REALM_STORE_URL="redis://', 'REALM_STORE="redis://'),
        check_store_url,
    ),
    "store without password": (
        replace_in(WORKER, "redis://realm:$(cat ~/.realm/redis_password)@", "redis://"),
        check_store_url,
    ),
    "workers join another port": (
        replace_in(WORKER, "192.0.2.10:6380", "192.0.2.10:6381"),
        check_workers_join_head,
    ),
    "workers join another host": (
        replace_in(WORKER, "--address=192.0.2.10", "--address=192.0.2.99"),
        check_workers_join_head,
    ),
    "token auth off on workers": (
        replace_in(WORKER, "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled"),
        check_token_auth,
    ),
    "token not copied": (deleter("file_mounts", TOKEN_FILE), check_token_auth),
    "password not copied": (deleter("file_mounts", PASSWORD_FILE), check_token_auth),
    "workers at Ray's nice 15": (
        replace_in(WORKER, "RAY_worker_niceness=0 ", ""),
        check_workers_at_default_priority,
    ),
    "head workers below the rest": (
        replace_in(HEAD, "RAY_worker_niceness=0", "RAY_worker_niceness=10"),
        check_workers_at_default_priority,
    ),
    "deploy not last": (appender(HEAD, "echo done"), check_deploys_last),
    "deploy another file": (
        replace_in(HEAD, "serve deploy serve_config.yaml", "serve deploy other.yaml"),
        check_deploys_last,
    ),
    "deploy outside the project": (replace_in(HEAD, "cd ~/realm && ", ""), check_deploys_last),
    "project not installed": (setter("setup_commands", value=[]), check_project_installed),
    "project not synced": (deleter("file_mounts", "~/realm"), check_project_installed),
    "Redis not durable": (
        replace_in("head_setup_commands", "'appendonly yes'", "'appendonly no'"),
        check_redis_on_head,
    ),
    "Redis on loopback only": (
        replace_in("head_setup_commands", "'bind 192.0.2.10 ", "'bind "),
        check_redis_on_head,
    ),
    "Redis with a default user": (
        replace_in("head_setup_commands", "'user default off'", ""),
        check_redis_on_head,
    ),
    "half-replaced head address": (
        setter("provider", "head_ip", value="198.51.100.10"),
        check_one_head_address,
    ),
}


@pytest.mark.parametrize("name", BROKEN)
def test_checks_catch_broken_configs(name: str) -> None:
    mutate, check = BROKEN[name]
    config = copy.deepcopy(load_config())
    mutate(config)
    with pytest.raises(AssertionError):
        check(config)
