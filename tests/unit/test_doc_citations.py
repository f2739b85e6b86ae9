"""Every document the code cites is in the repository, and so is every section it names.

A citation is any `<path>.md` in a Python file (comment, docstring, string or code),
resolved from the repository root: `docs/locks.md`, `README.md`. A name quoted right
after it (as in `docs/locks.md "Clean locks"`) must be a heading of that page, and so must
a name quoted after a bare README. Every relative `.md` link of README.md and docs/*.md
must resolve too, with its `#anchor` when it has one. A failure lists each dangling
citation as file:line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Not the project's own files: virtualenvs, caches, the data dir, what the tests fetch.
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "var", "build", "dist"})
# Other text files that cite the README or the docs.
OTHER_CITING_FILES = ("Makefile", "pyproject.toml", "supervisor_site/deploy/balena-supervisor-python.service")

# A relative path ending in .md; never part of a URL or of an absolute path.
MD_PATH = re.compile(r"(?<![\w/.:-])([\w.-]+(?:/[\w.-]+)*\.md)(?![\w-])")
# A section named right after a citation, after a space or a comma (a quote right after the
# file name closes the string that holds it): `docs/locks.md "Clean locks"`.
SECTION = re.compile(r'(?:\s+|\s*,\s*)"([^"\n]+)"')
# A quoted name that the line does not close.
OPEN_QUOTE = re.compile(r'(?:\s+|\s*,\s*)"[^"\n]*$')
README_SECTION = re.compile(r'\bREADME "([^"\n]+)"')
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Citation:
    source: Path
    line: int
    target: str
    section: str | None

    def where(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"


def project_files(suffix: str) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(suffix):
                yield Path(directory) / name


def _section_after(lines: list[str], index: int, end: int) -> str | None:
    """The quoted section name after a citation, also when a comment or docstring wraps
    right after the file name or inside the quoted name."""
    rest = lines[index][end:].rstrip()
    if (rest.strip() in ("", ",") or OPEN_QUOTE.match(rest)) and index + 1 < len(lines):
        rest += " " + lines[index + 1].strip().lstrip("#").strip()
    match = SECTION.match(rest)
    return match.group(1) if match else None


def citations_in(path: Path) -> Iterator[Citation]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        for match in MD_PATH.finditer(line):
            section = _section_after(lines, index, match.end())
            yield Citation(path, index + 1, match.group(1), section)
        for match in README_SECTION.finditer(line):
            yield Citation(path, index + 1, "README.md", match.group(1))


def all_citations() -> list[Citation]:
    found = [c for path in project_files(".py") for c in citations_in(path)]
    for name in OTHER_CITING_FILES:
        if (ROOT / name).exists():
            found += citations_in(ROOT / name)
    return found


def _plain(text: str) -> str:
    return text.replace("`", "").strip()


@cache
def headings(page: Path) -> frozenset[str]:
    """The page's headings, as written and without their backticks (fenced code skipped)."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found |= {match.group(1), _plain(match.group(1))}
    return frozenset(found)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", _plain(heading).lower())
    return text.replace(" ", "-")


def page_anchors(page: Path) -> set[str]:
    return {anchor(heading) for heading in headings(page)}


def dangling(citation: Citation) -> str | None:
    """Why the citation does not resolve, or None."""
    page = ROOT / citation.target
    if not page.is_file():
        return f"{citation.where()}: {citation.target} is not a file of the repository"
    if citation.section is not None and _plain(citation.section) not in headings(page):
        return f'{citation.where()}: {citation.target} has no heading "{citation.section}"'
    return None


def test_every_document_the_code_cites_exists_with_the_sections_it_names() -> None:
    citations = all_citations()
    problems = [problem for c in citations if (problem := dangling(c))]
    assert not problems, "dangling citations:\n" + "\n".join(problems)


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_of_the_readme_and_the_docs_resolves() -> None:
    problems = []
    for page in markdown_pages():
        fenced = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            if FENCE.match(line):
                fenced = not fenced
            if fenced:
                continue
            for match in MD_LINK.finditer(line):
                link = match.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:…
                    continue
                target, _, fragment = link.partition("#")
                resolved = (page.parent / target).resolve() if target else page
                where = f"{page.relative_to(ROOT)}:{number}"
                if not resolved.is_file():
                    problems.append(f"{where}: {link} is not a file of the repository")
                elif fragment and resolved.suffix == ".md" and fragment not in page_anchors(resolved):
                    problems.append(f"{where}: {link} names no heading of {resolved.name}")
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {Path(link.partition("#")[0]).as_posix() for link in MD_LINK.findall(readme)}
    missing = [
        page.relative_to(ROOT).as_posix()
        for page in sorted((ROOT / "docs").glob("*.md"))
        if page.relative_to(ROOT).as_posix() not in linked
    ]
    assert not missing, "docs pages the README does not link: " + ", ".join(missing)


def test_a_citation_is_found_with_its_section_and_checked(tmp_path: Path) -> None:
    # Written with a placeholder, so that this file does not cite the missing pages itself.
    lines = [
        '"""Paths and semantics: docs/locks{md} "Clean locks"; see also spec/locks{md}."""',
        '# README "Run it on a device", and the v3 form (target-state{md},',
        '# "Conversion to v3"); https://example.com/README{md} is a URL, /opt/x/README{md} a path.',
        '"""As docs/locks{md} "Locks around',
        'an action" says."""',
    ]
    path = tmp_path / "example.py"
    md = ".md"
    path.write_text("\n".join(line.format(md=md) for line in lines) + "\n")
    found = [(c.line, c.target, c.section) for c in citations_in(path)]
    assert found == [
        (1, "docs/locks.md", "Clean locks"),
        (1, f"spec/locks{md}", None),
        (2, f"target-state{md}", "Conversion to v3"),
        (2, "README.md", "Run it on a device"),
        (4, "docs/locks.md", "Locks around an action"),
    ]
    example = ROOT / "tests" / "unit" / "example.py"
    assert dangling(Citation(example, 2, f"target-state{md}", None)) == (
        f"tests/unit/example.py:2: target-state{md} is not a file of the repository"
    )
    assert dangling(Citation(example, 2, "README.md", "No such section")) == (
        'tests/unit/example.py:2: README.md has no heading "No such section"'
    )
