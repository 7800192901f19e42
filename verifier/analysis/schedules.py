"""SYN retransmission models for claim C2: when connect() sends each SYN, and when it gives up.

Two profiles predict a `SynSchedule` (times in seconds after the first SYN):

* `StevensProfile`: the book's 4.4BSD model (UNIX Network Programming, ch. 4): SYNs at 0, 6 and 30 s,
  ETIMEDOUT at 75 s, whatever the settings.
* `LinuxProfile`: the rule of the Linux kernel, taken from its source (see the comment above
  `LinuxProfile`), fed with the settings of the namespace under test (`from_sysctls`), so nothing
  measured on one machine is built in.

`SynSchedule.compare` checks observed times against a schedule with a `Tolerance` and returns a
`Comparison` whose `report()` lists predicted against observed per SYN.

Pure: no I/O, no namespaces; the caller reads the sysctls and the capture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

__all__ = [
    "DEFAULT_TOLERANCE",
    "LINUX_DEFAULTS",
    "LINUX_SYSCTLS",
    "SYSCTLS_COMMENT",
    "Comparison",
    "ItemVerdict",
    "LinuxProfile",
    "StevensProfile",
    "SynSchedule",
    "Tolerance",
    "sysctls_comment",
    "sysctls_from_comments",
    "tcp_model_timeout_ms",
    "wheel_granularity_s",
]


# --------------------------------------------------------------------------------------------------
# Tolerance: the one model of timer slack
#
# Every retransmission and give-up of a connect() or of a listener's request is a timer-wheel timer
# (kernel/time/timer.c), armed in jiffies. calc_wheel_index() files a timeout of d jiffies in level 0
# if d < 63, else in the level n >= 1 with 63 * 8**(n-1) <= d < 63 * 8**n, and calc_index() rounds
# its expiry up to the next multiple of that level's granularity, 8**n jiffies, "to guarantee that a
# timer does not fire early". So, measured from the packet that armed it, a timer fires
#   * never early: the expiry is rounded up, and the timer was armed after the packet's timestamp
#     (tcp_connect, tcp_retransmit_timer) or a few microseconds before it (tcp_conn_request arms the
#     request's timer just before it sends the first SYN-ACK): `early_s` = 1 ms covers that;
#   * late by at most one granularity of its level: at HZ=250, 32 ms for 1 s and 2 s (250 and 500
#     jiffies, level 1), 256 ms for 4 s to 16 s (level 2). docs/environment.md's measured gaps fit:
#     1.00-1.03 s for 1 s, 4.23-4.25 s for 4 s, 8.20 s for 8 s ("1-3 % slack", 6 % for 4 s);
# and then the event itself comes a little later:
#   * `sent_s` = 20 ms for a packet the timer sends (the timer softirq; ksoftirqd on a busy machine);
#   * `absolute_s` = 50 ms for a process the timer wakes (connect() returning ETIMEDOUT on a loaded
#     2-core machine under pytest-xdist).
# Without HZ (a capture from an unknown machine, replayed) the worst case over every HZ bounds the
# rounding: a timer fires at most 8/63 = 12.7 % of its timeout late (the shortest timeout of a level
# is 63 * 8**(n-1) jiffies, its granularity 8**n), so an event may be late by max(`absolute_s`,
# `fraction` = 13 % of the gap) and, since the capture point may lie past a queue, early by
# `absolute_s`. Either way it still discriminates: rival schedules differ by a whole initial RTO or
# more in some gap (1 s instead of 2 s is 100 % of the gap), or by the number of SYNs.

#: calc_wheel_index(): level n >= 1 starts at 63 * 8**(n-1) jiffies; granularity 8**n jiffies.
WHEEL_LEVEL_START = 63
WHEEL_LEVEL_SHIFT = 3


def wheel_granularity_s(timeout_s: float, hz: int) -> float:
    """How late the timer wheel may fire a timer armed `timeout_s` ahead, at `hz` jiffies a second:
    the granularity of the wheel level that the timeout falls in (one jiffy in level 0)."""
    jiffies = math.ceil(timeout_s * hz - 1e-9)  # msecs_to_jiffies() rounds up
    level = 0
    while jiffies >= WHEEL_LEVEL_START << (WHEEL_LEVEL_SHIFT * level):
        level += 1
    return (1 << (WHEEL_LEVEL_SHIFT * level)) / hz


@dataclass(frozen=True)
class Tolerance:
    """How far an observed timer-driven event may be from the predicted one: the model stated above.

    Each event is checked against the previous *observed* event plus the predicted gap, so errors
    do not add up along the schedule. With `hz` (the CONFIG_HZ of the kernel whose timers are
    checked) an event may be late by the wheel's granularity for the gap plus `sent_s` (a packet) or
    `absolute_s` (a woken process), and early by `early_s`. Without `hz` it may be late by
    ``max(absolute_s, fraction * gap)`` and early by `absolute_s`.
    """

    absolute_s: float = 0.05
    fraction: float = 0.13
    hz: int | None = None
    sent_s: float = 0.02
    early_s: float = 0.001

    def allowed(self, interval_s: float, *, woken: bool = False) -> float:
        """The allowed lateness after a predicted gap of `interval_s` seconds; `woken`: the event is a
        process returning from a call (e.g. connect() with ETIMEDOUT), not a packet."""
        if self.hz is None:
            return max(self.absolute_s, self.fraction * interval_s)
        return wheel_granularity_s(interval_s, self.hz) + (self.absolute_s if woken else self.sent_s)

    @property
    def early(self) -> float:
        """How much earlier than predicted an event may be."""
        return self.absolute_s if self.hz is None else self.early_s

    def accepts(self, deviation_s: float, interval_s: float, *, woken: bool = False) -> bool:
        """Whether an event `deviation_s` after its predicted time (after a gap of `interval_s`) fits."""
        return -self.early <= deviation_s <= self.allowed(interval_s, woken=woken)

    def fits(self, observed_gap_s: float, predicted_gap_s: float, *, woken: bool = False) -> bool:
        """Whether an observed gap between two events fits the predicted gap."""
        return self.accepts(observed_gap_s - predicted_gap_s, predicted_gap_s, woken=woken)

    def window(self, predicted_gap_s: float, *, woken: bool = False) -> tuple[float, float]:
        """The (shortest, longest) observed gap that `fits` the predicted one."""
        return predicted_gap_s - self.early, predicted_gap_s + self.allowed(predicted_gap_s, woken=woken)

    def describe(self) -> str:
        if self.hz is None:
            return (f"late by at most max({self.absolute_s * 1e3:.0f} ms, {self.fraction:.0%} of the predicted gap), "
                    f"early by at most {self.absolute_s * 1e3:.0f} ms (HZ unknown)")
        return (f"late by at most the timer wheel's granularity for the gap at HZ={self.hz} plus "
                f"{self.sent_s * 1e3:.0f} ms for a packet or {self.absolute_s * 1e3:.0f} ms for a woken process, "
                f"early by at most {self.early_s * 1e3:g} ms")


#: The model when nothing is known of the kernel that ran the timers (a replayed capture).
DEFAULT_TOLERANCE = Tolerance()


# --------------------------------------------------------------------------------------------------
# Schedules and their comparison

@dataclass(frozen=True)
class ItemVerdict:
    """One predicted-vs-observed item: a SYN or the ETIMEDOUT return of connect()."""

    name: str
    predicted_s: float | None  # None: observed but not predicted
    observed_s: float | None  # None: predicted but not observed
    gap_predicted_s: float | None = None  # since the previous item, as the model says
    gap_observed_s: float | None = None  # since the previous item, as observed
    deviation_s: float | None = None  # observed gap - predicted gap
    allowed_s: float | None = None  # allowed lateness for this gap
    ok: bool = False

    def line(self) -> str:
        def f(v: float | None, fmt: str = "9.3f") -> str:
            return format(v, fmt) if v is not None else f"{'-':>9}"

        if self.predicted_s is None:
            verdict = "UNEXPECTED (not predicted)"
        elif self.observed_s is None:
            verdict = "MISSING (not observed)"
        elif self.deviation_s is None:
            verdict = "ok (reference)" if self.ok else "FAIL"
        else:
            verdict = "ok" if self.ok else "FAIL"
        return (f"{self.name:<10} {f(self.predicted_s)} {f(self.observed_s)} {f(self.gap_predicted_s)} "
                f"{f(self.gap_observed_s)} {f(self.deviation_s, '+9.3f')} {f(self.allowed_s)}  {verdict}")


@dataclass(frozen=True)
class Comparison:
    """The verdicts of one comparison of observed times with a `SynSchedule`."""

    schedule: "SynSchedule"
    tolerance: Tolerance
    items: tuple[ItemVerdict, ...]

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def count_ok(self) -> bool:
        """Same number of SYNs observed as predicted."""
        return not any(i.predicted_s is None or i.observed_s is None for i in self.items if i.name.startswith("SYN"))

    def failures(self) -> list[ItemVerdict]:
        return [i for i in self.items if not i.ok]

    def report(self) -> str:
        """A readable table: predicted vs observed per SYN and for the ETIMEDOUT time."""
        head = [
            f"model: {self.schedule.source}",
            f"predicted: {self.schedule.describe()}",
            f"tolerance: {self.tolerance.describe()}",
            "times in seconds after the first SYN; gaps since the previous item; deviation = observed gap - "
            "predicted gap",
            f"{'item':<10} {'predicted':>9} {'observed':>9} {'gap pred':>9} {'gap obs':>9} {'deviation':>9} "
            f"{'allowed':>9}  verdict",
        ]
        verdict = "MATCHES the model" if self.ok else f"DOES NOT MATCH the model ({len(self.failures())} item(s))"
        return "\n".join(head + [i.line() for i in self.items] + [verdict])

    def __str__(self) -> str:
        return self.report()


@dataclass(frozen=True)
class SynSchedule:
    """Predicted send time of every SYN (the first at 0) and the time connect() fails with ETIMEDOUT,
    in seconds after the first SYN. `source` says which model and settings produced it."""

    syn_times: tuple[float, ...]
    fail_time: float
    source: str = ""

    def __post_init__(self) -> None:
        times = self.syn_times
        if not times or times[0] != 0:
            raise ValueError(f"a SYN schedule starts with the first SYN at 0, got {times!r}")
        if any(b <= a for a, b in zip(times, times[1:])) or self.fail_time <= times[-1]:
            raise ValueError(f"SYN times and the failure must increase: {times!r}, fail at {self.fail_time}")

    @property
    def syn_count(self) -> int:
        return len(self.syn_times)

    @property
    def retransmissions(self) -> int:
        return len(self.syn_times) - 1

    @property
    def gaps(self) -> tuple[float, ...]:
        """Time from each SYN to the next timer expiry: to the next SYN, and from the last to the failure."""
        points = self.syn_times + (self.fail_time,)
        return tuple(b - a for a, b in zip(points, points[1:]))

    def describe(self) -> str:
        syns = ", ".join(f"{t:g}" for t in self.syn_times)
        return f"{self.syn_count} SYNs at {syns} s; ETIMEDOUT at {self.fail_time:g} s"

    def compare(self, observed_syn_times: Sequence[float], observed_fail_time: float | None,
                tolerance: Tolerance = DEFAULT_TOLERANCE) -> Comparison:
        """Check observed SYN times and the ETIMEDOUT time (seconds after the first observed SYN).

        Each item is compared with the previous observed item plus the predicted gap. A SYN count
        that differs fails the missing or unexpected SYNs; `observed_fail_time` None (connect() did
        not fail) fails the ETIMEDOUT item.
        """
        obs = [float(t) for t in observed_syn_times]
        items: list[ItemVerdict] = []
        for i in range(max(len(obs), len(self.syn_times))):
            name = f"SYN {i + 1}"
            p = self.syn_times[i] if i < len(self.syn_times) else None
            o = obs[i] if i < len(obs) else None
            if p is None or o is None:
                items.append(ItemVerdict(name, p, o, ok=False))
            elif i == 0:
                # The reference point: all times are relative to the first SYN.
                items.append(ItemVerdict(name, p, o, ok=abs(o) <= tolerance.early))
            else:
                items.append(self._check(name, p, self.syn_times[i - 1], o, obs[i - 1], tolerance))
        # The failure is anchored on the observed SYN that the model says is the last one; with no
        # such SYN (fewer observed), on nothing: the absolute time is compared, and the missing SYNs
        # have failed already.
        last = len(self.syn_times) - 1
        if observed_fail_time is None:
            items.append(ItemVerdict("ETIMEDOUT", self.fail_time, None, ok=False))
        elif last < len(obs):
            items.append(self._check("ETIMEDOUT", self.fail_time, self.syn_times[last], float(observed_fail_time),
                                     obs[last], tolerance))
        else:
            items.append(self._check("ETIMEDOUT", self.fail_time, 0.0, float(observed_fail_time), 0.0, tolerance))
        return Comparison(self, tolerance, tuple(items))

    @staticmethod
    def _check(name: str, p: float, p_prev: float, o: float, o_prev: float, tol: Tolerance) -> ItemVerdict:
        gap_p, gap_o = p - p_prev, o - o_prev
        dev = gap_o - gap_p
        woken = name == "ETIMEDOUT"  # connect() returning, not a packet
        return ItemVerdict(name, p, o, gap_p, gap_o, dev, tol.allowed(gap_p, woken=woken),
                           tol.accepts(dev, gap_p, woken=woken))

    def fail_window(self, tolerance: Tolerance = DEFAULT_TOLERANCE) -> tuple[float, float]:
        """When connect() may fail with ETIMEDOUT, in seconds after the first SYN, when the SYN times are
        not observed: each gap may be early or late by its own allowance, and these add up."""
        gaps = self.gaps
        early = tolerance.early * len(gaps)
        late = sum(tolerance.allowed(g) for g in gaps[:-1]) + tolerance.allowed(gaps[-1], woken=True)
        return self.fail_time - early, self.fail_time + late


# --------------------------------------------------------------------------------------------------
# The book's model

@dataclass(frozen=True)
class StevensProfile:
    """4.4BSD as UNIX Network Programming ch. 4 describes it: if the SYN gets no answer, it is sent
    again 6 s later, and again 24 s after that (30 s after the first); connect() gives up with
    ETIMEDOUT 75 s after the first SYN. No setting changes it."""

    name = "stevens"
    syn_times: tuple[float, ...] = (0.0, 6.0, 30.0)
    fail_time: float = 75.0

    def schedule(self) -> SynSchedule:
        return SynSchedule(self.syn_times, self.fail_time,
                           source="stevens (4.4BSD, UNP ch. 4): SYNs 6 s then 24 s apart, ETIMEDOUT at 75 s")


# --------------------------------------------------------------------------------------------------
# The Linux rule
#
# From the kernel source (net/ipv4/tcp_output.c, net/ipv4/tcp_timer.c, include/net/tcp.h; 6.5+ for
# tcp_syn_linear_timeouts, 6.15+ for tcp_rto_max_ms):
#
# * tcp_connect() sends the SYN, sets tp->retrans_stamp to now and arms the retransmission timer
#   with icsk_rto = tcp_timeout_init(sk) = TCP_TIMEOUT_INIT (1 s, RFC 6298; only a BPF sock_ops
#   program or a route's rto_min could change it, which the testbeds do not use, so we ignore that).
# * Each expiry runs tcp_retransmit_timer(), which first calls tcp_write_timeout(). In SYN_SENT:
#       retry_until     = icsk_syn_retries (TCP_SYNCNT) ?: sysctl tcp_syn_retries
#       expired         = icsk_retransmits >= retry_until + sysctl tcp_syn_linear_timeouts
#       if (!expired)
#           expired     = retransmits_timed_out(sk, retry_until, user_timeout)
#   retransmits_timed_out() is false before the first retransmission; otherwise it compares the
#   time elapsed since retrans_stamp (the first SYN) with tcp_model_timeout(sk, retry_until,
#   tcp_timeout_init(sk)): the total time of retry_until retransmissions with plain doubling from
#   the initial RTO, capped at the RTO maximum:
#       thresh = ilog2(rto_max / rto_base)
#       boundary <= thresh: (2^(boundary+1) - 1) * rto_base
#       otherwise:          (2^(thresh+1) - 1) * rto_base + (boundary - thresh) * rto_max
#   If expired, tcp_write_err() fails the socket with ETIMEDOUT (connect() returns it); else the
#   SYN is retransmitted (tcp_retransmit_skb; tcp_update_rto_stats() counts it in total_rto).
# * Then, at out_reset_timer, the RTO is doubled (min(icsk_rto << 1, tcp_rto_max(sk))) unless the
#   socket is in SYN_SENT and total_rto <= tcp_syn_linear_timeouts: the first linear_timeouts
#   retransmissions keep the initial RTO.
#
# So each timer expiry either retransmits or gives up, and the give-up test looks at elapsed time,
# with a retransmission count only as a backstop. With b = initial RTO, M = RTO max, L = linear
# timeouts, r = retries (TCP_SYNCNT if set, else tcp_syn_retries):
#       gap after SYN k (k = 0, 1, ...):  b for k <= L,  min(b * 2^(k-L), M) after
#       expiry n happens at E_n = sum of the first n gaps
#       T = tcp_model_timeout(r, b, M)
#       at expiry n: give up if n > 1 and (E_n >= T or n - 1 >= r + L), else send SYN n at E_n
# The linear gaps are shorter than the doubling that T assumes, so the elapsed-time test always
# fires first (at expiry r + L + 1 the elapsed time is T + L*b), and a schedule has more than r
# retransmissions but fewer than r + L + 1 SYNs in general: r=2, L=4 gives 6 SYNs, not 7.
# The kernel works in jiffies and ms; the sub-jiffy rounding is inside the tolerance. When rto_max
# is a whole multiple of the initial RTO (always so by default), every E_n - T is a multiple of b,
# so no decision is closer to the threshold than one initial RTO and timer slack cannot flip it.

TCP_TIMEOUT_INIT_MS = 1000  # include/net/tcp.h: TCP_TIMEOUT_INIT = 1 * HZ
TCP_RTO_MAX_MS = 120_000  # include/net/tcp.h: TCP_RTO_MAX = 120 * HZ (TCP_RTO_MAX_SEC)
MAX_TCP_SYNCNT = 127  # include/net/tcp.h: the range of tcp_syn_retries and TCP_SYNCNT

#: The sysctls `LinuxProfile.from_sysctls` reads (the last two may be missing on older kernels).
LINUX_SYSCTLS = ("net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts", "net.ipv4.tcp_rto_max_ms")

#: The kernel's defaults of those sysctls (tcp_syn_retries 6; tcp_syn_linear_timeouts 4 since 6.5;
#: tcp_rto_max_ms 120000 since 6.15): what `LinuxProfile.for_capture` assumes for a capture that
#: does not say what its client's namespace had.
LINUX_DEFAULTS = {"net.ipv4.tcp_syn_retries": 6, "net.ipv4.tcp_syn_linear_timeouts": 4,
                  "net.ipv4.tcp_rto_max_ms": 120_000}


#: How a capture records its client namespace's SYN sysctls: an opt_comment of the client
#: interface's Interface Statistics Block (written when the capture stops, since a test may set them
#: after the capture started), so that a later reading of the file models them.
SYSCTLS_COMMENT = "tcp-verifier client sysctls:"


def sysctls_comment(values: dict[str, str | None]) -> str:
    """The comment recording `values` ("-": the kernel has no such sysctl), e.g.
    ``tcp-verifier client sysctls: net.ipv4.tcp_syn_retries=2 net.ipv4.tcp_syn_linear_timeouts=-``."""
    return " ".join([SYSCTLS_COMMENT, *(f"{k}={'-' if v is None else v}" for k, v in values.items())])


def sysctls_from_comments(comments) -> dict[str, str | None] | None:
    """The sysctls a capture recorded (`sysctls_comment`), from the comments of its statistics
    blocks; None if none of them records any. Unknown words are ignored."""
    for text in comments:
        if not text.startswith(SYSCTLS_COMMENT):
            continue
        values: dict[str, str | None] = {}
        for word in text[len(SYSCTLS_COMMENT):].split():
            key, eq, value = word.partition("=")
            if eq and key in LINUX_SYSCTLS and value:
                values[key] = None if value == "-" else value
        return values
    return None


def tcp_model_timeout_ms(boundary: int, rto_base_ms: int, rto_max_ms: int) -> int:
    """tcp_model_timeout() of net/ipv4/tcp_timer.c: the time `boundary` retransmissions take with
    doubling from `rto_base_ms`, the RTO capped at `rto_max_ms`."""
    thresh = (rto_max_ms // rto_base_ms).bit_length() - 1  # ilog2 of the integer quotient
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base_ms
    return ((2 << thresh) - 1) * rto_base_ms + (boundary - thresh) * rto_max_ms


@dataclass(frozen=True)
class LinuxProfile:
    """The Linux SYN retransmission rule with the settings of one namespace (and optionally one socket).

    `syn_retries` is net.ipv4.tcp_syn_retries; `syncnt` the socket's TCP_SYNCNT, which overrides it
    when set; `linear_timeouts` net.ipv4.tcp_syn_linear_timeouts; `rto_init_ms` the initial RTO
    (TCP_TIMEOUT_INIT); `rto_max_ms` net.ipv4.tcp_rto_max_ms, or TCP_RTO_MAX where that sysctl does
    not exist. `notes` say which inputs were missing and what was assumed.
    """

    name = "linux"
    syn_retries: int
    linear_timeouts: int = 0
    syncnt: int | None = None
    rto_init_ms: int = TCP_TIMEOUT_INIT_MS
    rto_max_ms: int = TCP_RTO_MAX_MS
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.retries <= 255:
            raise ValueError(f"SYN retries must be at least 1 (the kernel refuses 0), got {self.retries}")
        if self.linear_timeouts < 0:
            raise ValueError(f"tcp_syn_linear_timeouts cannot be negative, got {self.linear_timeouts}")
        if not 0 < self.rto_init_ms <= self.rto_max_ms:
            raise ValueError(f"need 0 < initial RTO <= RTO max, got {self.rto_init_ms} ms and {self.rto_max_ms} ms")

    @classmethod
    def from_sysctls(cls, values: Mapping[str, str | int | None], *, syncnt: int | None = None,
                     rto_init_ms: int = TCP_TIMEOUT_INIT_MS) -> "LinuxProfile":
        """Build the profile from sysctl values read in the namespace under test.

        `values` maps the names in `LINUX_SYSCTLS` to their values; a missing name or None means
        the kernel has no such sysctl: tcp_syn_linear_timeouts is then 0 (kernels before 6.5 always
        doubled), and the RTO max is TCP_RTO_MAX (kernels before 6.15 could not change it).
        `rto_init_ms` is the initial RTO as measured there (tcp_info.tcpi_rto of a fresh connection).
        """
        retries = values.get("net.ipv4.tcp_syn_retries")
        if retries is None:
            raise ValueError("net.ipv4.tcp_syn_retries is needed to model SYN retransmission")
        notes = []
        linear = values.get("net.ipv4.tcp_syn_linear_timeouts")
        if linear is None:
            notes.append("net.ipv4.tcp_syn_linear_timeouts is missing on this kernel (before 6.5): taken as 0, "
                         "plain doubling")
            linear = 0
        rto_max = values.get("net.ipv4.tcp_rto_max_ms")
        if rto_max is None:
            notes.append(f"net.ipv4.tcp_rto_max_ms is missing on this kernel (before 6.15): RTO max is "
                         f"TCP_RTO_MAX = {TCP_RTO_MAX_MS // 1000} s")
            rto_max = TCP_RTO_MAX_MS
        return cls(syn_retries=int(retries), linear_timeouts=int(linear), syncnt=syncnt, rto_init_ms=int(rto_init_ms),
                   rto_max_ms=int(rto_max), notes=tuple(notes))

    @classmethod
    def for_capture(cls, sysctls: Mapping[str, str | int | None] | None = None, **settings: int) -> "LinuxProfile":
        """The profile that the SYNs of a captured attempt are checked against.

        `sysctls`: the client namespace's values of `LINUX_SYSCTLS` when the capture came from a
        testbed (`Trace.client_sysctls`, which `Capture.trace()` fills in); None when the capture does
        not say (a file from elsewhere): the kernel's defaults `LINUX_DEFAULTS` are then assumed, and
        the profile's notes say so. `settings` (fields of this class: `syn_retries`,
        `linear_timeouts`, `syncnt`, `rto_init_ms`, `rto_max_ms`) override either.
        """
        if sysctls is None:
            base = cls.from_sysctls(LINUX_DEFAULTS)
            note = ("the client's sysctls are unknown (the capture does not carry them): the kernel's defaults "
                    "tcp_syn_retries=6 tcp_syn_linear_timeouts=4 are assumed")
        else:
            base = cls.from_sysctls(sysctls)
            note = "settings read in the client's namespace"
        given = {k: v for k, v in settings.items() if v is not None}
        unknown = sorted(set(given) - {"syn_retries", "linear_timeouts", "syncnt", "rto_init_ms", "rto_max_ms"})
        if unknown:
            raise TypeError(f"unknown linux setting(s) {', '.join(unknown)}; use syn_retries, linear_timeouts, "
                            f"syncnt, rto_init_ms, rto_max_ms")
        fields = dict(syn_retries=base.syn_retries, linear_timeouts=base.linear_timeouts, syncnt=base.syncnt,
                      rto_init_ms=base.rto_init_ms, rto_max_ms=base.rto_max_ms)
        overridden = {k for k, v in given.items() if fields[k] != v}
        fields.update(given)
        notes = list(base.notes) + [note + (f"; given: {', '.join(f'{k}={given[k]}' for k in sorted(given))}"
                                            if given else "")]
        if overridden and sysctls is not None:
            notes.append(f"overriding the namespace's value of {', '.join(sorted(overridden))}")
        return cls(**fields, notes=tuple(notes))

    @property
    def retries(self) -> int:
        """retry_until of tcp_write_timeout(): TCP_SYNCNT if the socket set it, else the sysctl."""
        return self.syncnt if self.syncnt else self.syn_retries

    @property
    def timeout_ms(self) -> int:
        """T: the elapsed time after which an expiry gives up (tcp_model_timeout of `retries`)."""
        return tcp_model_timeout_ms(self.retries, self.rto_init_ms, self.rto_max_ms)

    def describe(self) -> str:
        retries = (f"TCP_SYNCNT={self.syncnt} (overrides tcp_syn_retries={self.syn_retries})" if self.syncnt
                   else f"tcp_syn_retries={self.syn_retries}")
        text = (f"linux: {retries}, tcp_syn_linear_timeouts={self.linear_timeouts}, initial RTO "
                f"{self.rto_init_ms / 1000:g} s, RTO max {self.rto_max_ms / 1000:g} s; give up at the first "
                f"timer expiry at least {self.timeout_ms / 1000:g} s after the first SYN")
        return text + "".join(f" [{n}]" for n in self.notes)

    def schedule(self) -> SynSchedule:
        """Simulate the retransmission timer as tcp_retransmit_timer() runs it (see the comment above)."""
        r, lin = self.retries, self.linear_timeouts
        rto = self.rto_init_ms
        t_ms = 0
        syns = [0]
        # Bounded: the retransmission count cap (r + L) ends the loop at the latest.
        while True:
            t_ms += rto  # the timer armed after the last SYN expires
            retransmits = len(syns) - 1
            if retransmits >= r + lin or (retransmits > 0 and t_ms >= self.timeout_ms):
                return SynSchedule(tuple(ms / 1000 for ms in syns), t_ms / 1000, source=self.describe())
            syns.append(t_ms)
            # total_rto is now len(syns) - 1; the RTO doubles only past the linear ones.
            if len(syns) - 1 > lin:
                rto = min(rto * 2, self.rto_max_ms)
