"""The documentation holds together: every relative link of README.md, docs/ and
benchmarks/results/ points at a file (or folder) of the repository, and every link into a
markdown page at a heading it has; the README stays a front door (at most 220 lines); every
console command that setup.py declares is documented."""

import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the pages whose links are checked
PAGES = sorted(
    {
        os.path.join(ROOT, "README.md"),
        *glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True),
        *glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.md")),
    }
)
README_MAX_LINES = 220

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
# [text](target) and ![alt](target); the text may hold `code` but no closing bracket; the
# target may be followed by a title ("...")
_LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^(https?:|mailto:|ftp:)", re.I)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _rel(path):
    return os.path.relpath(path, ROOT)


def _text_outside_code(path):
    """The page with its fenced code blocks blanked (their line breaks kept, so that line
    numbers stay those of the file)."""
    with open(path, encoding="utf-8") as f:
        return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), f.read())


def links(path):
    """(line number, target) of every link of the page outside fenced code blocks."""
    text = _text_outside_code(path)
    out = []
    for m in _LINK.finditer(text):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


def relative_links(path):
    """(line, target) of the page's links that point into the repository."""
    return [(n, t) for n, t in links(path) if t and not _EXTERNAL.match(t)]


def slug(heading):
    """GitHub's anchor of a heading: its text without link markup and punctuation, lower case,
    spaces as hyphens."""
    text = _LINK.sub(lambda m: m.group(1), heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a markdown page (repeated headings get -1, -2, ... as on
    GitHub)."""
    seen, out = {}, set()
    for m in _HEADING.finditer(_text_outside_code(path)):
        base = slug(m.group(1))
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.add(base if k == 0 else f"{base}-{k}")
    return out


def test_the_pages_are_found():
    names = {_rel(p) for p in PAGES}
    assert {"README.md", os.path.join("benchmarks", "results", "README.md")} <= names
    assert len([n for n in names if n.startswith("docs" + os.sep)]) >= 7, names


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    broken = []
    for line, target in relative_links(page):
        path = target.split("#", 1)[0]
        if not path:  # a link to a heading of the same page: checked below
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path))
        if not os.path.exists(resolved):
            broken.append(f"{_rel(page)}:{line}: ({target}) -> {_rel(resolved)} does not exist")
        elif not resolved.startswith(ROOT + os.sep):
            broken.append(f"{_rel(page)}:{line}: ({target}) points outside the repository")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_link_to_a_heading_names_one(page):
    broken = []
    for line, target in relative_links(page):
        if "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not resolved.endswith(".md") or not os.path.isfile(resolved):
            continue  # a missing file is reported by the test above
        if anchor.lower() not in anchors(resolved):
            broken.append(
                f"{_rel(page)}:{line}: ({target}): {_rel(resolved)} has no heading #{anchor}"
            )
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert (
        len(lines) <= README_MAX_LINES
    ), f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"


def console_commands():
    """The console_scripts names of setup.py's entry_points, read without running setup.py."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value).get("console_scripts", [])
            return [s.split("=", 1)[0].strip() for s in scripts]
    raise AssertionError("setup.py declares no entry_points")


def test_every_console_command_is_documented():
    commands = console_commands()
    assert "luminet-train" in commands  # the parse found the declaration
    docs = [os.path.join(ROOT, "README.md")]
    docs += glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    text = "\n".join(open(p, encoding="utf-8").read() for p in docs)
    missing = [c for c in commands if not re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text)]
    assert not missing, f"console commands named nowhere in README.md or docs/: {missing}"
