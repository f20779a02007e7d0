"""The documents the README and the code cite are in the repository, and every reference resolves: local
links and their #anchors (GitHub's heading slugs), "§N" section references to docs/SPEC.md, and no help
text that says "spec" without saying which file."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "SPEC.md"
SKIP = {".venv", ".git", "node_modules", "results"}  # benchmark results quote history, not references


def _files(*suffixes: str) -> list[Path]:
    return [
        p
        for p in sorted(ROOT.rglob("*"))
        if p.is_file() and p.suffix in suffixes and not SKIP & set(p.relative_to(ROOT).parts)
    ]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+\s+(.*?)\s*#*$", path.read_text(), re.M)}


def test_the_cited_documents_are_in_the_repository():
    for name in ("ARCHITECTURE.md", "SPEC.md"):
        assert (ROOT / "docs" / name).is_file(), name
    readme = (ROOT / "README.md").read_text()
    assert "(docs/ARCHITECTURE.md)" in readme and "(docs/SPEC.md)" in readme


def test_every_local_link_and_anchor_resolves():
    broken = []
    for doc in _files(".md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_section_reference_is_a_section_of_the_spec():
    spec = SPEC.read_text()
    sections = set(re.findall(r"^#+ (\d+(?:\.\d+)*)[ .]", spec, re.M))
    numbered = spec[spec.index("\n## 9.") : spec.index("\n## 10.")]  # "§9.21": item 21 of section 9
    sections |= {f"9.{n}" for n in re.findall(r"^(\d+)\. ", numbered, re.M)}
    unknown = [
        f"{path.relative_to(ROOT)}:{i}: §{ref}"
        for path in _files(".py", ".md", ".toml")
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        for ref in re.findall(r"§\s*(\d+(?:\.\d+)*)", line)
        if ref not in sections
    ]
    assert not unknown, "\n".join(unknown)
    assert {"1", "1.3", "6", "6.1", "7.2", "9.21"} <= sections  # the parse found the spec's structure


def test_help_texts_name_the_file_they_cite():
    runner = CliRunner()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    for command in commands:
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
        for line in text.splitlines():
            if "§" in line:
                assert "docs/SPEC.md §" in line, f"stts {command} --help: {line.strip()}"
    assert "docs/SPEC.md §6" in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
