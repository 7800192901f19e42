"""Packet-level verifier of TCP socket behaviour on Linux network-namespace testbeds.

The names a user needs, from one place::

    from verifier import Testbed, Capture, Drop, Syn, expect, load_trace

    with Testbed("routed") as bed, Capture(bed, "run.pcapng") as cap:
        ...
    expect(cap.trace()).connection(dport=5000).handshake()
    expect(load_trace("saved.pcapng")).connection(dport=5000).refused()

Each name is imported on first use (PEP 562), so ``import verifier`` costs nothing: the analysis of a
saved capture never loads pyroute2 or Scapy, and a test run that builds no testbed never loads them
either. `_EXPORTS` is the one table of which module defines each name.
"""

import importlib
import os

if os.environ.get("VERIFIER_PURE") == "1":  # the plain-Python engine, for comparing with the compiled one
    from verifier import engine  # noqa: F401  (installs its import finder)

# name -> the module that defines it
_EXPORTS = {
    # the analysis of captures (pure: no root, no I/O beyond reading the file)
    "Trace": "verifier.analysis.trace",
    "Connection": "verifier.analysis.trace",
    "Event": "verifier.analysis.trace",
    "load_trace": "verifier.analysis.trace",
    "expect": "verifier.analysis.expect",
    "ExpectationFailed": "verifier.analysis.expect",
    # models of the SYN schedule and the timer tolerance
    "LinuxProfile": "verifier.analysis.schedules",
    "StevensProfile": "verifier.analysis.schedules",
    "SynSchedule": "verifier.analysis.schedules",
    "Tolerance": "verifier.analysis.schedules",
    "DEFAULT_TOLERANCE": "verifier.analysis.schedules",
    # the C programs' socket-call reports, and the merged packet/call timeline
    "SyscallEvent": "verifier.analysis.calls",
    "parse_report": "verifier.analysis.calls",
    "timeline": "verifier.analysis.calls",
    # conditions on a capture, as `verifier replay --expect` takes them
    "check": "verifier.analysis.conditions",
    "assert_expectations": "verifier.analysis.conditions",
    # testbeds, captures and faults (these need root and load pyroute2 or Scapy when used)
    "Testbed": "netns.testbed",
    "TestbedError": "netns.testbed",
    "Capture": "verifier.capture",
    "CaptureError": "verifier.capture",
    "inject": "verifier.faults",
    "Fault": "verifier.faults",
    "FaultError": "verifier.faults",
    "Match": "verifier.faults",
    "Syn": "verifier.faults",
    "Drop": "verifier.faults",
    "Reject": "verifier.faults",
    "IcmpUnreachable": "verifier.faults",
    "Rst": "verifier.faults",
    "Segment": "verifier.faults",
    "Blackhole": "verifier.faults",
    "Delay": "verifier.faults",
    "SynFlood": "verifier.faults",
    "KernelRstDrop": "verifier.faults",
    # scripted peers: Scapy plays one side of a connection against the real kernel
    "ScriptedPeer": "verifier.peer",
    "ScriptError": "verifier.peer",
    "ANY": "verifier.peer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'verifier' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
