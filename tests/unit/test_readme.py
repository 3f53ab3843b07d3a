"""The README's configuration table names every setting there is, and no other."""

from __future__ import annotations

import re

from actors.runtime.settings import Settings
from tests.conftest import ROOT


def test_every_setting_is_documented_and_every_documented_one_exists():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`REALM_([A-Z0-9_]+)`", readme))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README"
    assert documented - settings == set(), "the README names settings that do not exist"
