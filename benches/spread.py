"""How a benchmark's per-round figures spread, for the end-to-end scripts' summaries."""

import statistics


def per_round(values, fmt, unit=""):
    """'median M<unit>, quartiles Q1..Q3, range MIN..MAX (N rounds)' with each figure in
    `fmt` (quartiles only from 4 rounds on), or None for fewer than 2 rounds."""
    values = sorted(values)
    if len(values) < 2:
        return None
    quartiles = ""
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        quartiles = f"quartiles {q[0]:{fmt}}..{q[2]:{fmt}}, "
    return (f"median {statistics.median(values):{fmt}}{unit}, {quartiles}"
            f"range {values[0]:{fmt}}..{values[-1]:{fmt}} ({len(values)} rounds)")
