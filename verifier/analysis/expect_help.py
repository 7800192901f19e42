"""The grammar of the `--expect` language, as the text `verifier replay --help` shows (the language
itself is verifier.analysis.conditions, which exports it too). A module of its own so that building
the command's parser does not import the language: `verifier replay` without --expect never does."""

__all__ = ["EXPECT_HELP"]

EXPECT_HELP = """\
expectations (--expect, repeatable; exit status 1 if one fails):
  [QUANTIFIER] [SELECTOR...] PREDICATE
  QUANTIFIER  every (default: all selected attempts, and at least one) | any (at least one) | no (none)
  SELECTOR    [to] HOST | HOST:PORT | [V6ADDR]:PORT | port N     the server side (to is optional)
              from HOST | HOST:PORT                              the client side
              ipv4 | ipv6 | id N
  PREDICATE   [is|are] [not] OUTCOME        established refused timed-out unreachable reset closed
                                            incomplete uncertain; "reset by client|server";
                                            "unreachable [NAME] [type T] [code C]", NAME an ICMP error
                                            in either family: net host port protocol frag-needed admin
                                            ttl ... (verifier.wire.names.ICMP_KINDS and aliases)
              follow(s) [the] linux|stevens [schedule] [with] KEY=VALUE...
                     linux keys: tcp_syn_retries, tcp_syn_linear_timeouts, syncnt, rto_init_ms (1000),
                     rto_max_ms; a key not given is the client namespace's own sysctl when the
                     capture is a Trace from a testbed (capture.trace()), else the kernel's default
                     (tcp_syn_retries 6, tcp_syn_linear_timeouts 4, rto_max_ms 120000); the SYN times
                     are compared with the model (tolerance of verifier.analysis.schedules); a capture
                     has no ETIMEDOUT, so only SYNs are checked, and an answered attempt only up to
                     its answer
              syns N | syn_count N             the number of SYNs (first + retransmissions)
              conn_state S | history H         Zeek's fields
              count N                          the number of selected attempts
  Words like "the", "attempt(s)", "connection(s)", "SYNs", "to" around the selector are optional.
  examples:  "port 5000 refused"     "every attempt to port 5000 is refused"
             "any attempt to 203.0.113.2:5000 is established"    "no attempt to port 22 is reset"
             "every attempt to port 5000 is unreachable host"
             "the SYNs to 203.0.113.2:81 follow the linux schedule with tcp_syn_retries=2"
             "203.0.113.2:81 follows stevens"    "port 5000 count 2"    "from 192.0.2.2 syns 1"
"""
