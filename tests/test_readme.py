"""The user-facing README and the docs' table of contents: short, runnable, no broken links, no local paths.

The README is for a user (at most 1,200 words, code included, counted like ``wc -w``); its quick start keeps
the two make commands; every relative link in README.md and docs/README.md names a file that exists; and no
file of the user docs names this project's machines (``shared/data``, ``/work/``): docs give the route a user
has (``scripts/prepare_cifar.py`` with their own download, or ``download: true``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_WORDS = 1200
FORBIDDEN = ("shared/data", "/work/")
# [text](target) and ![alt](target); the target ends at whitespace or ")" (an optional "title" is ignored)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def words(text: str) -> int:
    return len(text.split())


def section(text: str, title: str) -> str:
    """The body of the level-2 section ``## title`` (up to the next level-2 heading), or "" if absent."""
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(1) if m else ""


def relative_links(text: str) -> list[str]:
    """Relative link targets of a markdown text, without their #fragment; links inside code are not links."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    out = []
    for target in LINK.findall(prose):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def broken_links(md: Path) -> list[str]:
    return [t for t in relative_links(read(md)) if not (md.parent / t).exists()]


def local_paths(files: list[Path]) -> list[str]:
    """``FILE: STRING`` for each file (read as bytes: figures too) that contains a forbidden string."""
    return [f"{shown(f)}: {s}" for f in files for s in FORBIDDEN if s.encode() in f.read_bytes()]


def shown(f: Path) -> str:
    return f.relative_to(ROOT).as_posix() if f.is_relative_to(ROOT) else f.name


def user_doc_files() -> list[Path]:
    return [README] + sorted(p for p in DOCS.rglob("*") if p.is_file())


def test_readme_is_short():
    n = words(read(README))
    assert n <= MAX_WORDS, f"README.md has {n} words, at most {MAX_WORDS}: move detail to docs/"


def test_quick_start_keeps_the_two_make_commands():
    quick = section(read(README), "Quick start")
    assert quick, "README.md has no '## Quick start' section"
    for cmd in ("make search", "make test"):
        assert re.search(rf"^{cmd}\b", quick, re.MULTILINE), f"the quick start lost `{cmd}`"


@pytest.mark.parametrize("md", [README, DOCS / "README.md"], ids=["README.md", "docs/README.md"])
def test_relative_links_exist(md):
    assert relative_links(read(md)), f"{md.name}: no relative links found (is the link parser broken?)"
    assert broken_links(md) == [], f"{md.relative_to(ROOT)} links to missing files"


def test_user_docs_name_no_local_paths():
    assert local_paths(user_doc_files()) == []


def test_readme_carries_no_development_history():
    for md in (README, DOCS / "README.md"):
        text = read(md)
        assert not re.search(r"\bissues? \d+", text, re.IGNORECASE), f"{md.name}: names an issue"
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{md.name}: carries a dated figure"
        assert not re.search(r"\bcommit [0-9a-f]{7,40}\b", text), f"{md.name}: names a commit"


# the checks themselves must be able to fail: each helper on a text that breaks its rule


def test_checks_catch_what_they_guard(tmp_path):
    md = tmp_path / "x.md"
    (tmp_path / "there.md").write_text("x", encoding="utf-8")
    md.write_text(
        "[ok](there.md#top) [gone](missing.md) ![pic](figs/none.png) [web](https://x.org/a) [anchor](#s)\n"
        "`[code](nope.md)`\n```\n[block](nope2.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(md) == ["missing.md", "figs/none.png"]
    bad = tmp_path / "bad.md"
    bad.write_text("tar xzf /work/shared/data/cifar10-jpg.tar.gz\n", encoding="utf-8")
    assert local_paths([bad, tmp_path / "there.md"]) == ["bad.md: shared/data", "bad.md: /work/"]
    assert words("a b\n```\nc d\n```\n") == 6
    text = "## Quick start\n\n```bash\nmake search\n```\n\n## Next\n\nmake test\n"
    assert "make search" in section(text, "Quick start")
    assert "make test" not in section(text, "Quick start")
