"""The project explains itself: every doc its code cites exists, with the heading cited.

Source, tests, benchmarks, scripts and the docs themselves cite the project's `docs/` pages as
`docs/NAME.md#anchor` (GitHub's heading anchors) or `docs/NAME.md, "Heading"`. A cited page or
heading that was renamed or never written fails here, as does a citation of the background notes
written before the code (outside the repository), a numbered section (`§3`: our pages are not
numbered), a bare page name without `docs/`, or an issue number in code (issues are closed and
renumbered; the reason belongs in the comment itself).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

CITED = re.compile(
    r"docs/(?P<page>[A-Za-z0-9_-]+\.md)"
    r"(?:#(?P<anchor>[A-Za-z0-9_-]+)|,? \"(?P<heading>[^\"\n]+)\")?"
)
# A page of ours named without its directory, outside a string literal such as `"operations.md"`.
PAGES = "behaviour|kubectl|clients|architecture|operations|benchmarks"
BARE = re.compile(rf"(?<![/\w\"'.-])(?:{PAGES})\.md")
SECTION = re.compile(r"\.md,? ?§")
OUTSIDE = re.compile(r"\.\./shared|shared/docs")
ISSUE = re.compile(r"\b[Ii]ssues? #?\d+")


def _sources() -> list[Path]:
    files = [
        *sorted((ROOT / "src").rglob("*.py")),
        *sorted((ROOT / "tests").rglob("*.py")),
        *sorted((ROOT / "bench").rglob("*.py")),
        *sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file()),
    ]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _normal(heading: str) -> str:
    return re.sub(r"[`*]", "", heading).strip().lower()


@cache
def headings(page: str) -> tuple[frozenset[str], frozenset[str]]:
    """(anchors, normalised heading texts) of one docs page, code blocks skipped."""
    anchors: set[str] = set()
    texts: set[str] = set()
    fenced = False
    for line in (DOCS / page).read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            anchors.add(slug(match.group(1)))
            texts.add(_normal(match.group(1)))
    return frozenset(anchors), frozenset(texts)


def citation_errors(text: str, where: str) -> list[str]:
    errors = []
    for match in CITED.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        page = match.group("page")
        if not (DOCS / page).is_file():
            errors.append(f"{where}:{line}: cites docs/{page}, which does not exist")
            continue
        anchors, texts = headings(page)
        if (anchor := match.group("anchor")) and anchor not in anchors:
            errors.append(f"{where}:{line}: docs/{page} has no heading #{anchor}")
        heading = match.group("heading")
        if heading and not any(t.startswith(_normal(heading)) for t in texts):
            errors.append(f"{where}:{line}: docs/{page} has no heading {heading!r}")
    for pattern, what in (
        (BARE, "names a page without docs/"),
        (SECTION, "cites a numbered section"),
        (OUTSIDE, "cites notes outside the repository"),
    ):
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            errors.append(f"{where}:{line}: {what}: {match.group(0)!r}")
    return errors


def test_cited_docs_and_headings_exist() -> None:
    errors = []
    for path in _sources() + _pages():
        errors += citation_errors(path.read_text(errors="replace"), str(path.relative_to(ROOT)))
    assert errors == []


def test_code_names_no_issue_numbers() -> None:
    found = []
    for path in _sources():
        text = path.read_text(errors="replace")
        for match in ISSUE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert found == []


def test_a_missing_heading_is_reported() -> None:
    """The checker itself: a citation of a heading that does not exist is an error."""
    good = 'docs/architecture.md#garbage-collection, docs/operations.md, "Failed logins"'
    assert citation_errors(good, "good.py") == []
    bad = "See docs/architecture.md#no-such-heading, docs/nowhere.md and behaviour.md §3."
    errors = citation_errors(bad, "bad.py")
    assert any("no heading #no-such-heading" in e for e in errors)
    assert any("docs/nowhere.md, which does not exist" in e for e in errors)
    assert any("without docs/" in e for e in errors)
    assert any("numbered section" in e for e in errors)
    assert slug("`ac adm top`") == "ac-adm-top"
    assert slug("Package layout (`src/imageregistry`)") == "package-layout-srcimageregistry"
