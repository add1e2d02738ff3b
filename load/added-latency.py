"""Quantiles of the gateway's own added-latency histogram between two scrapes of /metrics.

    python3 load/added-latency.py BEFORE.txt AFTER.txt

Sums `strangler_gateway_added_latency_seconds_bucket` over every route, takes the difference
of the two scrapes (the requests in between), and interpolates p50, p99 and p99.9 linearly
inside the bucket each falls in. Prints `p50 X p99 Y p999 Z` in microseconds.
"""

import re
import sys

NAME = "strangler_gateway_added_latency_seconds_bucket"


def buckets(path):
    out = {}
    for line in open(path):
        if not line.startswith(NAME):
            continue
        m = re.search(r'le="([^"]+)"\}\s+(\S+)', line)
        if not m:
            continue
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        out[le] = out.get(le, 0.0) + float(m.group(2))
    return out


def quantile(cum, q):
    total = cum[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lo_le, lo_n = 0.0, 0.0
    for le, n in cum:
        if n >= rank:
            if le == float("inf"):
                return lo_le
            span = n - lo_n
            frac = (rank - lo_n) / span if span > 0 else 1.0
            return lo_le + (le - lo_le) * frac
        lo_le, lo_n = le, n
    return lo_le


def main():
    before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
    cum = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not cum or cum[-1][1] <= 0:
        sys.exit("no requests recorded in the added-latency histogram between the scrapes")
    print(" ".join(f"{k} {quantile(cum, q) * 1e6:.1f}" for k, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))))


if __name__ == "__main__":
    main()
