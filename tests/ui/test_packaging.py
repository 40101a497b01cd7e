"""The dashboard's dependency message and its assets in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("missing", ["flask", "waitress"])
def test_missing_dependency_names_the_extra(missing: str):
    """Without Flask or waitress, importing the UI says to install the ui extra."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "try:\n    import context_trace.ui.serve\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert (
        "context_trace.ui requires Flask and waitress; install 'context-trace[ui]'"
        == result.stdout.strip()
    )


def test_cli_without_the_extra_exits_with_the_hint(tmp_path: Path):
    """context-trace ui without Flask prints the hint and exits 1."""
    code = (
        "import sys; sys.modules['waitress'] = None\n"
        "from context_trace.cli import main\n"
        f"sys.exit(main(['ui', '--db', {str(tmp_path / 'x.db')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert 1 == result.returncode
    assert "install 'context-trace[ui]'" in result.stderr


def test_wheel_ships_templates_and_static_assets(tmp_path: Path):
    """The built wheel contains every template and static file of the dashboard,
    the vendored chart library and its licence included."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wheel = next(tmp_path.glob("context_trace-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    ui = ROOT / "context_trace" / "ui"
    expected = {
        str(p.relative_to(ROOT))
        for folder in ("templates", "static")
        for p in (ui / folder).rglob("*")
        if p.is_file()
    }

    assert "context_trace/ui/static/vendor/uplot/LICENSE" in expected
    assert sorted(expected - names) == []
