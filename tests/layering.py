"""The layering rules of docs/architecture.md (and DESIGN.md's layout), checked
by reading imports with ``ast``: nothing is imported or run.

Rules, for a repository root:

a. nothing under ``actors/`` imports ``apps``, ``serve_app``, ``benchmarks``
   or ``tests``: the actors are the bottom layer;
b. ``actors/runtime/`` imports nothing from ``actors`` outside
   ``actors.runtime`` (no service, no other top-level module of ``actors``);
c. a module of service A (``actors/A/...``, ``apps/A.py``, ``apps/A/...``)
   sees another service B only through ``actors.B.client``; a module that
   belongs to no service (shared ``apps`` modules such as ``apps/common.py``,
   top-level ``actors`` modules) takes only ``actors.runtime`` and services'
   ``client`` modules from ``actors``;
d. ``tests/unit`` never starts Ray: no call to ``ray.init``,
   ``ray.cluster_utils.Cluster``, ``serve.run``, ``serve.start`` or
   ``ray.get_actor``.

The services are the packages under ``actors/`` other than ``runtime``, so a
new one is covered without touching this file. ``check(root)`` answers every
violation as ``"<file>:<line> imports <module>: <rule>"`` (``calls`` for d).
Run it as ``python -m tests.layering`` to print them.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: What is read: directories (recursively) and single files, relative to the root.
SOURCES = ("actors", "apps", "serve_app.py", "benchmarks", "tests/unit")
#: Packages under ``actors/`` that are not services.
NOT_SERVICES = frozenset({"runtime", "__pycache__"})
#: Layers above the actors, which nothing under ``actors/`` may import (rule a).
ABOVE_ACTORS = ("apps", "serve_app", "benchmarks", "tests")
#: Calls that start or join Ray, by their full dotted name (rule d).
STARTS_RAY = frozenset(
    {
        "ray.init",
        "ray.cluster_utils.Cluster",
        "ray.serve.run",
        "ray.serve.start",
        "ray.get_actor",
    }
)


@dataclass(frozen=True)
class Import:
    line: int
    module: str | None  # dotted, absolute; None for a relative import above the top package


def services(root: Path) -> frozenset[str]:
    actors = root / "actors"
    if not actors.is_dir():
        return frozenset()
    return frozenset(
        p.name
        for p in actors.iterdir()
        if p.is_dir() and p.name not in NOT_SERVICES and not p.name.startswith(".")
    )


def source_files(root: Path) -> Iterator[Path]:
    for source in SOURCES:
        path = root / source
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(relative: Path) -> str:
    """``actors/cache/shard.py`` -> ``actors.cache.shard``; a package's
    ``__init__.py`` is the package."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports(tree: ast.AST, root: Path, relative: Path) -> Iterator[Import]:
    """Every import in the file, module-level or not, as absolute module names.
    ``from p import n`` imports ``p.n`` when that is a module of the tree
    (``from actors.cache import client``), else ``p``."""
    this = module_name(relative)
    package = this if relative.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                up = node.level - 1
                if up >= len(parts):
                    yield Import(node.lineno, None)
                    continue
                head = parts[: len(parts) - up]
                base = ".".join([*head, node.module] if node.module else head)
            else:
                base = node.module or ""
            modules: dict[str, None] = {}  # in order, once each
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                named = alias.name != "*" and is_module(root, candidate)
                modules[candidate if named else base] = None
            for module in modules:
                yield Import(node.lineno, module)


def owner(relative: Path, all_services: frozenset[str]) -> str | None:
    """The service a file belongs to, or None for a shared module."""
    parts = relative.parts
    if parts[0] == "actors" and len(parts) > 2 and parts[1] in all_services:
        return parts[1]
    if parts[0] == "apps" and len(parts) > 1:
        name = parts[1].removesuffix(".py") if len(parts) == 2 else parts[1]
        return name if name in all_services else None
    return None


def client_of(module: str, all_services: frozenset[str]) -> str | None:
    """The service whose package ``module`` is in, if any."""
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "actors" and parts[1] in all_services:
        return parts[1]
    return None


def import_violations(relative: Path, found: Import, all_services: frozenset[str]) -> Iterator[str]:
    module, parts = found.module, relative.parts
    if module is None:
        yield f"{relative.as_posix()}:{found.line} imports beyond the top package"
        return
    where = f"{relative.as_posix()}:{found.line} imports {module}"
    if parts[0] == "actors":
        for above in ABOVE_ACTORS:
            if within(module, above):
                yield f"{where}: actors/ imports no {'/'.join(ABOVE_ACTORS)}"
    if parts[0] not in ("actors", "apps") or not within(module, "actors"):
        return
    target = client_of(module, all_services)
    if parts[:2] == ("actors", "runtime"):
        if not within(module, "actors.runtime"):
            if target is not None:
                yield f"{where}: actors/runtime imports no service"
            else:
                yield f"{where}: actors/runtime imports nothing from actors outside actors.runtime"
        return
    mine = owner(relative, all_services)
    if target is not None and target != mine and not within(module, f"actors.{target}.client"):
        who = f"service {mine}" if mine else "a module of no service"
        yield f"{where}: {who} sees service {target} only through actors.{target}.client"
    elif target is None and mine is None and not within(module, "actors.runtime"):
        yield f"{where}: a module of no service takes only actors.runtime and clients from actors"


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def ray_starts(tree: ast.AST, relative: Path) -> Iterator[tuple[int, str]]:
    """Calls that start Ray, their names resolved through the file's imports
    (``import ray as r``, ``from ray import serve``, ``from ray.cluster_utils
    import Cluster``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name is None:
            continue
        head, dot, rest = name.partition(".")
        full = names.get(head, head) + dot + rest
        if full in STARTS_RAY:
            where = f"{relative.as_posix()}:{node.lineno}"
            yield node.lineno, f"{where} calls {full}: tests/unit never starts Ray"


def check(root: Path) -> list[str]:
    """Every layering violation in the repository at ``root``."""
    root = Path(root)
    all_services = services(root)
    found: list[str] = []
    for path in source_files(root):
        relative = path.relative_to(root)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(relative))
        except SyntaxError as error:
            found.append(f"{relative.as_posix()}:{error.lineno} does not parse: {error.msg}")
            continue
        here = [
            (item.line, message)
            for item in imports(tree, root, relative)
            for message in import_violations(relative, item, all_services)
        ]
        if relative.parts[:2] == ("tests", "unit"):
            here.extend(ray_starts(tree, relative))
        found.extend(message for _, message in sorted(here, key=lambda pair: pair[0]))
    return found


if __name__ == "__main__":
    violations = check(Path(__file__).resolve().parent.parent)
    print("\n".join(violations) or "no layering violation")
    sys.exit(1 if violations else 0)
