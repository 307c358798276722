#!/usr/bin/env python3
"""Merge callgrind dumps into the linker's call-graph ordering file (`proxy/link-order.txt`).

  link_order.py BINARY OUT WEIGHT:REQS:DUMP...

Each DUMP is a callgrind dump of BINARY made with `--demangle=no` (so its function names are
the binary's symbols), REQS the requests it served and WEIGHT the share of traffic its scenario
stands for. An edge's weight is its calls per request, summed over the scenarios by WEIGHT, in
thousandths; edges under 10 (one call in a hundred requests) and functions the binary does not
define (libc's) are left out. lld reads the file (`--call-graph-ordering-file`) and places the
functions that call each other often next to each other (its C3 sort), so the code a request
runs shares fewer instruction-cache lines and pages. `benches/link_order.sh` makes the dumps.
"""
import collections
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind_split import Dump  # noqa: E402


def symbol(name):
    # callgrind appends `'2` for a recursion level and ` [file]` for a duplicate name.
    return name.split(" ")[0].split("'")[0]


def main():
    binary, out, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    nm = subprocess.run(["nm", "--defined-only", binary], check=True, capture_output=True, text=True)
    defined = {f[2] for f in (line.split() for line in nm.stdout.splitlines())
               if len(f) == 3 and f[1] in "tTwW"}
    weight = collections.Counter()
    for spec in specs:
        share, reqs, path = spec.split(":", 2)
        for (a, b), n in Dump(path).ncalls.items():
            a, b = symbol(a), symbol(b)
            if a != b and a in defined and b in defined:
                weight[(a, b)] += float(share) * n / int(reqs)
    lines = [f"{a} {b} {round(w * 1000)}" for (a, b), w in weight.most_common() if w * 1000 >= 10]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} call edges among {len({x for l in lines for x in l.split()[:2]})} "
          f"functions", file=sys.stderr)


if __name__ == "__main__":
    main()
