"""The README stays a short front door, its services table follows ``SERVICES``,
every service has its manual, and no relative link in the docs is broken."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.runtime.registry import SERVICES
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300


START, END = "<!-- services:start -->", "<!-- services:end -->"
HEADER = ["| service | prefix | what it does | manual |", "|---|---|---|---|"]

#: [text](target) not preceded by "!" is a link; images are checked the same way.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets outside code blocks and inline code, minus URLs and bare anchors."""
    text = FENCE.sub("", text)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto: ...; or a place in the same page
        targets.append(target.split("#", 1)[0])
    return targets


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path.read_text()):
        resolved = (path.parent / target).resolve()
        if resolved.exists():
            continue
        broken.append(target)
    return broken


def services_table(readme: str) -> list[str]:
    assert readme.count(START) == 1 and readme.count(END) == 1, "one pair of table markers"
    block = readme.split(START, 1)[1].split(END, 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


def expected_row(name: str, prefix: str, summary: str) -> str:
    return f"| {name} | `{prefix}` | {summary} | [docs/{name}.md](docs/{name}.md) |"


def test_the_readme_is_at_most_300_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_the_services_table_has_one_row_per_service_in_order():
    lines = services_table(README.read_text())
    assert lines[:2] == HEADER
    expected = [expected_row(s.name, s.prefix, s.summary) for s in SERVICES]
    assert lines[2:] == expected


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_service_has_its_manual(service):
    manual = DOCS / f"{service.name}.md"
    assert manual.is_file(), f"docs/{service.name}.md is missing"
    assert manual.read_text().startswith("# "), f"docs/{service.name}.md has no title"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(path):
    assert broken_links(path) == []


# The checks themselves: each must fail on the kind of mistake it is there for.


def test_a_wrong_row_or_a_missing_one_fails_the_table_check():
    good = [expected_row(s.name, s.prefix, s.summary) for s in SERVICES]
    wrong_summary = [good[0].replace(SERVICES[0].summary, "something else"), *good[1:]]
    swapped = [good[1], good[0], *good[2:]]
    for rows in (good[:-1], wrong_summary, swapped):
        readme = "\n".join(["intro", START, *HEADER, *rows, END, "after"])
        assert services_table(readme)[2:] != good


def test_a_link_to_a_missing_file_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](page.md) [web](https://example.com) [here](#top) [gone](docs/gone.md#part)\n"
        "`[code](not-a-link.md)`\n```\n[fenced](also-not.md)\n```\n"
    )
    assert broken_links(page) == ["docs/gone.md"]
