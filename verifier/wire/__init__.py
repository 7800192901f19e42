"""Packets on the wire: the one decoder of captured frames (`decoder`), packet building (`encode`)
and protocol names (`names`: TCP flags, ICMP types and codes)."""

from verifier.wire.decoder import *  # noqa: F401,F403
from verifier.wire.decoder import __all__ as _decoder_all
from verifier.wire.encode import *  # noqa: F401,F403
from verifier.wire.encode import __all__ as _encode_all
from verifier.wire.names import *  # noqa: F401,F403
from verifier.wire.names import __all__ as _names_all

__all__ = sorted(set(_decoder_all) | set(_encode_all) | set(_names_all))
