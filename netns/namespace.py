"""Named network namespaces: create, enter, list and remove them, and the per-run naming scheme.

Namespaces are created the way `ip netns add` does it (a bind mount of the namespace under
/run/netns), but without forking: a short-lived thread unshares its own network namespace and
bind-mounts it. `setns()` only changes the calling thread, so the rest of the process stays in the
namespace it started in. Entering a namespace (`inside`) is also per thread and always restores the
thread's previous namespace.

Two naming schemes, both `<tag>-<host>`, parsed at the last `-` (host names have none):

* a run's testbed: `tv` + the owner's pid in base 36 (five characters) + one counter character, so
  that parallel runs never collide and `verifier clean` can tell which leftovers belong to a run
  whose process is gone;
* a named testbed (`verifier testbed up --name N`): `tn` + the name, which is 1 to 32 lower-case
  letters, digits, `-` or `_`. The whole name is kept, so distinct names give distinct namespaces
  (however long their common prefix), and the length is bounded by construction (see NETNS_NAME_MAX).

Interface names carry no tag: they live inside the testbed's own namespaces (see netns.testbed).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
IFNAMSIZ = 15  # the kernel's limit for an interface name (16 bytes with the NUL)
NAME_MAX = 255  # a namespace is a file under /run/netns: the limit of a file name
TESTBED_NAME_MAX = 32
HOST_NAME_MAX = 15  # a host's name in a topology: [a-z0-9], this long at most
# The longest namespace name either scheme can make; NAME_MAX holds by construction.
NETNS_NAME_MAX = max(len("tv") + 5 + 1, len("tn") + TESTBED_NAME_MAX) + 1 + HOST_NAME_MAX
assert NETNS_NAME_MAX <= NAME_MAX

CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# tv<pid:5 base36><bed:1 base36>-<host>: a run's testbed, removed with the run (or by `verifier clean`)
NAME_RE = re.compile(r"^tv(?P<pid>[0-9a-z]{5})(?P<bed>[0-9a-z])-(?P<host>[a-z0-9]+)$")
# tn<name>-<host>: a named testbed that outlives the command that made it (`verifier testbed up`)
TESTBED_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,%d}" % (TESTBED_NAME_MAX - 1))
NAMED_RE = re.compile(rf"^tn(?P<name>{TESTBED_NAME_RE.pattern})-(?P<host>[a-z0-9]{{1,{HOST_NAME_MAX}}})$")
TESTBED_NAME_RULE = (f"use 1 to {TESTBED_NAME_MAX} lower-case letters, digits, '-' or '_', "
                     "starting with a letter or digit")


def check_testbed_name(name: str) -> str:
    """A testbed name: 1 to 32 lower-case letters, digits, `-` or `_`, starting with a letter or digit.

    Lower case only, so that `Lab` and `lab` can never be two testbeds; the message says what is
    wrong with the name, in one line."""
    if not isinstance(name, str) or not name:
        raise NamespaceError(f"a testbed name cannot be empty: {TESTBED_NAME_RULE}")
    if TESTBED_NAME_RE.fullmatch(name):
        return name
    shown = repr(name if len(name) <= 40 else name[:40] + "...")
    if len(name) > TESTBED_NAME_MAX:
        why = f"is {len(name)} characters long, the limit is {TESTBED_NAME_MAX}"
    elif "/" in name:
        why = "contains '/'"
    elif name.lower() != name and TESTBED_NAME_RE.fullmatch(name.lower()):
        why = f"has upper-case letters (names are lower case: {name.lower()!r})"
    elif name[0] in "-_":
        why = f"starts with {name[0]!r}"
    else:
        bad = next(c for c in name if not re.fullmatch(r"[a-z0-9_-]", c))
        why = f"contains {bad!r}"
    raise NamespaceError(f"testbed name {shown} {why}: {TESTBED_NAME_RULE}")


def named_tag(name: str) -> str:
    """The tag of a named testbed's namespaces: `tn` + the whole name (never cut, so never shared)."""
    return "tn" + check_testbed_name(name)


def parse_named(netns: str) -> tuple[str, str] | None:
    """(testbed name, host) of a named testbed's namespace, or None for any other name."""
    m = NAMED_RE.match(netns)
    return (m["name"], m["host"]) if m else None


def is_testbed_namespace(name: str) -> bool:
    """Does this namespace belong to a testbed of this project (a run's or a named one)?"""
    return bool(NAME_RE.match(name) or NAMED_RE.match(name))


class NamespaceError(RuntimeError):
    """A namespace operation failed; the message says what and what to do."""


def _b36(n: int, width: int) -> str:
    s = ""
    while n:
        n, r = divmod(n, 36)
        s = _B36[r] + s
    return s.rjust(width, "0")


def run_tag(pid: int | None = None) -> str:
    """The per-run part of every name: `tv` + the owning pid in base 36."""
    return "tv" + _b36(os.getpid() if pid is None else pid, 5)


def check_ifname(name: str) -> str:
    """Refuse an interface name the kernel would reject, with a clear message."""
    if not name or len(name) > IFNAMSIZ:
        raise NamespaceError(f"interface name {name!r} is {len(name)} characters; the limit is {IFNAMSIZ}")
    if "/" in name or any(c.isspace() for c in name):
        raise NamespaceError(f"interface name {name!r} contains '/' or whitespace")
    return name


def _oserror(what: str, name: str) -> NamespaceError:
    err = ctypes.get_errno()
    hint = " (run as root: creating namespaces needs CAP_SYS_ADMIN)" if err in (errno.EPERM, errno.EACCES) else ""
    return NamespaceError(f"{what} for namespace {name}: {os.strerror(err)}{hint}")


_rundir_lock = threading.Lock()
_rundir_ready = False


def _prepare_rundir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so other tools see our namespaces."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
        d = str(NETNS_RUN_DIR).encode()
        if _libc.mount(b"none", d, b"none", MS_SHARED | MS_REC, None) != 0:
            if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
                raise _oserror("mounting /run/netns", "-")
            if _libc.mount(b"none", d, b"none", MS_SHARED | MS_REC, None) != 0:
                raise _oserror("sharing /run/netns", "-")
        _rundir_ready = True


def create(name: str) -> Path:
    """Create the named network namespace and return its path under /run/netns."""
    if os.geteuid() != 0:
        raise NamespaceError("creating network namespaces needs root: run with sudo")
    _prepare_rundir()
    path = NETNS_RUN_DIR / name
    if len(name) > NAME_MAX or "/" in name:
        raise NamespaceError(f"namespace name {name!r} is not a file name (at most {NAME_MAX} characters, no '/')")
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise NamespaceError(f"namespace {name} already exists{_in_use_by(name)}") from None
    failure: list[BaseException] = []

    def bind_new_namespace() -> None:
        # Only this throwaway thread moves to the new namespace; it ends right after.
        if _libc.unshare(CLONE_NEWNET) != 0:
            failure.append(_oserror("unshare(CLONE_NEWNET)", name))
            return
        if _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None) != 0:
            failure.append(_oserror("bind-mounting the namespace", name))

    t = threading.Thread(target=bind_new_namespace, name=f"netns-create-{name}")
    t.start()
    t.join()
    if failure:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise failure[0]
    return path


def _in_use_by(name: str) -> str:
    """Whose namespace this is, and the one command that frees it (`verifier clean` only for the
    leftovers it removes: a run's namespace whose process is gone)."""
    m = NAME_RE.match(name)
    if m:
        pid = int(m["pid"], 36)
        if pid_alive(pid):
            return f" (it belongs to the run of process {pid}, which is still running)"
        return f" (left by the run of process {pid}, which is gone: run `verifier clean`)"
    named = parse_named(name)
    if named:
        return (f" (it belongs to the testbed named {named[0]}: see `verifier testbed list`; "
                f"remove it with `verifier testbed down {named[0]}`)")
    return ""


def remove(name: str) -> None:
    """Remove a named namespace. The kernel frees it once no process or socket holds it."""
    path = NETNS_RUN_DIR / name
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def exists(name: str) -> bool:
    return (NETNS_RUN_DIR / name).exists()


def list_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def inode(name: str) -> int:
    return os.stat(NETNS_RUN_DIR / name).st_ino


@contextmanager
def inside(name: str):
    """Run the body with the *current thread* in the named namespace, then move it back.

    Sockets opened in the body (netlink, packet, /proc/sys files) stay bound to that namespace.
    """
    target = os.open(NETNS_RUN_DIR / name, os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise _oserror("setns", name)
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen for our own fd
                raise _oserror("returning from", name)
    finally:
        os.close(target)
        os.close(home)


def die_with_parent() -> None:
    """For `preexec_fn`: the forked child gets SIGKILL when the thread that forked it ends
    (PR_SET_PDEATHSIG), so a killed harness leaves no orphans behind."""
    _libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def enter_in_child(path: str) -> None:
    """For `preexec_fn`: move the forked child into the namespace, and make it die with its parent."""
    fd = os.open(path, os.O_RDONLY)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        os._exit(126)
    os.close(fd)
    die_with_parent()


@dataclass(frozen=True)
class Leftover:
    """A namespace named by this project."""

    name: str
    pid: int
    alive: bool


def ours() -> list[Leftover]:
    """Every namespace under /run/netns whose name follows this project's scheme."""
    found = []
    for name in list_names():
        m = NAME_RE.match(name)
        if m:
            pid = int(m["pid"], 36)
            found.append(Leftover(name, pid, pid_alive(pid)))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids_in(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of the named ones (found through /proc)."""
    inodes = set()
    for n in names:
        try:
            inodes.add(inode(n))
        except FileNotFoundError:
            pass
    if not inodes:
        return []
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                found.append(int(entry.name))
        except OSError:
            continue
    return found
