"""The claims under test: chapter 4 of Stevens' UNIX Network Programming, as listed in docs/claims.md
(C1-C14), and the RFC rules that only a scripted peer can drive (P1-P6, `tests/conformance/test_scripted.py`).

Data only: each claim's id, a short title, and the book's statement, for reports and failure messages.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """One textbook statement that can be seen on the wire or in a return value."""

    id: str
    title: str
    statement: str


CLAIMS = {c.id: c for c in (
    Claim("C1", "connect() runs the handshake",
          "connect() starts the three-way handshake and returns only when the connection is established or has failed."),
    Claim("C2", "unanswered SYN: ETIMEDOUT",
          "If the SYN gets no answer, connect() fails with ETIMEDOUT (4.4BSD: SYNs 6 s and 24 s apart, giving up at 75 s)."),
    Claim("C3", "RST answer: ECONNREFUSED",
          "A SYN answered by RST means nothing listens on that port: a hard error, connect() returns ECONNREFUSED at once."),
    Claim("C4", "when RST is sent",
          "RST is sent when nothing listens on the port, when TCP aborts a connection, and for a segment of no connection."),
    Claim("C5", "ICMP unreachable is a soft error",
          "An ICMP destination-unreachable in answer to the SYN is a soft error: TCP keeps retrying, and only then fails with EHOSTUNREACH/ENETUNREACH."),
    Claim("C6", "a failed socket must be closed",
          "After a failed connect(), the socket must be closed and socket() called again."),
    Claim("C7", "ephemeral port at connect()",
          "A client that never calls bind() gets an ephemeral port chosen by the kernel at connect()."),
    Claim("C8", "listen() and its two queues",
          "listen() makes the socket passive; the kernel keeps incomplete and completed queues bounded by backlog."),
    Claim("C9", "accept() takes a completed connection",
          "accept() returns the next completed connection and sleeps while the completed queue is empty."),
    Claim("C10", "one listener, many connected sockets",
          "Each accept() returns a new connected socket on the one listening socket."),
    Claim("C11", "fork() and descriptor reference counts",
          "In a concurrent server the parent's close() of the connected socket sends no FIN; the child's last close does."),
    Claim("C12", "close() starts normal termination",
          "close() on the last reference starts the normal four-segment termination with a FIN."),
    Claim("C13", "getsockname() and getpeername()",
          "getsockname() returns the local address the kernel chose; getpeername() the foreign one."),
    Claim("C14", "exec() keeps descriptors",
          "exec() keeps open descriptors (unless FD_CLOEXEC), so a fork+exec server hands the socket to a new program."),
    # Rules of the RFCs that need a peer which sends exactly the segments a script says (verifier.peer).
    Claim("P1", "RST in SYN-SENT (RFC 9293 3.10.7.3)",
          "In SYN-SENT a RST is acceptable only if its ACK acknowledges the SYN: one without ACK, or with a wrong "
          "ACK, is dropped; an acceptable one aborts the connection (ECONNREFUSED)."),
    Claim("P2", "RST on an established connection (RFC 5961 3.2)",
          "A RST at exactly RCV.NXT resets the connection; one elsewhere in the window draws a challenge ACK and "
          "changes nothing; one outside the window is dropped."),
    Claim("P3", "SYN-ACK retransmission",
          "A listener retransmits an unacknowledged SYN-ACK, doubling the gap from the initial RTO, "
          "tcp_synack_retries times, then forgets the half-open connection."),
    Claim("P4", "ICMP unreachable on an established connection (RFC 1122 4.2.3.9)",
          "Destination unreachable (net, host) for an established connection is a soft error: the connection "
          "is not aborted, and retransmits."),
    Claim("P5", "simultaneous open (RFC 9293 3.5)",
          "A SYN received in SYN-SENT moves the connection to SYN-RECEIVED and is answered with SYN-ACK; the "
          "peer's SYN-ACK establishes it."),
    Claim("P6", "SYN-ACK options bind the client (RFC 9293 3.7.1, RFC 7323, RFC 2018)",
          "The client sends segments no larger than the peer's MSS, scales the peer's window by its shift "
          "(up to 14), and sends SACK or timestamps only if the SYN-ACK offered them."),
)}
