"""
When the browser tests run, skip or fail: the rule in ``tests/ui/_browser.py``.

Without Chromium the README's test command must still pass (the browser tests
are skipped, saying how to install it), while CI, which must run them, fails
loudly. These tests never need a browser: they hide it by emptying ``PATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._browser import INSTALL_HINT, REQUIRE_BROWSER_ENV, no_browser

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "skip"),
        ({"CI": "true"}, "fail"),
        ({"CI": "1"}, "fail"),
        ({"CI": "false"}, "skip"),
        ({"CI": ""}, "skip"),
        ({REQUIRE_BROWSER_ENV: "1"}, "fail"),
        ({REQUIRE_BROWSER_ENV: "0", "CI": "true"}, "skip"),
        ({REQUIRE_BROWSER_ENV: "", "CI": "true"}, "fail"),
        ({REQUIRE_BROWSER_ENV: "true", "CI": "false"}, "fail"),
    ],
)
def test_missing_browser_skips_unless_required(
    environ: dict[str, str], expected: str
) -> None:
    """A missing browser skips, unless CI or the requiring variable asks for it."""
    action, reason = no_browser(["chromium", "chromedriver"], environ)

    assert expected == action
    assert INSTALL_HINT in reason
    assert "chromium, chromedriver" in reason
    assert (expected == "fail") == reason.endswith(" requires them")


def _pytest_without_browser(
    tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the browser tests in a subprocess whose PATH holds no chromium."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", REQUIRE_BROWSER_ENV, "PYTEST_ADDOPTS")
    }
    env.update(PATH=str(empty), **extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
         "tests/ui/test_browser.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )  # fmt: skip


def _summary(output: str) -> str:
    """pytest's last line, without the timing: '5 skipped' or '5 errors'."""
    last = output.strip().splitlines()[-1]
    return re.sub(r" in [\d.]+s.*$", "", last.strip("= "))


def test_readme_command_passes_without_chromium(tmp_path: Path) -> None:
    """Without chromium on PATH the browser tests are skipped, naming the fix."""
    result = _pytest_without_browser(tmp_path)

    assert 0 == result.returncode, result.stdout + result.stderr
    assert re.fullmatch(r"\d+ skipped", _summary(result.stdout)), result.stdout
    assert INSTALL_HINT in result.stdout


@pytest.mark.parametrize(
    "required", [{"CI": "true"}, {REQUIRE_BROWSER_ENV: "1"}], ids=["CI", "variable"]
)
def test_ci_fails_without_chromium(tmp_path: Path, required: dict[str, str]) -> None:
    """Where the browser is required, a missing one is an error, naming the fix."""
    result = _pytest_without_browser(tmp_path, **required)

    assert 1 == result.returncode, result.stdout + result.stderr
    assert re.fullmatch(r"\d+ errors?", _summary(result.stdout)), result.stdout
    assert INSTALL_HINT in result.stdout


def test_ci_requires_the_browser() -> None:
    """.ci/run requires the browser tests before it runs the README's command."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    export = lines.index(f"export {REQUIRE_BROWSER_ENV}=1")
    readme_run = next(
        i for i, line in enumerate(lines) if line.endswith(".venv/bin/python -m pytest")
    )

    assert export < readme_run
