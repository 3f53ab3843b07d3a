"""The layering rules (tests/layering.py) hold in this repository, and each one
catches the import or call it forbids, shown on small trees built in tmp_path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.layering import check

#: A small repository that breaks no rule: a runtime, two services with their
#: clients, their fronts and shared fronts, a unit test, a benchmark.
CLEAN = {
    "actors/__init__.py": "",
    "actors/helpers.py": "",
    "actors/runtime/__init__.py": "",
    "actors/runtime/store.py": "",
    "actors/runtime/x.py": """\
        from actors.runtime import store
        from actors.runtime.store import Store
        from . import store as again
        from .store import Store as Again
        import actors.runtime.store
        import json
        """,
    "actors/foo/__init__.py": "",
    "actors/foo/client.py": "from actors.foo.core import Core\n",
    "actors/foo/core.py": """\
        from actors.runtime.store import Store
        from actors.bar.client import BarClient
        from actors.bar import client
        import actors.bar.client as bar
        from actors.foo.client import FooClient
        from . import client as mine
        from .client import FooClient as Mine
        from ..bar.client import BarClient as Again
        from ..runtime import store
        """,
    "actors/bar/__init__.py": "",
    "actors/bar/client.py": "",
    "actors/bar/core.py": "from actors.foo.client import FooClient\n",
    "apps/__init__.py": "",
    "apps/common.py": """\
        from actors.runtime import store
        from actors.foo.client import FooClient
        from actors.bar import client
        from apps.errors import envelope
        """,
    "apps/errors.py": "",
    "apps/foo.py": """\
        from actors.foo.core import Core
        from actors.foo import core
        from actors.bar.client import BarClient
        from actors.runtime.store import Store
        from apps.common import service_app
        """,
    "serve_app.py": "from apps import foo\nfrom actors.foo.core import Core\n",
    "benchmarks/__init__.py": "",
    "benchmarks/b.py": "from actors.bar.core import x\nimport serve_app\n",
    "tests/__init__.py": "",
    "tests/unit/__init__.py": "",
    "tests/unit/test_x.py": """\
        import ray
        from ray import remote
        from actors.bar.core import x
        from actors.foo import core


        def init():
            pass


        def test_x():
            init()
            ray.is_initialized()
            remote(lambda: None)
        """,
}


def build(root: Path, files: dict[str, str]) -> Path:
    for name, text in {**CLEAN, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_this_repository_keeps_its_layers():
    violations = check(ROOT)
    assert violations == [], "layering violations:\n" + "\n".join(violations)


def test_a_clean_tree_has_no_violation(tmp_path):
    assert check(build(tmp_path, {})) == []


# (file, its text, line, what the report names: "imports <module>" or "calls <name>")
BAD = {
    # a. nothing under actors/ imports apps, serve_app, benchmarks (or tests)
    "a: a service imports apps": (
        "actors/foo/core.py", "import json\nfrom apps.common import service_app\n",
        2, "imports apps.common",
    ),
    "a: the runtime imports serve_app": (
        "actors/runtime/x.py", "import serve_app\n", 1, "imports serve_app",
    ),
    "a: a service imports a benchmark, inside a function": (
        "actors/bar/core.py", "def f():\n    from benchmarks import b\n",
        2, "imports benchmarks.b",
    ),
    "a: a top-level actors module imports apps": (
        "actors/helpers.py", "import apps\n", 1, "imports apps",
    ),
    "a: an actor imports a test helper": (
        "actors/foo/core.py", "from tests.unit import test_x\n", 1, "imports tests.unit.test_x",
    ),
    # b. actors/runtime imports nothing from actors outside actors.runtime
    "b: the runtime imports a service module": (
        "actors/runtime/x.py", "from actors.foo import core\n", 1, "imports actors.foo.core",
    ),
    "b: the runtime imports even a service's client": (
        "actors/runtime/x.py", "\n\nimport actors.bar.client\n", 3, "imports actors.bar.client",
    ),
    "b: the runtime imports a service package, relatively": (
        "actors/runtime/x.py", "from .. import foo\n", 1, "imports actors.foo",
    ),
    "b: the runtime imports a top-level actors module": (
        "actors/runtime/x.py", "from actors import helpers\n", 1, "imports actors.helpers",
    ),
    "b: the runtime imports the actors package": (
        "actors/runtime/x.py", "import actors\n", 1, "imports actors",
    ),
    "b: the runtime imports a service inside a function": (
        "actors/runtime/x.py", "def f():\n    from actors.bar.core import x\n",
        2, "imports actors.bar.core",
    ),
    # c. another service only through its client
    "c: a service imports another's module": (
        "actors/foo/core.py", "from actors.bar.core import x\n", 1, "imports actors.bar.core",
    ),
    "c: a service imports another's module by from-import": (
        "actors/foo/core.py", "from actors.bar import core\n", 1, "imports actors.bar.core",
    ),
    "c: a service imports another's package": (
        "actors/foo/core.py", "import actors.bar\n", 1, "imports actors.bar",
    ),
    "c: a service imports a name from another's package": (
        "actors/foo/core.py", "from actors.bar import Thing\n", 1, "imports actors.bar",
    ),
    "c: a service imports another's module relatively": (
        "actors/foo/core.py", "from ..bar import core\n", 1, "imports actors.bar.core",
    ),
    "c: a service imports another's errors inside a function": (
        "actors/foo/client.py", "def f():\n    from actors.bar.errors import E\n",
        2, "imports actors.bar.errors",
    ),
    "c: a service's front imports another's module": (
        "apps/foo.py", "from actors.bar.core import x\n", 1, "imports actors.bar.core",
    ),
    "c: a service's front package imports another's module": (
        "apps/foo/routes.py", "from actors.bar import core\n", 1, "imports actors.bar.core",
    ),
    "c: a shared front imports a service's module": (
        "apps/common.py", "from actors.foo.core import Core\n", 1, "imports actors.foo.core",
    ),
    "c: a front of no service imports a service's module": (
        "apps/foo_acl.py", "from actors.foo import core\n", 1, "imports actors.foo.core",
    ),
    "c: the apps package imports a service's module": (
        "apps/__init__.py", "import actors.bar.core\n", 1, "imports actors.bar.core",
    ),
    "c: a shared front imports a top-level actors module": (
        "apps/errors.py", "from actors import helpers\n", 1, "imports actors.helpers",
    ),
    # d. tests/unit never starts Ray
    "d: ray.init": (
        "tests/unit/test_x.py", "import ray\n\nray.init()\n", 3, "calls ray.init",
    ),
    "d: ray.init imported by name": (
        "tests/unit/test_x.py", "from ray import init\n\n\ndef test():\n    init(num_cpus=1)\n",
        5, "calls ray.init",
    ),
    "d: ray.init through an alias": (
        "tests/unit/test_x.py", "import ray as r\n\nr.init()\n", 3, "calls ray.init",
    ),
    "d: a Cluster": (
        "tests/unit/test_x.py", "from ray.cluster_utils import Cluster\n\nCluster()\n",
        3, "calls ray.cluster_utils.Cluster",
    ),
    "d: a Cluster by its dotted name": (
        "tests/unit/test_x.py", "import ray.cluster_utils\n\nray.cluster_utils.Cluster()\n",
        3, "calls ray.cluster_utils.Cluster",
    ),
    "d: serve.run": (
        "tests/unit/test_x.py", "from ray import serve\n\nserve.run(app)\n",
        3, "calls ray.serve.run",
    ),
    "d: serve.start": (
        "tests/unit/test_x.py", "from ray import serve\nserve.start()\n",
        2, "calls ray.serve.start",
    ),
    "d: ray.get_actor": (
        "tests/unit/test_x.py", "import ray\n\n\nasync def test():\n    ray.get_actor('x')\n",
        5, "calls ray.get_actor",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("file", "text", "line", "names"), BAD.values(), ids=list(BAD))
def test_each_rule_reports_the_file_line_and_module(tmp_path, file, text, line, names):
    violations = check(build(tmp_path, {file: text}))
    assert len(violations) == 1, violations
    assert violations[0].startswith(f"{file}:{line} {names}: "), violations


def test_a_new_service_package_is_covered_without_listing_it(tmp_path):
    build(tmp_path, {"actors/baz/__init__.py": "", "actors/baz/core.py": ""})
    (tmp_path / "actors/foo/core.py").write_text("from actors.baz.core import x\n")
    (tmp_path / "actors/runtime/x.py").write_text("import actors.baz.client\n")
    assert check(tmp_path) == [
        "actors/foo/core.py:1 imports actors.baz.core: "
        "service foo sees service baz only through actors.baz.client",
        "actors/runtime/x.py:1 imports actors.baz.client: actors/runtime imports no service",
    ]


def test_one_statement_importing_many_names_is_reported_once(tmp_path):
    violations = check(build(tmp_path, {"apps/common.py": "from actors.foo.core import A, B\n"}))
    assert violations == [
        "apps/common.py:1 imports actors.foo.core: "
        "a module of no service sees service foo only through actors.foo.client"
    ]


def test_a_files_violations_come_in_line_order(tmp_path):
    text = "def f():\n    import actors.foo\n\n\nimport actors.bar.core\n"
    violations = check(build(tmp_path, {"actors/runtime/x.py": text}))
    assert [v.partition(" ")[0] for v in violations] == [
        "actors/runtime/x.py:2",
        "actors/runtime/x.py:5",
    ]


def test_a_file_that_does_not_parse_is_reported(tmp_path):
    violations = check(build(tmp_path, {"apps/foo.py": "def broken(:\n"}))
    assert len(violations) == 1 and violations[0].startswith("apps/foo.py:1 does not parse")


def test_a_relative_import_above_the_top_package_is_reported(tmp_path):
    violations = check(build(tmp_path, {"actors/helpers.py": "from .. import x\n"}))
    assert violations == ["actors/helpers.py:1 imports beyond the top package"]


def test_a_unit_test_cannot_start_ray_at_run_time():
    import ray

    # ray.put starts Ray when none is running (through ray.init): the conftest refuses.
    with pytest.raises(AssertionError, match="started Ray"):
        ray.put(1)
    assert not ray.is_initialized()
