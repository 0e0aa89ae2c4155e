"""Run a command under a unit's syscall filter, address families and MemoryDenyWriteExecute, without
systemd: ``python tests/unit_sandbox.py deploy/quartier.service -- quartier demo ...``.

The machine running the tests has no systemd as PID 1, so the units cannot be started. This applies
what of them the kernel enforces for the process itself, as systemd would, and then execs the command:

- ``SystemCallFilter=`` (the groups expanded by ``systemd-analyze syscall-filter``, in order: allow
  lists add, ``~`` lists remove) through libseccomp, every other system call failing with
  ``SystemCallErrorNumber=`` (or killing the process with ``--kill``, to find what a service calls);
- ``RestrictAddressFamilies=`` as systemd does it: ``socket()`` refused for any other family;
- ``MemoryDenyWriteExecute=`` with the seccomp rules systemd 252 (Debian 12) installs: ``mmap`` of
  writable+executable memory, ``mprotect``/``pkey_mprotect`` adding execute and ``shmat`` with
  ``SHM_EXEC`` fail with EPERM;
- ``NoNewPrivileges=``.

Not applied here: the mount namespace (ProtectSystem, ReadWritePaths ...), the device cgroup, users
and capabilities: they need root and systemd's namespace set-up.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def SCMP_ACT_ERRNO(code: int) -> int:  # noqa: N802 - libseccomp's macro
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


_GROUPS: dict[str, set[str]] = {}


def expand(name: str) -> set[str]:
    """A syscall group (``@system-service``) as system call names, as this systemd defines it."""
    if not name.startswith("@"):
        return {name}
    if name not in _GROUPS:
        text = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
        names: set[str] = set()
        for line in text.splitlines()[1:]:
            item = line.strip()
            if item and not item.startswith("#"):
                names |= expand(item)
        _GROUPS[name] = names
    return _GROUPS[name]


def allowed_syscalls(filters: list[str]) -> set[str]:
    allowed: set[str] = set()
    for value in filters:
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)  # a dependency of Debian's systemd package
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _deny_write_execute(lib: ctypes.CDLL) -> None:
    """A filter of its own, as systemd's (stacked filters: the strictest answer wins)."""
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    rules = [("mmap", 2, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC), ("mprotect", 2, PROT_EXEC, PROT_EXEC),
             ("pkey_mprotect", 2, PROT_EXEC, PROT_EXEC), ("shmat", 2, SHM_EXEC, SHM_EXEC)]
    for name, arg, mask, value in rules:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == -1:
            continue
        cmp = _ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value)
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errno.EPERM), nr, 1, ctypes.byref(cmp))
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load (MemoryDenyWriteExecute)")


def apply(unit: Path, *, kill: bool = False) -> None:
    s = unit_settings(unit)
    libc = ctypes.CDLL(None, use_errno=True)
    if s.get("NoNewPrivileges") == ["true"] and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    lib = _libseccomp()
    if s.get("MemoryDenyWriteExecute") == ["true"]:
        _deny_write_execute(lib)
    filters = s.get("SystemCallFilter", [])
    if not filters:
        return
    errname = (s.get("SystemCallErrorNumber") or ["EPERM"])[0]
    default = SCMP_ACT_KILL_PROCESS if kill else SCMP_ACT_ERRNO(getattr(errno, errname))
    ctx = lib.seccomp_init(default)
    allowed = allowed_syscalls(filters)
    families = (s.get("RestrictAddressFamilies") or [""])[0].split()
    for name in sorted(allowed):
        if name == "socket" and families:
            continue
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == -1:  # not a system call of this architecture
            continue
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None)
        if rc < 0 and rc != -errno.EEXIST:
            raise OSError(-rc, f"seccomp_rule_add {name}")
    if families and "socket" in allowed:  # socket(family, ...) for the listed families only
        nr = lib.seccomp_syscall_resolve_name(b"socket")
        for fam in families:
            cmp = _ArgCmp(0, SCMP_CMP_EQ, int(getattr(socket, fam)), 0)
            rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, ctypes.byref(cmp))
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add socket {fam}")
        # any other family: EAFNOSUPPORT, as systemd answers
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def main(argv: list[str]) -> None:
    kill = argv[:1] == ["--kill"]
    if kill:
        argv = argv[1:]
    unit, sep, *command = argv
    assert sep == "--" and command, "usage: unit_sandbox.py [--kill] UNIT -- COMMAND ..."
    apply(Path(unit), kill=kill)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
