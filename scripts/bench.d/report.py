"""The benchmark's results: one row per workload (zarrfs's time, the
reference's, rates, ratio, target, result), and the table they print as."""

import statistics
from dataclasses import dataclass

MiB = 1 << 20
KiB = 1 << 10


@dataclass
class Row:
    workload: str
    zarrfs_s: float | None = None
    ref_s: float | None = None
    zarrfs_rate: str = ""
    ref_rate: str = ""
    ratio: float | None = None       # zarrfs rate / reference rate
    target: str = ""
    passed: bool | None = None       # None: no target, or not measured
    reference: str = ""              # what the reference is
    note: str = ""
    error: str = ""


def fmt_s(s):
    if s is None:
        return "-"
    if s < 0.1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.3f} s"


def fmt_rate(value, unit):
    if value >= 10000:
        return f"{value:,.0f} {unit}"
    if value >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def median(xs):
    return statistics.median(xs) if xs else None


class Abort(Exception):
    """A workload could not be run (as opposed to a missed target)."""


def print_table(rows):
    head = ["workload", "zarrfs", "reference", "zarrfs rate", "reference rate", "ratio", "target", "result"]
    table = []
    for r in rows:
        if r.error:
            result = "ERROR"
        elif r.passed is None:
            result = "-"
        else:
            result = "pass" if r.passed else "MISSED"
        table.append([r.workload, fmt_s(r.zarrfs_s), fmt_s(r.ref_s), r.zarrfs_rate, r.ref_rate,
                      f"{r.ratio:.2f}" if r.ratio is not None else "", r.target, result])
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)] if table else []
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
    notes = [(r.workload, r.reference, r.note) for r in rows if r.reference or r.note]
    errors = [(r.workload, r.error) for r in rows if r.error]
    if notes:
        print()
        for w, ref, note in notes:
            print(f"  {w}: " + "; ".join(x for x in (f"reference: {ref}" if ref else "", note) if x))
    for w, e in errors:
        print(f"  ERROR {w}: {e}")
