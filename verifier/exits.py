"""The exit statuses of every `verifier` command: one scheme, so a script reads them the same way
whatever the command.

    0  done (a standing fault ended by --duration or Ctrl-C counts as done)
    1  a check failed: an --expect condition, a re-drive that differed, or a fault that was in place
       but could not do its work (e.g. `inject rst` saw no segment to learn the sequence numbers from)
    2  bad input: an option's value, a missing or unreadable file, a file that is not a capture, an
       unknown testbed, host, family or connection, an address outside the testbed, no root where
       root is needed; said in one line on stderr, and nothing was created or changed
    3  the capture could not be read in full: damaged or truncated records, or frames of link types
       this tool does not read (each named on stderr); what could be read was reported
    130  interrupted (Ctrl-C) outside a command that ends on Ctrl-C by design

`EPILOG` is that table for the --help of each command; `epilog(...)` keeps the lines that apply.
"""

from __future__ import annotations

__all__ = ["BAD_INPUT", "DAMAGED", "EPILOG", "FAILED", "INTERRUPTED", "OK", "epilog"]

OK, FAILED, BAD_INPUT, DAMAGED, INTERRUPTED = 0, 1, 2, 3, 130

_LINES = {
    OK: "0 done",
    FAILED: "1 a check failed (an expectation, a re-drive)",
    BAD_INPUT: "2 bad input (an option, a file, a testbed, host or address; no root): one line on stderr, "
               "nothing created",
    DAMAGED: "3 the capture could not be read in full (damaged, truncated, or link types not read); what "
             "could be read was reported",
    INTERRUPTED: "130 interrupted",
}


def epilog(*statuses: int, note: str = "", words: dict[int, str] | None = None) -> str:
    """The 'exit status' paragraph of a command's --help: the lines of `statuses` (default: all), with
    `words` saying what a status means for this command where it is more specific."""
    words = words or {}
    lines = [f"{s} {words[s]}" if s in words else _LINES[s] for s in (statuses or tuple(_LINES))]
    return "exit status: " + "; ".join(lines) + "." + (f" {note}" if note else "")


EPILOG = epilog()
