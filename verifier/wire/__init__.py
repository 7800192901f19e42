"""Packets on the wire: the one decoder of captured frames, packet building, protocol names."""

from verifier.wire.decoder import *  # noqa: F401,F403
from verifier.wire.decoder import __all__  # noqa: F401
