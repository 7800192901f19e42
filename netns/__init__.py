"""Linux network-namespace testbeds: namespaces, links, hosts and processes.

    from netns import Testbed
    with Testbed("routed", family="dual") as bed:
        bed.server.start([...]); bed.client.run([...])

Names are imported lazily: the capture process imports `netns.namespace` alone and must not pay for
pyroute2's import.
"""

import importlib

_EXPORTS = {
    "Host": "host", "Interface": "host", "NamespaceError": "namespace", "NameInUse": "testbed",
    "NEXT_FREE": "testbed", "NoSuchTestbed": "testbed", "Process": "process", "ProcessError": "process",
    "Result": "process", "TOPOLOGIES": "testbed", "Testbed": "testbed", "TestbedError": "testbed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'netns' has no attribute {name!r}")
