"""Make or reset the admin account: ``python -m actors.auth.bootstrap``.

Registering ``REALM_AUTH_ADMIN_USERNAME`` is refused: the admin account is
made only by the operator, in one of three ways.

- ``REALM_AUTH_ADMIN_PASSWORD_FILE``: each auth replica, as it starts, makes
  the admin from the file's first line (when it is missing, or the account of
  that name lacks the role).
- ``REALM_AUTH_ADMIN_PASSWORD_HASH``: the same from an argon2id hash, so the
  password itself appears nowhere. ``--print-hash`` makes one::

      python -m actors.auth.bootstrap --print-hash < password.txt

- This command, against a running deployment (same ``REALM_*`` settings)::

      python -m actors.auth.bootstrap --username root --password-file pw.txt [--reset]

  It joins the Ray cluster (``--address``, default ``auto``; with token
  authentication, ``RAY_AUTH_MODE=token`` and the cluster's token), and makes
  the admin. An account that is already admin keeps its password unless
  ``--reset``. Whenever the account changes, its sessions end.

The password comes from ``--password-file``, else standard input when it is
not a terminal, else a prompt (asked twice); never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from argon2 import PasswordHasher

from actors.auth.client import AuthClient, read_password_file
from actors.auth.settings import AuthSettings
from actors.runtime.errors import RealmError
from actors.runtime.settings import Settings


def read_password(password_file: str | None) -> str:
    """The password from a file, standard input or a prompt (see the module)."""
    if password_file:
        return read_password_file(password_file)
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("admin password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("the passwords differ")
    return first


def password_hash(settings: Settings, password: str) -> str:
    """An argon2id hash of ``password`` at the deployment's cost settings."""
    config = AuthSettings.of(settings)
    if len(password) < config.min_password_chars:
        raise SystemExit(f"a password has at least {config.min_password_chars} characters")
    hasher = PasswordHasher(
        time_cost=config.argon2_time_cost,
        memory_cost=config.argon2_memory_kib,
        parallelism=config.argon2_parallelism,
    )
    return hasher.hash(password)


async def make_admin(
    settings: Settings, username: str, password: str, *, reset: bool = False
) -> dict[str, Any]:
    """Make ``username`` the admin of the deployment ``settings`` describe
    (Ray must be connected). Answers ``{"user", "changed"}``."""
    client = AuthClient(settings)
    try:
        await client.start()
        return await client.ensure_admin(username, password=password, reset=reset)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--username", help="default: REALM_AUTH_ADMIN_USERNAME")
    parser.add_argument("--password-file", help="a file whose first line is the password")
    parser.add_argument("--reset", action="store_true", help="set the password of an admin too")
    parser.add_argument("--address", default="auto", help="the Ray cluster (default: auto)")
    parser.add_argument(
        "--print-hash",
        action="store_true",
        help="print an argon2id hash for REALM_AUTH_ADMIN_PASSWORD_HASH and exit",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    password = read_password(args.password_file)
    if args.print_hash:
        print(password_hash(settings, password))
        return 0
    username = args.username or AuthSettings.of(settings).admin_username
    if not username:
        parser.error("name the admin: --username or REALM_AUTH_ADMIN_USERNAME")

    import ray

    ray.init(address=args.address, namespace=settings.namespace, include_dashboard=False)
    try:
        result = asyncio.run(make_admin(settings, username, password, reset=args.reset))
    except RealmError as error:
        print(f"refused: {error.message} {error.details or ''}".rstrip(), file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    user = result["user"]
    what = "made or updated" if result["changed"] else "already the admin (unchanged)"
    print(f"{user['username']} ({user['id']}): {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
