"""The layers hold: web -> live, workflows -> services -> core, each framework in its own
layer, no cycles (tests/support/layers.py). The checker is also run on small packages that
break each rule, so a checker that sees nothing cannot pass for a clean codebase."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.layers import imports, modules, violations

REPO = Path(__file__).resolve().parent.parent


def test_gatehouse_keeps_its_layers() -> None:
    assert violations(REPO, "webapp") == []


def test_the_walk_sees_every_module_and_import() -> None:
    found = modules(REPO, "webapp")
    assert {"webapp.app", "webapp.workflows.runtime", "webapp.web.requests", "webapp.services.people_import.jobs"} <= set(found)
    targets = {i.imported for i in imports(REPO, "webapp") if i.importer == "webapp.workflows.runtime"}
    assert "dbos._error.DBOSMaxStepRetriesExceeded" in targets  # the one allowed private import is seen


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in {p.parent for p in root.rglob("*.py")}:
        (directory / "__init__.py").touch()
    return root


CLEAN = {
    "pkg/config.py": "",
    "pkg/core/models.py": "from pkg.config import X\n",
    "pkg/services/access.py": "from pkg.core import models\n",
    "pkg/agents/ldap.py": "from pkg.core import models\n",
    "pkg/workflows/runtime.py": "import dbos._context\nfrom dbos import DBOS\n",
    "pkg/workflows/access.py": "from ..services.access import x\nfrom . import runtime\nfrom pkg.agents import ldap\n",
    "pkg/live/feed.py": "from pkg.services import access\n",
    "pkg/web/pages.py": "from starlette.requests import Request\nfrom pkg.workflows import access\nfrom pkg.live.feed import F\n",
    "pkg/app.py": "from starlette.applications import Starlette\nfrom pkg.web import pages\n",
}


def test_a_clean_package_passes(tmp_path: Path) -> None:
    assert violations(write(tmp_path, CLEAN), "pkg") == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"pkg/core/db.py": "from pkg.services.access import x\n"}, "core/ imports pkg.services.access"),
    ({"pkg/services/rows.py": "def f():\n    from pkg.web.pages import p\n"}, "services/ imports pkg.web.pages"),
    ({"pkg/live/counters.py": "from pkg.workflows.access import a\n"}, "live/ imports pkg.workflows.access"),
    ({"pkg/services/clock.py": "from starlette.concurrency import run_in_threadpool\n"}, "Starlette or Jinja"),
    ({"pkg/live/render.py": "import jinja2\n"}, "Starlette or Jinja"),
    ({"pkg/web/health.py": "from dbos import DBOS\n"}, "only workflows/ may use DBOS"),
    ({"pkg/workflows/access.py": "from dbos._error import E\n"}, "private API"),
    ({"pkg/helpers.py": ""}, "a module at the root"),
    ({"pkg/utils/strings.py": ""}, "utils/ is not a layer"),
    ({"pkg/agents/scim.py": "from pkg.services.access import x\n"}, "agents/ imports pkg.services.access"),
    ({"pkg/services/drift.py": "from pkg.agents.ldap import L\n"}, "services/ imports pkg.agents.ldap"),
    ({"pkg/services/a.py": "from pkg.services import b\n", "pkg/services/b.py": "from pkg.services.a import f\n"},
     "import cycle: pkg.services.a -> pkg.services.b -> pkg.services.a"),
])
def test_each_broken_rule_is_named(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    found = violations(write(tmp_path, {**CLEAN, **change}), "pkg")
    assert any(expected in line for line in found), found
