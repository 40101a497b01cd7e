"""
What a release says about itself agrees: the package's version, the setup
metadata, the CHANGELOG and the README; and the user docs cite nothing a reader
cannot look up (tracker numbers such as ``#12``).
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import context_trace

REPO = Path(__file__).resolve().parent.parent
# A release heading: "## [0.2.0](https://...) - 2026-12-07" (the link is optional).
RELEASE = re.compile(
    r"^## \[(\d+\.\d+\.\d+)\](?:\([^)]*\))? - (\d{4}-\d{2}-\d{2})$", re.MULTILINE
)
# "#12", "(#9)", "issue #10": a tracker number. Four digits and more are not
# (the demo's order numbers, "#4000"); neither are colours (#222) or anchors.
TRACKER_REFERENCE = re.compile(r"(?<![\w&#/])#\d{1,3}\b(?![\w-])")
VERSION = re.compile(r"(?:(\S+) )?(?<![\w.=-])(\d+\.\d+\.\d+)(?![\w.])")
# Other projects whose versions the README names (the peers it was measured with).
OTHER_PROJECTS = frozenset({"Langfuse", "LangSmith", "OpenInference", "langchain-core"})


def _released() -> list[str]:
    """The CHANGELOG's dated releases, newest first."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    return [version for version, _ in RELEASE.findall(text)]


def _literal_version() -> str:
    """``__version__`` as setuptools reads it: a literal in ``__init__.py``."""
    tree = ast.parse((REPO / "context_trace" / "__init__.py").read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise AssertionError("no __version__ literal in context_trace/__init__.py")


def test_setup_reads_the_package_version() -> None:
    """setup.cfg takes its version from __version__, a literal it can read."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")

    assert "attr: context_trace.__version__" == setup["metadata"]["version"]
    assert context_trace.__version__ == _literal_version()


def test_changelog_newest_release_is_the_package_version() -> None:
    """The newest dated CHANGELOG section is the package's version."""
    released = _released()

    assert released, "CHANGELOG.md has no dated release section"
    assert context_trace.__version__ == released[0]


def test_readme_cites_only_released_versions() -> None:
    """Every version of ours the README names (its figures' labels) is this one or
    older; a peer's version ("Langfuse 5.2.0") is its own."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    known = {context_trace.__version__, *_released()}
    ours = {v for word, v in VERSION.findall(readme) if word not in OTHER_PROJECTS}

    assert [] == sorted(ours - known)


def _user_docs() -> list[Path]:
    """The README, ARCHITECTURE, CONTRIBUTING, docs/ and every shipped .py file."""
    paths = [
        REPO / name for name in ("README.md", "ARCHITECTURE.md", "CONTRIBUTING.md")
    ]
    paths += sorted((REPO / "docs").glob("*.md"))
    for folder in ("context_trace", "examples", "benchmarks", "scripts"):
        paths += sorted((REPO / folder).rglob("*.py"))
    return paths


def test_user_docs_cite_no_tracker_numbers() -> None:
    """Docs, docstrings and comments say what they mean, not '#12'."""
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _user_docs()
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if TRACKER_REFERENCE.search(line)
    ]

    assert [] == found
