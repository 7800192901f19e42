"""Packet-level verifier of TCP socket behaviour."""
