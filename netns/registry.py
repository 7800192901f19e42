"""The registry of named testbeds: one JSON file per name under /run/tcp-verifier/testbeds/.

A name is taken by creating its file with O_CREAT|O_EXCL, before anything else of the testbed
exists: of two commands wanting the same name (or the lowest free number) at the same moment, exactly
one gets it, the other is told the name is taken and has created nothing. The file first holds a
*reservation* (state "creating": who is building it, for whom); once the testbed is up it is replaced,
atomically (write a temporary file, rename it over), by the full record. /run is a tmpfs, so the
registry disappears at reboot together with the namespaces it describes.

Each entry records its owner: the user who asked for it (SUDO_UID under sudo, else the uid), so that
`verifier testbed down --all` removes only the caller's own testbeds.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
from pathlib import Path

from . import namespace

STATE_DIR = Path("/run/tcp-verifier/testbeds")
MAX_NUMBERED = 10_000  # `testbed up` without a name tries 1, 2, ... up to this


class NameTaken(Exception):
    """The name's registry entry already exists."""

    def __init__(self, name: str, entry: dict | None):
        super().__init__(name)
        self.name = name
        self.entry = entry


def caller_uid() -> int:
    """The user a command acts for: the one who ran sudo (SUDO_UID), else the real uid."""
    sudo = os.environ.get("SUDO_UID", "")
    return int(sudo) if sudo.isdigit() else os.getuid()


def user_name(uid: int | None) -> str:
    if uid is None:
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def path_of(name: str) -> Path:
    return STATE_DIR / f"{namespace.check_testbed_name(name)}.json"


def workdir_of(name: str) -> Path:
    return STATE_DIR / f"{namespace.check_testbed_name(name)}.d"


def reserve(name: str, *, topology: str, family: str) -> Path:
    """Take the name, atomically; NameTaken if its entry exists (whatever state it is in)."""
    path = path_of(name)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "state": "creating", "topology": topology, "family": family,
             "owner_uid": caller_uid(), "created_by_pid": os.getpid()}
    # Written aside, then linked into place: link() fails if the name exists, so taking the name
    # is one atomic step, and no reader ever sees an empty entry.
    tmp = _write_aside(path, entry)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise NameTaken(name, read(name)) from None
    finally:
        tmp.unlink()
    return path


def _write_aside(path: Path, entry: dict) -> Path:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    tmp.write_text(json.dumps(entry, indent=2) + "\n")
    return tmp


_tmp_counter = itertools.count()


def reserve_lowest(*, topology: str, family: str) -> str:
    """Take the lowest free number as a name ("1", "2", ...), atomically, and return it."""
    for i in itertools.count(1):
        if i > MAX_NUMBERED:
            break
        try:
            reserve(str(i), topology=topology, family=family)
            return str(i)
        except NameTaken:
            continue
    raise NameTaken(f"1..{MAX_NUMBERED}", None)


def write(name: str, entry: dict) -> Path:
    """Replace the name's entry with `entry` in one step: a reader sees the old or the new one."""
    path = path_of(name)
    os.replace(_write_aside(path, entry), path)
    return path


def read(name: str) -> dict | None:
    """The entry of `name`, None if there is none (state "unreadable" if it cannot be parsed)."""
    try:
        text = path_of(name).read_text()
    except FileNotFoundError:
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return {"name": name, "state": "unreadable"}
    entry.setdefault("state", "up")  # records written before reservations existed
    return entry


def remove(name: str) -> None:
    path_of(name).unlink(missing_ok=True)


def names() -> list[str]:
    """Every registered name, in order."""
    try:
        found = [p.name[:-5] for p in STATE_DIR.iterdir() if p.name.endswith(".json")]
    except FileNotFoundError:
        return []
    return sorted(n for n in found if namespace.TESTBED_NAME_RE.fullmatch(n))


def status(entry: dict) -> str:
    """What an entry stands for now:

    * "up": complete, and every namespace it lists exists;
    * "broken": complete, but namespaces are missing;
    * "creating": a reservation whose creator is still running;
    * "abandoned": a reservation whose creator is gone (killed while building the testbed);
    * "unreadable": the entry is not a record.
    """
    if entry.get("state") == "unreadable":
        return "unreadable"
    if entry.get("state") == "creating":
        pid = entry.get("created_by_pid")
        return "creating" if isinstance(pid, int) and namespace.pid_alive(pid) else "abandoned"
    hosts = entry.get("hosts") or {}
    return "up" if hosts and all(namespace.exists(h["netns"]) for h in hosts.values()) else "broken"
