"""Capture files: one reader of pcap and pcapng, one pcapng writer."""

from verifier.pcap.reader import *  # noqa: F401,F403
from verifier.pcap.reader import __all__  # noqa: F401
