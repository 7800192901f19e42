"""`verifier kernels`: the conformance suite on several kernels side by side (``sudo make kernels``).

    verifier kernels [KERNEL ...] [--out DIR] [--jobs N] [--workers N] [--guest-cpus N] [--json]

KERNEL is ``host`` (the running kernel), ``6.1`` or ``6.12`` (Debian's, fetched into .cache/kernels
once), or the path of a vmlinuz/vmlinux (its modules folder beside it, as a package unpacks, or in
/lib/modules/RELEASE). Default: host 6.1 6.12. Exit status: 0 every check held on every kernel; 1 a
check failed or a kernel's run did not finish; 2 bad input (an unknown kernel, no root, QEMU missing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from verifier import exits

from .image import DEBIAN

__all__ = ["add_parsers", "kernel_spec"]

DEFAULT = ("host", "6.1", "6.12")


def kernel_spec(text: str) -> str:
    """An argparse type: host, a name of DEBIAN, or an existing file."""
    if text == "host" or text in DEBIAN or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a kernel: use host, {', '.join(DEBIAN)} or the path of a "
                                     f"vmlinuz/vmlinux file")


def positive(text: str) -> int:
    from verifier import argtypes

    return argtypes.int_in(1, 8, "the count")(text)


def add_parsers(subparsers, *, write_html=None) -> None:
    """Register `kernels` on the `verifier` command's subparsers. `write_html(out, {label: the
    kernel's report.json})` writes the HTML report (`verifier.report.write_kernels_html`, handed in
    by the command line, a layer above this one)."""
    p = subparsers.add_parser(
        "kernels", help="run the conformance suite on several kernels (QEMU guests) and compare them",
        description="Run the conformance suite (tests/conformance) on the host kernel and on other kernels booted "
                    "in QEMU guests (pure emulation; the host's root shared read-only), then write OUT/report.md "
                    "and OUT/report.json: one row per claim check, one column per kernel, differences explained.",
        epilog=exits.epilog(exits.OK, exits.FAILED, exits.BAD_INPUT, exits.INTERRUPTED,
                            words={exits.FAILED: "1 a check failed on a kernel, or a kernel's run did not finish"}))
    p.add_argument("kernels", nargs="*", type=kernel_spec, metavar="KERNEL",
                   help=f"host, {', '.join(DEBIAN)}, or a vmlinuz/vmlinux path (default: {' '.join(DEFAULT)})")
    p.add_argument("--out", default="captures/kernels", metavar="DIR",
                   help="the report and one folder of captures per kernel (default captures/kernels)")
    p.add_argument("--jobs", type=positive, default=2,
                   help="guests run at once (default 2: one per core); the host's own run goes beside them")
    p.add_argument("--workers", type=positive, default=2, help="pytest-xdist workers per kernel (default 2)")
    p.add_argument("--guest-cpus", type=positive, default=1, help="CPUs of each guest (default 1)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_kernels, write_html=write_html)


def cmd_kernels(args) -> int:
    import shutil

    from .compare import run_all, write_comparison
    from .guest import available
    from .image import KernelError

    specs = list(dict.fromkeys(args.kernels or DEFAULT))
    if os.geteuid() != 0:
        print("verifier kernels: needs root (network namespaces on the host): run with sudo", file=sys.stderr)
        return exits.BAD_INPUT
    why = available() if any(s != "host" for s in specs) else None
    if why:
        print(f"verifier kernels: {why}", file=sys.stderr)
        return exits.BAD_INPUT
    out = Path(args.out)
    from .compare import label_of

    for spec in specs:  # only what this command writes: the kernels' folders and the report
        shutil.rmtree(out / label_of(spec), ignore_errors=True)
    for name in ("report.md", "report.json", "report.html"):
        (out / name).unlink(missing_ok=True)
    try:
        runs = run_all(specs, out, jobs=args.jobs, workers=args.workers, guest_cpus=args.guest_cpus,
                       progress=(lambda line: print(line, file=sys.stderr, flush=True)))
    except KernelError as exc:
        print(f"verifier kernels: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    report = write_comparison(runs, out)
    html = None
    if args.write_html is not None:
        try:
            html = args.write_html(out, {r.label: r.folder / "report.json" for r in runs})
        except Exception as exc:  # the pictures must not cost the Markdown and JSON reports
            print(f"verifier kernels: {out / 'report.html'} not written: {type(exc).__name__}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for label in report["labels"]:
            cells = [r["kernels"][label]["verdict"] for r in report["rows"]]
            print(f"{label:>8}: {cells.count('holds')} of {len(cells)} checks hold")
        print(f"{sum(r['differs'] for r in report['rows'])} checks differ between kernels; report: {out / 'report.md'}"
              + (f" (pictures: {html})" if html else ""))
    bad = any(r.status != 0 for r in runs)
    return exits.FAILED if bad else exits.OK
