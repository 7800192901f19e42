"""Named testbeds as users run them: long names, atomic numbering, owners, teardown that waits, exec's
exit statuses, and bad input (one line, exit 2, nothing created). Real commands, real namespaces."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netns import namespace, registry
from netns.namespace import NamespaceError, check_testbed_name
from netns.waiting import wait_until
from tests.testbed.wire import read_until

VERIFIER = [sys.executable, "-m", "verifier.cli"]


def owner_env(uid: int) -> dict:
    """The environment of a command run by `sudo` for user `uid`: the testbeds it brings up are its.
    Each test uses uids no one else has, so `down --all` never touches another run's testbeds."""
    return dict(os.environ, SUDO_UID=str(uid))


def fake_uid(k: int = 0) -> int:
    return 3_000_000 + (os.getpid() % 100_000) * 10 + k


def verifier(*args, uid=None, input=None, timeout=60):
    env = owner_env(uid) if uid is not None else None
    return subprocess.run([*VERIFIER, *args], capture_output=True, text=True, input=input, timeout=timeout,
                          env=env)


def wait_for(check, what: str, timeout: float = 30):
    """Poll `check()` until it is true (netns.waiting.wait_until); return its value."""
    return wait_until(check, timeout, lambda: AssertionError(f"no {what} within {timeout} s"))


def netns_of(name: str) -> list[str]:
    return sorted(n for n in namespace.list_names() if (namespace.parse_named(n) or ("",))[0] == name)


@pytest.fixture
def names(root):
    """Testbed names for this test; whatever of them exists at the end is removed."""
    made: list[str] = []

    def new(suffix: str) -> str:
        made.append(check_testbed_name(suffix))
        return suffix

    yield new
    for n in made:
        verifier("testbed", "down", n)


CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], 5000), timeout=1).close(); print('connected')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except OSError as e: print('failed', type(e).__name__)\n")


def connect(name: str, address: str) -> str:
    res = verifier("testbed", "exec", name, "client", "--", sys.executable, "-c", CONNECT, address)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


# -- names --------------------------------------------------------------------------------------

@pytest.mark.parametrize("good", ["a", "7", "lab", "lab-2", "my_lab", "x" * 32, "0-_-_-9", "tv00abc0"])
def test_names_people_choose_are_accepted(good):
    assert check_testbed_name(good) == good
    for host in ("client", "router", "server", "h" * namespace.HOST_NAME_MAX):
        netns = f"{namespace.named_tag(good)}-{host}"
        # The namespace names the whole testbed name, is a file name, and reads back to (name, host);
        # it can never be taken for a run's namespace (which `verifier clean` removes).
        assert len(netns) <= namespace.NETNS_NAME_MAX <= namespace.NAME_MAX
        assert namespace.parse_named(netns) == (good, host)
        assert not namespace.NAME_RE.match(netns)


@pytest.mark.parametrize("bad, why", [
    ("", "cannot be empty"),
    ("x" * 33, "is 33 characters long, the limit is 32"),
    ("Bad/Name", "contains '/'"),
    ("Lab", "has upper-case letters (names are lower case: 'lab')"),
    ("-lab", "starts with '-'"),
    ("_lab", "starts with '_'"),
    ("a b", "contains ' '"),
    ("café", "contains 'é'"),
    ("a.b", "contains '.'"),
])
def test_bad_names_are_refused_saying_why(bad, why):
    with pytest.raises(NamespaceError) as exc:
        check_testbed_name(bad)
    msg = str(exc.value)
    assert why in msg and "use 1 to 32 lower-case letters, digits, '-' or '_'" in msg and "\n" not in msg


def test_a_runs_namespace_is_never_taken_for_a_named_one():
    assert namespace.parse_named("tv00abc0-client") is None
    assert namespace.NAME_RE.match("tv00abc0-client")


def test_two_long_names_with_a_common_prefix_are_two_testbeds(names):
    prefix = f"long-{os.getpid()}-".ljust(30, "x")
    a, b = names(prefix + "-1"), names(prefix + "-2")
    assert len(a) == len(b) == 32 and a[:30] == b[:30]
    beds = {}
    for n in (a, b):
        up = verifier("testbed", "up", "--name", n, "--ipv4", "--json")
        assert up.returncode == 0, up.stderr
        beds[n] = json.loads(up.stdout)
        assert beds[n]["name"] == n
    # Both up at once, in namespaces of their own, with the short fixed interface names.
    ns_a = sorted(h["netns"] for h in beds[a]["hosts"].values())
    ns_b = sorted(h["netns"] for h in beds[b]["hosts"].values())
    assert not set(ns_a) & set(ns_b)
    assert netns_of(a) == ns_a and netns_of(b) == ns_b
    assert {h: [i["name"] for i in v["interfaces"]] for h, v in beds[a]["hosts"].items()} == \
        {"client": ["c0"], "router": ["r0", "r1"], "server": ["s0"]}
    listed = {x["name"]: x for x in json.loads(verifier("testbed", "list", "--json").stdout)}
    assert listed[a]["status"] == listed[b]["status"] == "up"
    # `verifier clean` touches neither (only the namespaces of dead runs).
    clean = json.loads(verifier("clean", "--dry-run", "--json").stdout)
    assert not {r["netns"] for r in clean["would_remove"]} & set(ns_a + ns_b)

    # Used: a server in a's server host only. a's client connects; b's, to the same address, is refused.
    server_addr = beds[a]["hosts"]["server"]["interfaces"][0]["addresses"][0].split("/")[0]
    srv = subprocess.Popen([*VERIFIER, "testbed", "exec", a, "server", "--", sys.executable, "-c",
                            "import socket\ns = socket.create_server(('0.0.0.0', 5000))\nprint('ready', flush=True)\n"
                            "while True: s.accept()[0].close()"], stdout=subprocess.PIPE, bufsize=0)
    try:
        read_until(srv.stdout, "ready")
        assert connect(a, server_addr) == "connected"
        assert connect(b, server_addr) == "refused"
        # A fault on a's router (an nft table named after the long name) acts on a alone.
        inj = subprocess.Popen([*VERIFIER, "inject", "drop", a, "--flags", "syn", "--dport", "5000",
                                "--duration", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               bufsize=0)
        read_until(inj.stderr, "Ctrl-C to remove it sooner")
        assert connect(a, server_addr) == "failed TimeoutError"
        assert connect(b, server_addr) == "refused"
        inj.send_signal(signal.SIGINT)
        report = json.loads(inj.communicate(timeout=30)[0])
        assert inj.returncode == 0 and report["fault"] == "drop" and report["matched"] >= 1
        assert connect(a, server_addr) == "connected"
    finally:
        srv.kill()
        srv.communicate()
    # Down one: the other stays up and usable; then the other.
    down = verifier("testbed", "down", a, "--json")
    assert down.returncode == 0 and json.loads(down.stdout) == {"removed": [a]}, down.stderr
    assert not netns_of(a) and netns_of(b) == ns_b
    assert connect(b, server_addr) == "refused"
    assert verifier("testbed", "down", b).returncode == 0
    assert not netns_of(b)
    # Nothing of either is left: no record, no working folder (here or in the temporary folder).
    import tempfile

    for n in (a, b):
        assert not registry.path_of(n).exists() and not registry.workdir_of(n).exists()
        assert not list(Path(tempfile.gettempdir()).glob(f"tn{n}-*"))


# -- taking a name ------------------------------------------------------------------------------

def test_parallel_up_without_a_name_each_get_their_own_number(root):
    uid = fake_uid()
    n = 6
    procs = [subprocess.Popen([*VERIFIER, "testbed", "up", "--topology", "pair", "--ipv4", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=owner_env(uid))
             for _ in range(n)]
    try:
        results = [(p.wait(60), *p.communicate()) for p in procs]
        assert [(rc, err) for rc, _, err in results] == [(0, "")] * n
        got = [json.loads(out)["name"] for _, out, _ in results]
        assert len(set(got)) == n and all(g.isdigit() for g in got)
        for g in got:
            entry = registry.read(g)
            assert entry["owner_uid"] == uid and registry.status(entry) == "up"
            assert len(netns_of(g)) == 2
    finally:
        down = verifier("testbed", "down", "--all", uid=uid)
    assert down.returncode == 0, down.stderr
    assert all(registry.read(g) is None and not netns_of(g) for g in got)


def _reserve_lowest_in(state_dir: str, queue) -> None:
    registry.STATE_DIR = Path(state_dir)
    queue.put(registry.reserve_lowest(topology="pair", family="ipv4"))


def test_the_lowest_free_number_is_taken_atomically(tmp_path, monkeypatch):
    """The registry on a directory of its own, so that the numbers are known: with 1 and 3 taken,
    the next are 2, then 4; then 8 processes at once get 5 to 12, each its own."""
    import multiprocessing

    monkeypatch.setattr(registry, "STATE_DIR", tmp_path)
    for taken in ("1", "3"):
        registry.reserve(taken, topology="pair", family="ipv4")
    assert registry.reserve_lowest(topology="pair", family="ipv4") == "2"
    assert registry.reserve_lowest(topology="pair", family="ipv4") == "4"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_reserve_lowest_in, args=(str(tmp_path), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    got = sorted(int(queue.get(timeout=30)) for _ in procs)
    for p in procs:
        p.join(10)
    assert got == list(range(5, 13))
    assert sorted(registry.names(), key=int) == [str(i) for i in range(1, 13)]
    assert {registry.read(str(i))["created_by_pid"] for i in range(5, 13)} == {p.pid for p in procs}


def test_a_taken_name_is_refused_without_suggesting_clean(names):
    name = names(f"taken-{os.getpid()}")
    assert verifier("testbed", "up", "--name", name, "--topology", "pair").returncode == 0
    before = netns_of(name)
    again = verifier("testbed", "up", "--name", name, "--topology", "pair")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [again.stderr.strip()]
    assert f"a testbed named {name} already exists" in again.stderr
    assert f"verifier testbed down {name}" in again.stderr and "clean" not in again.stderr
    assert netns_of(name) == before and registry.status(registry.read(name)) == "up"


def test_a_half_built_testbed_is_listed_and_removed_by_down(names):
    """What a `testbed up` killed half-way leaves: its reservation and a namespace. Made here with the
    real registry and a real namespace, owned by a process that is gone."""
    name = names(f"half-{os.getpid()}")
    gone = subprocess.Popen(["true"])
    gone.wait()
    registry.STATE_DIR.mkdir(parents=True, exist_ok=True)
    registry.path_of(name).write_text(json.dumps({"name": name, "state": "creating", "topology": "pair",
                                                  "family": "ipv4", "owner_uid": fake_uid(),
                                                  "created_by_pid": gone.pid}))
    namespace.create(f"{namespace.named_tag(name)}-client")
    listed = [b for b in json.loads(verifier("testbed", "list", "--json").stdout) if b["name"] == name]
    assert [b["status"] for b in listed] == ["abandoned"]
    again = verifier("testbed", "up", "--name", name)
    assert again.returncode == 2 and "clean" not in again.stderr
    assert f"left half-built by process {gone.pid}, which is gone" in again.stderr
    down = verifier("testbed", "down", name)
    assert down.returncode == 0, down.stderr
    assert registry.read(name) is None and not netns_of(name)


def test_a_leftover_namespace_without_a_record_names_the_command_that_removes_it(names):
    name = names(f"left-{os.getpid()}")
    namespace.create(f"{namespace.named_tag(name)}-client")  # e.g. /run/tcp-verifier was emptied by hand
    up = verifier("testbed", "up", "--name", name, "--topology", "pair")
    assert up.returncode == 2 and "clean" not in up.stderr
    assert f"belongs to the testbed named {name}" in up.stderr and f"verifier testbed down {name}" in up.stderr
    assert netns_of(name) == [f"tn{name}-client"] and registry.read(name) is None  # the failed up undid its part
    assert verifier("testbed", "down", name).returncode == 0
    assert not netns_of(name)


def test_already_exists_suggests_clean_only_for_what_clean_removes(root):
    """`verifier clean` removes the namespaces of runs whose process is gone, and nothing else: only
    for those does "already exists" point to it."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_run = f"{namespace.run_tag(gone.pid)}z-client"
    live_run = f"{namespace.run_tag()}z-client"
    named = f"{namespace.named_tag(f'exists-{os.getpid()}')}-client"
    made = []
    try:
        for ns in (dead_run, live_run, named):
            namespace.create(ns)
            made.append(ns)
        messages = {}
        for ns in made:
            with pytest.raises(NamespaceError) as exc:
                namespace.create(ns)
            messages[ns] = str(exc.value)
    finally:
        for ns in made:
            namespace.remove(ns)
    assert f"left by the run of process {gone.pid}, which is gone: run `verifier clean`" in messages[dead_run]
    assert "still running" in messages[live_run] and "clean" not in messages[live_run]
    assert f"verifier testbed down exists-{os.getpid()}" in messages[named] and "clean" not in messages[named]


# -- owners -------------------------------------------------------------------------------------

def test_down_all_removes_only_the_callers_own(root):
    me, other = fake_uid(1), fake_uid(2)
    mine, theirs = [], []
    try:
        for uid, made in ((me, mine), (me, mine), (other, theirs)):
            up = verifier("testbed", "up", "--topology", "pair", "--ipv4", "--json", uid=uid)
            assert up.returncode == 0, up.stderr
            made.append(json.loads(up.stdout)["name"])
        down = verifier("testbed", "down", "--all", "--json", uid=me)
        assert down.returncode == 0, down.stderr
        report = json.loads(down.stdout)
        assert sorted(report["removed"]) == sorted(mine)
        assert [x["name"] for x in report["left_alone"] if x["owner_uid"] == other] == theirs
        assert all(registry.read(n) is None and not netns_of(n) for n in mine)
        assert registry.status(registry.read(theirs[0])) == "up" and len(netns_of(theirs[0])) == 2
        # In words: one line per testbed left alone, with how to remove it.
        text = verifier("testbed", "down", "--all", uid=me)
        assert text.returncode == 0 and text.stdout.splitlines()[0] == "removed nothing"
        assert (f"left alone {theirs[0]} (owned by uid {other}): remove it by its name: "
                f"verifier testbed down {theirs[0]}") in text.stdout.splitlines()
        assert registry.status(registry.read(theirs[0])) == "up"
    finally:
        verifier("testbed", "down", "--all", uid=me)
        last = verifier("testbed", "down", "--all", "--json", uid=other)
    assert json.loads(last.stdout)["removed"] == theirs and not netns_of(theirs[0])


# -- teardown waits -----------------------------------------------------------------------------

HOG_MB = 512  # a process this big takes tens of ms to exit after SIGKILL (its memory is freed first)


@pytest.mark.parametrize("how", ["command", "api"])
def test_down_returns_only_after_the_testbeds_processes_are_gone(names, tmp_path, how):
    """`verifier testbed down` as a user runs it, and `Testbed.down()` in this process: the second is
    checked microseconds after it returns, so a teardown that did not wait would be caught there even
    when the exit of the command's own interpreter gives the processes time to die."""
    from netns import Testbed

    name = names(f"procs-{how}-{os.getpid()}")
    assert verifier("testbed", "up", "--name", name, "--topology", "pair", "--ipv4").returncode == 0

    def pidfile(tag: str) -> Path:
        return tmp_path / f"{tag}.pid"

    programs = {
        # holds a lot of memory, so its exit takes a while
        "hog": [sys.executable, "-c", f"import os, sys, time\nb = b'x' * ({HOG_MB} << 20)\n"
                f"open({str(pidfile('hog'))!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)"],
        # ignores SIGTERM, has a child
        "stubborn": ["sh", "-c", f"trap '' TERM; echo $$ > {pidfile('stubborn')}; "
                                 f"sleep 300 & echo $! > {pidfile('child')}; wait"],
        # leaves its session and process group: only the namespace says it is the testbed's
        "daemon": ["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile('daemon')}; exec sleep 300' "
                               f"</dev/null >/dev/null 2>&1 &"],
    }
    started = [subprocess.Popen([*VERIFIER, "testbed", "exec", name, host, "--", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for host, argv in (("server", programs["hog"]), ("client", programs["stubborn"]),
                                  ("server", programs["daemon"]))]
    tags = ("hog", "stubborn", "child", "daemon")
    pids = wait_for(lambda: all(pidfile(t).exists() and pidfile(t).read_text().strip() for t in tags)
                    and [int(pidfile(t).read_text()) for t in tags], "pid files")
    in_bed = set(namespace.pids_in(netns_of(name)))
    assert set(pids) <= in_bed, (pids, in_bed)
    if how == "command":
        down = verifier("testbed", "down", name)
        assert down.returncode == 0 and down.stdout == f"removed {name}\n", down.stderr
    else:
        Testbed.attach(name).down()
    # Right after `down` returns: every one of them is gone (or a zombie: it runs no more code).
    assert [p for p in pids if namespace.pid_alive(p)] == []
    assert not netns_of(name)
    for p in started:
        p.wait(10)


# -- exec's exit status -------------------------------------------------------------------------

def test_exec_exit_statuses_are_those_of_a_shell(names, tmp_path):
    name = names(f"exec-{os.getpid()}")
    assert verifier("testbed", "up", "--name", name, "--topology", "pair", "--ipv4").returncode == 0
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    not_executable.chmod(0o644)
    missing = f"no-such-program-{os.getpid()}"
    for argv in ([missing], [str(tmp_path / missing)], [str(not_executable)], [str(tmp_path)]):
        ours = verifier("testbed", "exec", name, "client", "--", *argv)
        # What a shell answers for the same command, in the same host.
        shell = verifier("testbed", "exec", name, "client", "--", "sh", "-c", '"$@"', "sh", *argv)
        assert shell.returncode in (126, 127)
        assert ours.returncode == shell.returncode, (argv, ours.stderr)
        lines = ours.stderr.strip().splitlines()
        assert len(lines) == 1 and argv[0] in lines[0] and "Traceback" not in ours.stderr
        assert ("command not found" if shell.returncode == 127 else "not an executable file") in lines[0]
    # Other statuses, stdout and stdin pass through as they are.
    for status in (0, 1, 3, 125, 128):
        res = verifier("testbed", "exec", name, "server", "--", "sh", "-c", f"cat; exit {status}", input="in\n")
        assert (res.returncode, res.stdout, res.stderr) == (status, "in\n", "")


# -- bad input ----------------------------------------------------------------------------------

def _snapshot() -> tuple[set[str], set[str]]:
    try:
        entries = {p.name for p in registry.STATE_DIR.iterdir()}
    except FileNotFoundError:
        entries = set()
    return entries, set(namespace.list_names())


def _made_by(pid: int, before: tuple[set[str], set[str]], words: list[str]) -> list[str]:
    """What appeared since `before` that the command with this pid made: registry entries and named
    namespaces of its record, run namespaces of its pid, and anything named after its bad input
    (`words`). Other tests run beside this one: what they make is not counted."""
    entries, netns = _snapshot()
    made = []
    for e in entries - before[0]:
        if any(e == w or e.startswith(w + ".") for w in words) or \
                e.endswith(".json") and (registry.read(e[:-5]) or {}).get("created_by_pid") == pid:
            made.append(e)
    for n in netns - before[1]:
        run, named = namespace.NAME_RE.match(n), namespace.parse_named(n)
        if any(n.startswith(f"tn{w}-") for w in words) or run and int(run["pid"], 36) == pid or \
                named and (registry.read(named[0]) or {}).get("created_by_pid") == pid:
            made.append(n)
    return made


BAD_NAMES = ["", "Bad/Name", "x" * 33, "Lab", "a b"]


def words_of(bad: str) -> list[str]:
    """Names a command might have made out of this bad name (as it is, cut, lower-cased, split at '/')."""
    return [w for w in {bad, bad.lower(), bad[:32], bad.lower()[:32], *bad.split("/")} if w]


@pytest.fixture
def existing(names):
    name = names(f"bad-in-{os.getpid()}")
    assert verifier("testbed", "up", "--name", name, "--topology", "pair", "--ipv4").returncode == 0
    return name


def bad_inputs(existing: str) -> list[tuple[list[str], str, list[str]]]:
    """(arguments, what the one line must say, names the command must not have made)."""
    unknown = f"nosuch-{os.getpid()}"
    cases = []
    for bad in BAD_NAMES:
        cases += [(["testbed", "up", "--name", bad, "--topology", "pair"], "testbed name", words_of(bad)),
                  (["testbed", "exec", bad, "client", "--", "true"], "testbed name", words_of(bad)),
                  (["testbed", "down", bad], "testbed name", words_of(bad))]
    cases += [
        (["testbed", "up", "--name=-lab"], "testbed name '-lab' starts with '-'", ["-lab"]),
        (["testbed", "exec", unknown, "client", "--", "true"], f"no testbed named {unknown}", [unknown]),
        (["testbed", "down", unknown], f"no testbed named {unknown}", [unknown]),
        (["testbed", "exec", existing, "nohost", "--", "true"], f"testbed {existing} has no host 'nohost'", []),
        (["testbed", "exec", existing, "router", "--", "true"], "has no host 'router'; it has client, server", []),
        (["testbed", "exec", existing, "client"], "give the command to run after --", []),
        (["testbed", "exec", existing, "client", "--"], "give the command to run after --", []),
        (["testbed", "down"], "say which testbed", []),
        (["testbed", "down", existing, "--all"], "give a testbed name or --all, not both", []),
        (["testbed", "up", "--name", existing], f"a testbed named {existing} already exists", []),
        (["testbed", "up", "--topology", "ring"], "invalid choice: 'ring'", []),
        (["testbed", "up", "--ipv4", "--ipv6"], "not allowed with argument", []),
        (["testbed", "frobnicate"], "invalid choice: 'frobnicate'", []),
    ]
    return cases


def test_bad_input_is_one_line_exit_2_and_creates_nothing(existing):
    cases = bad_inputs(existing)
    assert len(cases) == 3 * len(BAD_NAMES) + 13
    processes_before = set(namespace.pids_in(netns_of(existing)))
    for args, message, words in cases:
        before = _snapshot()
        proc = subprocess.Popen([*VERIFIER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (args, proc.returncode, err)
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("verifier: "), (args, err)
        assert "Traceback" not in err and out == "", (args, out)
        assert _made_by(proc.pid, before, words) == [], args
    # Nothing ran in the testbed that was there, and it is as it was.
    assert set(namespace.pids_in(netns_of(existing))) == processes_before
    assert registry.status(registry.read(existing)) == "up"
