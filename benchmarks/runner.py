"""A server process in a process group of its own, waited for until it says it is
ready, and ended with every process of its tree: ``python serve_app.py`` started as
``make run`` starts it (``serve_app``), which the soak (``soak.py``) and the front
door's tests (``tests/integration/test_front_door.py``) drive, and the HTTP overhead
benchmark's servers. It imports no Ray: a runner brings up a Ray of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
#: How long a runner may take to deploy, on a machine others load too.
READY_WITHIN_S = 240.0
#: Lines Ray forwards from its processes' logs begin so (``(raylet) ...``,
#: ``[2026-...]``, colour codes); the runner's own lines do not.
FORWARDED = ("(", "[", "\x1b[")


def make_run_env(port: int, data_dir: Path, name: str, **extra: str) -> dict[str, str]:
    """``make run``'s environment: none of this process's ``RAY_``/``REALM_`` settings
    (nor a trusted forwarding header), the Makefile's loopback pin, then ``port``, a
    data dir, and a namespace and store prefix ``<name>-<random>`` of its own."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_", "REALM_", "FORWARDED_"))
    }
    tag = f"{name}-{uuid.uuid4().hex[:10]}"
    return inherited | {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # as the Makefile exports it
        "REALM_HTTP_PORT": str(port),
        "REALM_DATA_DIR": str(data_dir),
        "REALM_NAMESPACE": tag,
        "REALM_STORE_PREFIX": tag,
        **extra,
    }


class Runner:
    """``command`` with ``env``, ready once a line of its output starts with ``ready``;
    its own lines (not the logs Ray forwards) in ``lines``, and all of its output in
    ``log_path`` when one is given."""

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        ready: str = "Ready.",
        log_path: Path | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.ready_line = ready
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.known: dict[int, psutil.Process] = {}
        self.process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(self.log_path.open("w")) if self.log_path else None
            for line in self.process.stdout:
                if log is not None:
                    log.write(line)
                    log.flush()
                if not line.lstrip().startswith(FORWARDED):
                    self.lines.append(line.rstrip("\n"))
                if line.startswith(self.ready_line):
                    self.ready.set()

    @property
    def output(self) -> str:
        """What the runner itself has said so far."""
        return "\n".join(self.lines)

    def said(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def wait_ready(self, within_s: float = READY_WITHIN_S) -> None:
        """Until the runner says ``Ready.``; ``RuntimeError`` if it exits first,
        ``TimeoutError`` after ``within_s``."""
        deadline = time.monotonic() + within_s
        while not self.ready.wait(1.0):
            if self.process.poll() is not None:
                raise RuntimeError(f"the runner exited:\n{self.said()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the runner is not ready:\n{self.said()}")
        self.tree()

    def tree(self) -> list[psutil.Process]:
        """The runner's processes now (remembered, so all are ended at the end)."""
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            processes = []
        for process in processes:
            self.known.setdefault(process.pid, process)
        return processes

    def stop(self, graceful_s: float = 0.0) -> None:
        """Kill the runner's process group and every process of its tree seen; with
        ``graceful_s``, SIGTERM first and up to that long for it to end (a graceful
        stop of ``serve_app`` waits for Serve's controller, 30 s or more)."""
        self.tree()
        if graceful_s and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(graceful_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        for process in self.known.values():
            with contextlib.suppress(psutil.Error):
                if process.is_running():
                    process.kill()


def serve_app_command(args: Sequence[str] = ()) -> list[str]:
    """``python serve_app.py *args``: ``make run``'s command."""
    return [sys.executable, "serve_app.py", *args]


def run_serve_app(args: Sequence[str], env: dict[str, str], log_path: Path | None = None) -> Runner:
    """``python serve_app.py *args``, as ``make run`` starts it (``env``: see
    ``make_run_env``)."""
    return Runner(serve_app_command(args), env, log_path=log_path)


__all__ = [
    "READY_WITHIN_S",
    "ROOT",
    "Runner",
    "make_run_env",
    "run_serve_app",
    "serve_app_command",
]
