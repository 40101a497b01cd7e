"""
A directory that child processes really cannot write, even when the tests run as root.

``chmod`` alone does not stop root: it has ``CAP_DAC_OVERRIDE``. Children started
with :func:`no_write_override` as ``preexec_fn`` lose that capability from their
bounding set before ``exec``, so the new program never gets it back and the
directory's mode bits hold for them as for any user. :func:`assert_read_only`
checks that the condition is real before a test relies on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def no_write_override() -> None:
    """``preexec_fn``: as root, drop the capabilities that bypass file modes."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """Make *directory* and its files read-only for the block, then writable again."""
    files = [p for p in directory.iterdir() if p.is_file()]
    for path in files:
        path.chmod(0o444)
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o755)
        for path in files:
            path.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)


def assert_read_only(directory: Path) -> None:
    """A child started with :func:`no_write_override` cannot create a file there."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; open(sys.argv[1], 'w')", str(directory / "probe")],
        capture_output=True,
        text=True,
        preexec_fn=no_write_override,
        check=False,
    )  # fmt: skip

    assert probe.returncode != 0, probe.stderr
    assert "PermissionError" in probe.stderr
