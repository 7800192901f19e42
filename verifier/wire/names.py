"""Protocol names in one place: TCP flag bits and letters, ICMP/ICMPv6 error types and codes.

Every part of the project that prints or parses a flag letter or an ICMP name takes it from here:
the decoder, the ladders, the attempt table's explanations, the faults and the `--expect` language.

ICMP errors also have family-independent names (`"host"`, `"port"`, ...) because IPv4 and IPv6
number the same condition differently (host unreachable is type 3 code 1 in ICMP, type 1 code 3 in
ICMPv6). `icmp_code(name, family)` maps a name to (type, code) and `icmp_kind(family, type, code)`
maps back.
"""

from __future__ import annotations

import functools

__all__ = [
    "ACK", "AE", "CWR", "ECE", "FIN", "FLAG_LETTERS", "ICMP_ALIASES", "ICMP_KINDS", "NS", "PSH", "RST", "SYN", "URG",
    "flag_bits", "flag_str", "icmp_canonical", "icmp_code", "icmp_description", "icmp_kind", "icmp_label",
]

FIN = 0x001
SYN = 0x002
RST = 0x004
PSH = 0x008
ACK = 0x010
URG = 0x020
ECE = 0x040
CWR = 0x080
AE = 0x100  # accurate ECN (RFC 9768), the old ECN-nonce bit; Scapy and tcpdump call it N
NS = AE

#: Letters in tcpdump/Scapy order, bit 0 first.
FLAG_LETTERS = "FSRPAUECN"
_FLAG_STRS = tuple("".join(c for bit, c in enumerate(FLAG_LETTERS) if v & (1 << bit)) for v in range(512))
_LETTER_BITS = {c: 1 << bit for bit, c in enumerate(FLAG_LETTERS)}


def flag_str(flags: int) -> str:
    """The letters of a TCP flag bitmask in the fixed order F S R P A U E C N, e.g. 0x12 -> "SA"."""
    return _FLAG_STRS[flags & 0x1FF]


def flag_bits(letters: str) -> int:
    """The bitmask of flag letters ("SA" -> 0x12); ValueError names an unknown letter."""
    bits = 0
    for c in letters:
        try:
            bits |= _LETTER_BITS[c.upper()]
        except KeyError:
            raise ValueError(f"unknown TCP flag letter {c!r} (known: {FLAG_LETTERS})") from None
    return bits


# (family, type, code) -> description
_ICMP_CODES = {
    (4, 3, 0): "net unreachable",
    (4, 3, 1): "host unreachable",
    (4, 3, 2): "protocol unreachable",
    (4, 3, 3): "port unreachable",
    (4, 3, 4): "fragmentation needed",
    (4, 3, 5): "source route failed",
    (4, 3, 6): "destination network unknown",
    (4, 3, 7): "destination host unknown",
    (4, 3, 9): "net administratively prohibited",
    (4, 3, 10): "host administratively prohibited",
    (4, 3, 11): "net unreachable for TOS",
    (4, 3, 12): "host unreachable for TOS",
    (4, 3, 13): "communication administratively prohibited",
    (4, 11, 0): "TTL exceeded in transit",
    (4, 11, 1): "fragment reassembly time exceeded",
    (6, 1, 0): "no route to destination",
    (6, 1, 1): "administratively prohibited",
    (6, 1, 2): "beyond scope of source address",
    (6, 1, 3): "address unreachable",
    (6, 1, 4): "port unreachable",
    (6, 1, 5): "source address failed policy",
    (6, 1, 6): "reject route",
    (6, 2, 0): "packet too big",
    (6, 3, 0): "hop limit exceeded",
    (6, 3, 1): "fragment reassembly time exceeded",
}
_ICMP_TYPES = {
    (4, 3): "destination unreachable", (4, 11): "time exceeded", (4, 12): "parameter problem",
    (6, 1): "destination unreachable", (6, 2): "packet too big", (6, 3): "time exceeded",
    (6, 4): "parameter problem",
}

#: Family-independent names of the ICMP errors a TCP test meets, with (type, code) per family.
#: These are the codes the kernels map to connect() errors (net -> ENETUNREACH, host ->
#: EHOSTUNREACH, port -> ECONNREFUSED, admin -> EACCES/EHOSTUNREACH ...).
ICMP_KINDS: dict[str, dict[int, tuple[int, int]]] = {
    "net": {4: (3, 0), 6: (1, 0)},
    "host": {4: (3, 1), 6: (1, 3)},
    "protocol": {4: (3, 2)},
    "port": {4: (3, 3), 6: (1, 4)},
    "frag-needed": {4: (3, 4), 6: (2, 0)},
    "admin": {4: (3, 13), 6: (1, 1)},
    "net-prohibited": {4: (3, 9)},
    "host-prohibited": {4: (3, 10)},
    "policy": {6: (1, 5)},
    "reject-route": {6: (1, 6)},
    "ttl": {4: (11, 0), 6: (3, 0)},
}
#: Other spellings people use for the same errors.
ICMP_ALIASES = {
    "net-unreachable": "net", "network": "net", "no-route": "net",
    "host-unreachable": "host", "address": "host", "addr-unreachable": "host", "address-unreachable": "host",
    "proto": "protocol", "protocol-unreachable": "protocol",
    "port-unreachable": "port",
    "frag": "frag-needed", "fragmentation-needed": "frag-needed", "too-big": "frag-needed",
    "packet-too-big": "frag-needed",
    "admin-prohibited": "admin", "prohibited": "admin", "hop-limit": "ttl", "time-exceeded": "ttl",
}
_KIND_OF = {(fam, t, c): name for name, by in ICMP_KINDS.items() for fam, (t, c) in by.items()}


def icmp_canonical(name: str) -> str:
    """The `ICMP_KINDS` name of a family-independent ICMP error name or alias ("address" -> "host");
    ValueError says which names exist."""
    canonical = ICMP_ALIASES.get(name, name)
    if canonical not in ICMP_KINDS:
        raise ValueError(f"unknown ICMP error {name!r}; known: {', '.join(ICMP_KINDS)} "
                         f"(or an alias: {', '.join(ICMP_ALIASES)})")
    return canonical


def icmp_code(name: str, family: int) -> tuple[int, int]:
    """(type, code) of a family-independent ICMP error name in `family` (4 or 6).

    ValueError says which names exist, or that the name has no equivalent in that family."""
    by = ICMP_KINDS[icmp_canonical(name)]
    if family not in by:
        raise ValueError(f"ICMP error {name!r} has no ICMPv{'6' if family == 6 else '4'} equivalent")
    return by[family]


def icmp_kind(family: int, icmp_type: int, icmp_code_: int) -> str | None:
    """The family-independent name of an ICMP error, or None if it has none."""
    return _KIND_OF.get((family, icmp_type, icmp_code_))


def icmp_description(family: int, icmp_type: int | None, icmp_code_: int | None) -> str:
    """A short human name for an ICMP/ICMPv6 error type and code ("host unreachable")."""
    return (_ICMP_CODES.get((family, icmp_type, icmp_code_))  # type: ignore[arg-type]
            or _ICMP_TYPES.get((family, icmp_type), "error"))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4096)  # (a replay labels every unreachable attempt: the same few errors)
def icmp_label(family: int, icmp_type: int, icmp_code_: int) -> str:
    """"ICMPv6 type 1 code 3 (address unreachable)"."""
    return (f"ICMP{'v6' if family == 6 else ''} type {icmp_type} code {icmp_code_} "
            f"({icmp_description(family, icmp_type, icmp_code_)})")
