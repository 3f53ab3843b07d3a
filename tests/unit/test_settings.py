"""Settings: one section per registered service, documented field by field,
and ``docs/configuration.md`` generated from them."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

import serve_app
from actors.runtime.errors import RealmError
from actors.runtime.registry import SERVICES, section_classes
from actors.runtime.settings import Section, Settings
from tests.conftest import ROOT


def test_a_section_is_read_from_its_own_variables_and_keywords_override_them(monkeypatch):
    cache = section_classes()["cache"]
    monkeypatch.setenv("REALM_CACHE_SHARDS", "7")
    monkeypatch.setenv("REALM_NAMESPACE", "from-env")
    assert cache.of(Settings()).shards == 7  # type: ignore[attr-defined]
    settings = Settings(cache_shards=3, namespace="given")
    assert cache.of(settings).shards == 3  # type: ignore[attr-defined]
    assert settings.namespace == "given"
    assert cache.of(Settings(cache={"shards": 5})).shards == 5  # type: ignore[attr-defined]


def test_sections_travel_with_the_settings_to_other_processes():
    settings = Settings(cache_shards=3, queue_workers=4)
    again = pickle.loads(pickle.dumps(settings))
    assert again == settings
    assert again.sections["cache"].shards == 3
    assert again.sections["queue"].workers == 4


def test_an_unknown_or_invalid_setting_is_refused_by_name():
    with pytest.raises(ValidationError, match="cache_shardz"):
        Settings(cache_shardz=3)
    with pytest.raises(ValidationError, match="shards"):
        Settings(cache_shards=0)


def test_a_section_not_in_the_settings_is_a_clear_error():
    class Orphan(Section, service="orphan-for-test"):
        pass

    with pytest.raises(LookupError, match="orphan-for-test"):
        Orphan.of(Settings())
    del Section.by_service["orphan-for-test"]


def test_every_setting_says_what_it_sets():
    sections: list[type[Settings] | type[Section]] = [Settings, *section_classes().values()]
    for model in sections:
        for name, field in model.model_fields.items():
            assert field.description and field.description.strip(), f"{model.__name__}.{name}"


def test_the_configuration_reference_is_generated_from_the_settings():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == serve_app.settings_reference(), "run `make docs`"
    for name, section in section_classes().items():
        for field in section.model_fields:
            assert f"`REALM_{name.upper()}_{field.upper()}`" in committed


def test_the_reference_writer_writes_the_committed_file(tmp_path: Path):
    out = tmp_path / "configuration.md"
    assert serve_app.main(["--write-settings-doc", str(out)]) == 0
    assert out.read_text() == (ROOT / "docs" / "configuration.md").read_text()


def test_error_codes_are_unique_across_every_service():
    for service in SERVICES:
        if (ROOT / "actors" / service.name / "errors.py").exists():
            importlib.import_module(f"actors.{service.name}.errors")
    seen: dict[str, type[RealmError]] = {}

    def walk(cls: type[RealmError]) -> None:
        for sub in cls.__subclasses__():
            if "code" in sub.__dict__:
                assert sub.code not in seen, f"{sub.__name__} reuses {seen.get(sub.code)}'s code"
                seen[sub.code] = sub
            walk(sub)

    walk(RealmError)
    assert all(RealmError.by_code[code] is cls for code, cls in seen.items())
