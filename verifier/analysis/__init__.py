"""The pure analysis: packets in, connections, events and verdicts out. No capture, no namespaces, no root."""
