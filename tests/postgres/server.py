"""
A real PostgreSQL server for the tests and ``benchmarks/postgres.py``.

Debian's ``initdb`` in a temporary directory, run as an unprivileged user (as
the ``postgres`` user the Debian package creates when we are root, else as
ourselves), started with ``pg_ctl`` on a free loopback port with its unix
socket in the same directory. Stopped and started again at will (the outage
tests), removed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: Installed by ``apt-get install postgresql``.
INSTALL_HINT = "apt-get install postgresql"
ADMIN = "ct_admin"
ADMIN_PASSWORD = "admin-pw-7f3a"
WRITER = "ct_writer"
WRITER_PASSWORD = "writer-pw-s3cr3t"
READER = "ct_reader"
READER_PASSWORD = "reader-pw-9c1e"
_TIMEOUT = 60


def binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One PostgreSQL cluster on 127.0.0.1; :meth:`database` makes fresh stores."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self._bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="ct-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self._user: str | None = None
        self._fsync = fsync
        self._names = itertools.count(1)
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the Debian package's user.
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        password = self.dir / "pw"
        password.write_text(ADMIN_PASSWORD + "\n")
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(password, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            ADMIN,
            f"--pwfile={password}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        password.unlink()
        self.start()
        self.admin(
            f"CREATE ROLE {WRITER} LOGIN PASSWORD '{WRITER_PASSWORD}'",
            f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'",
        )

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bindir / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def start(self) -> None:
        """Start the server (again) on its port; wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if self._fsync else 'off'} -c max_connections=60"
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", str(_TIMEOUT), "-D", str(self.data),
            "-l", str(self.log), "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends the sessions in progress, ``immediate`` crashes."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def url(
        self,
        user: str = WRITER,
        password: str = WRITER_PASSWORD,
        database: str = "postgres",
    ) -> str:
        """A ``postgresql://`` URL on the loopback port."""
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str, database: str = "postgres") -> list[Any]:
        """Run *statements* as the superuser (autocommit); the last one's rows."""
        import psycopg

        rows: list[Any] = []
        with psycopg.connect(
            self.url(ADMIN, ADMIN_PASSWORD, database), autocommit=True
        ) as conn:
            for statement in statements:
                cursor = conn.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def database(self, *, schema: bool = True) -> str:
        """
        A fresh database; with *schema*, the store's schema owned by the writer.

        The writer may only connect and use its own schema (no CREATE on the
        database or on ``public``); the reader may only read that schema's
        tables. Returns the database's name.
        """
        name = f"store_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        statements = [
            "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            f"REVOKE CREATE, TEMPORARY ON DATABASE {name} FROM PUBLIC",
        ]
        if schema:
            statements += [
                f"CREATE SCHEMA context_trace AUTHORIZATION {WRITER}",
                f"GRANT USAGE ON SCHEMA context_trace TO {READER}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {WRITER} IN SCHEMA context_trace"
                f" GRANT SELECT ON TABLES TO {READER}",
            ]
        self.admin(*statements, database=name)
        return name

    def close(self) -> None:
        """Stop the server and remove its directory."""
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
