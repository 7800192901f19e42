"""Linux network-namespace testbeds: namespaces, links, hosts and processes.

    from netns import Testbed
    with Testbed("routed", family="dual") as bed:
        bed.server.start([...]); bed.client.run([...])
"""

from .host import Host, Interface
from .namespace import NamespaceError
from .process import Process, ProcessError, Result
from .testbed import TOPOLOGIES, Testbed, TestbedError

__all__ = ["Host", "Interface", "NamespaceError", "Process", "ProcessError", "Result", "TOPOLOGIES", "Testbed",
           "TestbedError"]
