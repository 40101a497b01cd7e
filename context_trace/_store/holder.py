"""
Lease holders: which process holds an outbox lease, and whether it still lives.

A lease names its holder as ``host/boot/pid/start``: the host name, the kernel's
boot id, the process id and the process's start time (in clock ticks since boot,
from ``/proc/<pid>/stat``). A holder on this host and boot is alive when a process
with that pid exists and started at that time, so neither a SIGKILLed process nor
a later process that reused its pid keeps a lease. A holder on another host (a
store on a shared disk) or from an earlier boot cannot be checked the same way:
one from an earlier boot is dead, one from another host is trusted until its lease
expires.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

__all__ = ["current", "is_alive"]

_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def _boot_id() -> str:
    try:
        with open(_BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip()
    except OSError:  # not Linux: no boot id, liveness falls back to the pid alone
        return "-"


def _start_time(pid: int) -> str | None:
    """The start time of process *pid* in clock ticks since boot, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split
    # after its closing parenthesis. starttime is field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode("ascii") if len(fields) > 19 else None


@lru_cache(maxsize=1)
def _host_and_boot() -> tuple[str, str]:
    return socket.gethostname().replace("/", "_"), _boot_id()


def current() -> str:
    """This process's holder name (computed per call: a forked child differs)."""
    host, boot = _host_and_boot()
    pid = os.getpid()
    return f"{host}/{boot}/{pid}/{_start_time(pid) or '-'}"


def is_alive(holder: str) -> bool:
    """Whether the process named by *holder* may still be running."""
    try:
        host, boot, pid_text, start = holder.split("/")
        pid = int(pid_text)
    except ValueError:
        return False  # not a holder name this version writes: treat it as gone
    my_host, my_boot = _host_and_boot()
    if host != my_host:
        return True  # another machine's process: only its lease expiry frees it
    if boot != my_boot:
        return False  # the machine restarted since: every process of then is gone
    if pid == os.getpid():
        return start == (_start_time(pid) or "-")
    if start != "-":
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
