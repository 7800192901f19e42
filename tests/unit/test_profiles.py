"""The SYN retransmission models (verifier.analysis.schedules): measured rows, model properties, comparison."""

from __future__ import annotations

import pytest

from verifier.analysis.schedules import (
    DEFAULT_TOLERANCE,
    LINUX_SYSCTLS,
    LinuxProfile,
    StevensProfile,
    SynSchedule,
    Tolerance,
    tcp_model_timeout_ms,
    wheel_granularity_s,
)

# Measured on kernel 6.18 (the development machine, docs/environment.md, table "SYN
# retransmission on this kernel"): SYNs dropped at the router, times in s after the first SYN.
# (tcp_syn_linear_timeouts, retries, SYN times, ETIMEDOUT time)
MEASURED_6_18 = [
    (4, 1, (0, 1.00, 2.02), 3.05),
    (4, 2, (0, 1.03, 2.06, 3.08, 4.10, 5.13), 7.14),
    (4, 3, (0, 1.03, 2.06, 3.08, 4.10, 5.13, 7.14, 11.18), 19.37),
    (4, 4, (0, 1.03, 2.05, 3.08, 4.10, 5.13, 7.14, 11.17, 19.37), 35.50),
    (0, 1, (0, 1.00), 3.02),
    (0, 2, (0, 1.00, 3.02), 7.27),
    (0, 3, (0, 1.00, 3.02, 7.27), 15.47),
    (2, 2, (0, 1.01, 2.03, 3.06, 5.07), 9.30),
]


def row_id(row):
    return f"linear{row[0]}-retries{row[1]}"


# The development machine's kernel is built with HZ=250 (CONFIG_HZ in /proc/config.gz).
MEASURED_HZ = 250
TOLERANCES = {"hz-unknown": DEFAULT_TOLERANCE, "hz250": Tolerance(hz=MEASURED_HZ)}


@pytest.mark.parametrize("tolerance", TOLERANCES.values(), ids=TOLERANCES.keys())
@pytest.mark.parametrize("row", MEASURED_6_18, ids=row_id)
def test_model_reproduces_the_measured_rows(row, tolerance):
    linear, retries, syns, fail = row
    schedule = LinuxProfile(syn_retries=retries, linear_timeouts=linear).schedule()
    result = schedule.compare(syns, fail, tolerance)
    assert result.ok, "\n" + result.report()
    assert schedule.syn_count == len(syns)


@pytest.mark.parametrize("tolerance", TOLERANCES.values(), ids=TOLERANCES.keys())
@pytest.mark.parametrize("row", MEASURED_6_18, ids=row_id)
def test_measured_rows_reject_the_neighbouring_settings(row, tolerance):
    """The comparison can fail: a row does not fit any setting one step away whose schedule differs.

    (Some neighbours predict the same schedule: with one retry, every linear_timeouts >= 2 gives up
    at 3 s after SYNs at 0, 1 and 2 s, since the elapsed-time test fires before the linear phase ends.)
    """
    linear, retries, syns, fail = row
    own = LinuxProfile(syn_retries=retries, linear_timeouts=linear).schedule()
    differing = 0
    for r, lin in ((retries + 1, linear), (retries - 1, linear), (retries, linear + 1), (retries, linear - 1)):
        if r < 1 or lin < 0:
            continue
        other = LinuxProfile(syn_retries=r, linear_timeouts=lin).schedule()
        if (other.syn_times, other.fail_time) == (own.syn_times, own.fail_time):
            continue
        differing += 1
        assert not other.compare(syns, fail, tolerance).ok, (r, lin)
    assert differing >= 1


def test_measured_rows_are_not_the_textbook_count():
    # "retries + linear_timeouts" retransmissions would give 7 SYNs for linear 4 / retries 2; 6 were seen.
    schedule = LinuxProfile(syn_retries=2, linear_timeouts=4).schedule()
    assert schedule.retransmissions == 5 < 2 + 4


def test_documented_defaults():
    # Documentation/networking/ip-sysctl.rst: tcp_syn_retries 6 "corresponds to 63 seconds till the
    # last retransmission with the current initial RTO of 1 second. With this the final timeout for
    # an active TCP connection attempt will happen after 127 seconds" (written before linear timeouts).
    plain = LinuxProfile(syn_retries=6, linear_timeouts=0).schedule()
    assert plain.syn_times == (0, 1, 3, 7, 15, 31, 63) and plain.fail_time == 127
    # tcp_syn_linear_timeouts: "With an initial RTO of 1 and tcp_syn_linear_timeouts = 4 we would
    # expect SYN RTOs to be: 1, 1, 1, 1, 1, 2, 4, ..."
    linear = LinuxProfile(syn_retries=6, linear_timeouts=4).schedule()
    assert linear.gaps[:7] == (1, 1, 1, 1, 1, 2, 4)


@pytest.mark.parametrize("boundary,expected_ms", [(1, 3_000), (2, 7_000), (6, 127_000), (7, 247_000),
                                                   (10, 127_000 + 4 * 120_000)])
def test_tcp_model_timeout(boundary, expected_ms):
    # ilog2(120 s / 1 s) = 6: up to 6 retransmissions double, after that each adds TCP_RTO_MAX.
    assert tcp_model_timeout_ms(boundary, 1000, 120_000) == expected_ms


# --------------------------------------------------------------------------------------------------
# properties of the model

SETTINGS = [(r, lin) for r in (1, 2, 3, 5, 8) for lin in (0, 1, 2, 4, 7, 12)]


@pytest.mark.parametrize("retries,linear", SETTINGS)
def test_times_increase_and_gaps_follow_the_rule(retries, linear):
    p = LinuxProfile(syn_retries=retries, linear_timeouts=linear)
    s = p.schedule()
    assert s.syn_times[0] == 0
    assert all(b > a for a, b in zip(s.syn_times, s.syn_times[1:]))
    assert s.fail_time > s.syn_times[-1]
    for k, gap in enumerate(s.gaps):
        # After SYN k: the initial RTO while k <= linear_timeouts, doubling after, capped.
        expected = 1.0 if k <= linear else min(2.0 ** (k - linear), p.rto_max_ms / 1000)
        assert gap == expected, (k, s.gaps)


@pytest.mark.parametrize("retries,linear", SETTINGS)
def test_gives_up_at_the_first_expiry_past_the_model_timeout(retries, linear):
    p = LinuxProfile(syn_retries=retries, linear_timeouts=linear)
    s = p.schedule()
    timeout = p.timeout_ms / 1000
    # Every retransmission happened before the timeout (the first always does), the give-up after it.
    assert all(t < timeout for t in s.syn_times[2:])
    assert s.fail_time >= timeout
    # At least the retries that the setting names, never more than the count cap.
    assert retries <= s.retransmissions <= retries + linear
    if linear == 0:
        assert s.retransmissions == retries  # plain doubling: the time test and the count agree


def test_rto_max_caps_the_gaps_and_the_timeout():
    p = LinuxProfile(syn_retries=10, linear_timeouts=0, rto_max_ms=4000)
    s = p.schedule()
    assert max(s.gaps) == 4
    assert s.gaps[:4] == (1, 2, 4, 4)
    # tcp_model_timeout: ilog2(4) = 2 doublings (1+2+4 = 7 s), then 8 more of 4 s each.
    assert p.timeout_ms == 7000 + 8 * 4000 and s.fail_time == 39
    assert s.retransmissions == 10


def test_rto_max_not_a_multiple_of_the_initial_rto():
    # ilog2(1500 / 1000) = 0: T = 1 s + r * 1.5 s.
    p = LinuxProfile(syn_retries=2, linear_timeouts=0, rto_max_ms=1500)
    assert p.timeout_ms == 4000
    assert p.schedule().syn_times == (0, 1, 2.5) and p.schedule().fail_time == 4


def test_syncnt_overrides_the_sysctl():
    with_syncnt = LinuxProfile(syn_retries=6, linear_timeouts=3, syncnt=2)
    assert with_syncnt.retries == 2
    assert with_syncnt.schedule().syn_times == LinuxProfile(syn_retries=2, linear_timeouts=3).schedule().syn_times
    assert with_syncnt.schedule().fail_time == 10
    assert "TCP_SYNCNT=2" in with_syncnt.describe()
    # Raising it works too: the sysctl says 1, the socket 3.
    up = LinuxProfile(syn_retries=1, linear_timeouts=0, syncnt=3).schedule()
    assert up.syn_times == (0, 1, 3, 7) and up.fail_time == 15


def test_from_sysctls_reads_the_namespace_values():
    p = LinuxProfile.from_sysctls({"net.ipv4.tcp_syn_retries": "3", "net.ipv4.tcp_syn_linear_timeouts": "8",
                                   "net.ipv4.tcp_rto_max_ms": "60000"})
    assert (p.syn_retries, p.linear_timeouts, p.rto_max_ms, p.syncnt, p.notes) == (3, 8, 60000, None, ())
    assert set(LINUX_SYSCTLS) == {"net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts",
                                  "net.ipv4.tcp_rto_max_ms"}


def test_from_sysctls_on_an_older_kernel():
    p = LinuxProfile.from_sysctls({"net.ipv4.tcp_syn_retries": "2", "net.ipv4.tcp_syn_linear_timeouts": None},
                                  syncnt=1)
    assert (p.linear_timeouts, p.rto_max_ms, p.retries) == (0, 120_000, 1)
    assert any("tcp_syn_linear_timeouts is missing" in n for n in p.notes)
    assert any("tcp_rto_max_ms is missing" in n for n in p.notes)
    assert "taken as 0" in p.describe()
    with pytest.raises(ValueError, match="tcp_syn_retries"):
        LinuxProfile.from_sysctls({})


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        LinuxProfile(syn_retries=0)
    with pytest.raises(ValueError):
        LinuxProfile(syn_retries=2, linear_timeouts=-1)


# --------------------------------------------------------------------------------------------------
# the book's model

def test_stevens_schedule():
    s = StevensProfile().schedule()
    assert s.syn_times == (0, 6, 30) and s.fail_time == 75
    assert s.gaps == (6, 24, 45)
    assert "75" in s.source


def test_stevens_does_not_fit_any_measured_row():
    stevens = StevensProfile().schedule()
    for _, _, syns, fail in MEASURED_6_18:
        assert not stevens.compare(syns, fail).ok


def test_linux_does_not_fit_the_book():
    # The book's own timeline, against the kernel's default rule.
    assert not LinuxProfile(syn_retries=6, linear_timeouts=4).schedule().compare((0, 6, 30), 75).ok


# --------------------------------------------------------------------------------------------------
# the comparison and its report

def test_tolerance_is_asymmetric_and_scales_with_the_gap():
    tol = Tolerance(absolute_s=0.05, fraction=0.1)
    assert tol.allowed(0.1) == 0.05 and tol.allowed(4) == pytest.approx(0.4)
    assert tol.accepts(0.39, 4) and not tol.accepts(0.41, 4)
    assert tol.accepts(-0.04, 4) and not tol.accepts(-0.06, 4)  # timers do not fire early


def test_errors_do_not_accumulate():
    # Every gap 10 % late: each item is within 13 % of its own gap, though the total drifts by 1.5 s.
    s = LinuxProfile(syn_retries=3, linear_timeouts=0).schedule()
    late = [0.0]
    for gap in s.gaps[:-1]:
        late.append(late[-1] + gap * 1.1)
    assert s.compare(late, late[-1] + s.gaps[-1] * 1.1).ok


def test_report_shows_predicted_and_observed_per_syn():
    s = LinuxProfile(syn_retries=2, linear_timeouts=4).schedule()
    # One SYN too many (the "retries + linear" count), and a late failure.
    result = s.compare((0, 1.03, 2.06, 3.08, 4.10, 5.13, 7.14), 9.2)
    assert not result.ok and not result.count_ok
    text = result.report()
    lines = text.splitlines()
    assert "tcp_syn_retries=2" in text and "tcp_syn_linear_timeouts=4" in text
    assert any(line.startswith("SYN 2") and "1.000" in line and "1.030" in line and "ok" in line for line in lines)
    assert any(line.startswith("SYN 7") and "UNEXPECTED" in line for line in lines)
    assert any(line.startswith("ETIMEDOUT") and "FAIL" in line for line in lines)
    assert "DOES NOT MATCH" in text
    missing = s.compare((0, 1.0, 2.0), 7.0)
    assert [i.name for i in missing.failures()] == ["SYN 4", "SYN 5", "SYN 6"]
    assert "MISSING" in missing.report()
    no_fail = s.compare(s.syn_times, None)
    assert [i.name for i in no_fail.failures()] == ["ETIMEDOUT"]


def test_a_gap_too_long_fails_with_its_numbers():
    s = LinuxProfile(syn_retries=1, linear_timeouts=0).schedule()  # 0, 1; fail at 3
    result = s.compare((0, 2.0), 4.0)  # doubling from the start: the 1 s gap took 2 s
    bad = result.failures()
    assert [i.name for i in bad] == ["SYN 2"]
    assert bad[0].deviation_s == pytest.approx(1.0) and bad[0].allowed_s == pytest.approx(0.13)


def test_schedule_validation():
    with pytest.raises(ValueError):
        SynSchedule((1.0, 2.0), 3.0)
    with pytest.raises(ValueError):
        SynSchedule((0.0, 2.0, 1.0), 3.0)
    with pytest.raises(ValueError):
        SynSchedule((0.0, 2.0), 2.0)


# --------------------------------------------------------------------------------------------------
# the timer-slack model: what the tolerance accepts and rejects, derived from the timer wheel
# (kernel/time/timer.c: level n >= 1 holds timeouts of 63 * 8**(n-1) to 63 * 8**n - 1 jiffies and
# rounds their expiry up to a multiple of 8**n jiffies; level 0 rounds up to the next jiffy)

@pytest.mark.parametrize("hz,timeout_s,late_jiffies", [
    (250, 0.2, 1),      # 50 jiffies: level 0
    (250, 1.0, 8),      # 250 jiffies: level 1 (63..503)
    (250, 2.0, 8),      # 500 jiffies: still level 1
    (250, 2.016, 64),   # 504 jiffies: level 2 (504..4031)
    (250, 16.0, 64),    # 4000 jiffies: level 2
    (250, 17.0, 512),   # 4250 jiffies: level 3
    (1000, 1.0, 64),    # 1000 jiffies: level 2
    (100, 1.0, 8),      # 100 jiffies: level 1
])
def test_wheel_granularity_follows_the_kernel_levels(hz, timeout_s, late_jiffies):
    assert wheel_granularity_s(timeout_s, hz) == pytest.approx(late_jiffies / hz)


def test_at_hz_250_a_packet_may_be_one_wheel_granularity_late_and_never_early():
    tol = Tolerance(hz=MEASURED_HZ)
    # 1 s (250 jiffies, granularity 8 jiffies = 32 ms): docs/environment.md's 1-3 % slack fits ...
    for observed in (1.0, 1.01, 1.02, 1.03):
        assert tol.fits(observed, 1.0), observed
    # ... up to 32 ms of rounding plus 20 ms from the timer to the packet; 60 ms late does not fit.
    assert tol.fits(1.051, 1.0) and not tol.fits(1.06, 1.0)
    # 2 s (500 jiffies) is in the same level: the same 32 ms, not twice as much.
    assert tol.fits(2.05, 2.0) and not tol.fits(2.06, 2.0)
    # 4 s (1000 jiffies, granularity 64 jiffies = 256 ms): the measured 4.25 s fits, 4.3 s does not.
    assert tol.fits(4.25, 4.0) and not tol.fits(4.30, 4.0)
    # The wheel rounds expiries up: a timer never fires early; 1 ms covers a timer armed just before
    # its packet was stamped, 5 ms early is a different timer.
    assert tol.fits(0.9995, 1.0) and not tol.fits(0.995, 1.0)
    # A process the timer wakes (connect() returning ETIMEDOUT) may take 50 ms, not 20 ms, more.
    assert tol.fits(4.30, 4.0, woken=True) and not tol.fits(4.31, 4.0, woken=True)
    # A whole initial RTO too late or too early (the rival schedules' difference) never fits.
    assert not tol.fits(2.0, 1.0) and not tol.fits(1.0, 2.0)


def test_compare_gives_the_wake_up_allowance_to_connect_returning_only():
    tol = Tolerance(hz=MEASURED_HZ)
    s = LinuxProfile(syn_retries=1, linear_timeouts=4).schedule()  # SYNs at 0, 1, 2; ETIMEDOUT at 3
    # 32 ms of rounding and 40 ms of wake-up: fine for connect() returning ...
    assert s.compare((0, 1.0, 2.0), 2.0 + 1.072, tol).ok
    # ... not for a SYN sent from the timer.
    late_syn = s.compare((0, 1.072, 2.072), 3.072, tol)
    assert [i.name for i in late_syn.failures()] == ["SYN 2"]
    assert late_syn.items[-1].allowed_s == pytest.approx(0.032 + 0.05)


def test_without_hz_the_tolerance_covers_the_worst_rounding_of_every_hz():
    gaps = [0.25 * k for k in range(1, 257)] + [63 * 8 ** n / hz for n in range(4) for hz in (100, 250, 300, 1000)]
    for hz in (100, 250, 300, 1000):
        for gap in gaps:
            assert DEFAULT_TOLERANCE.accepts(wheel_granularity_s(gap, hz), gap), (hz, gap)
    # The bound is the wheel's own, 8/63 = 12.7 % at the start of a level (504 jiffies at HZ=1000:
    # 64 ms late on 0.504 s); 12 % would not cover it.
    assert wheel_granularity_s(0.504, 1000) / 0.504 == pytest.approx(8 / 63)
    assert not Tolerance(fraction=0.12).accepts(wheel_granularity_s(0.504, 1000), 0.504)
    # Without HZ the capture may come from anywhere: 50 ms early or late is allowed on a short gap,
    # 60 ms is not; 13 % late on a long gap is, 14 % is not.
    assert DEFAULT_TOLERANCE.fits(0.951, 1.0) and not DEFAULT_TOLERANCE.fits(0.94, 1.0)
    assert DEFAULT_TOLERANCE.fits(0.249, 0.2) and not DEFAULT_TOLERANCE.fits(0.26, 0.2)
    assert DEFAULT_TOLERANCE.fits(8 * 1.129, 8) and not DEFAULT_TOLERANCE.fits(8 * 1.14, 8)
    assert "HZ unknown" in DEFAULT_TOLERANCE.describe() and "HZ=250" in Tolerance(hz=250).describe()


def test_a_schedule_observed_only_by_its_failure_time_adds_up_every_gap():
    s = LinuxProfile(syn_retries=1, linear_timeouts=4).schedule()  # SYNs at 0, 1, 2; ETIMEDOUT at 3
    lo, hi = s.fail_window(Tolerance(hz=MEASURED_HZ))
    # Three 1 s gaps: each up to 32 ms of rounding, two packets (20 ms) and one woken process (50 ms).
    assert lo == pytest.approx(3 - 3 * 0.001) and hi == pytest.approx(3 + 3 * 0.032 + 2 * 0.02 + 0.05)
    # The measured 3.05 s fits (docs/environment.md: linear 4, retries 1), 3.2 s would not.
    assert lo <= 3.05 <= hi and not lo <= 3.2 <= hi
    # The time alone does not tell "1 s + 2 s" (one retransmission, then doubling) from "1 s, 1 s, 1 s":
    # both give up at 3 s, so a check of the failure time must count the retransmissions too.
    doubling = LinuxProfile(syn_retries=1, linear_timeouts=0).schedule()
    assert doubling.fail_time == s.fail_time and (doubling.retransmissions, s.retransmissions) == (1, 2)
