#!/usr/bin/env python3
"""Read callgrind dumps kept by `benches/callgrind.sh --keep DIR` per function, per request.

callgrind_annotate prints inclusive costs only for these dumps (functions are named through
inlined frames), so this reads the format itself: a function's self cost is the cost lines under
its `fn=` that do not follow a `calls=` line; its inclusive cost adds the lines that follow its
`calls=` lines. REQS is the request count callgrind.sh printed for that dump.

  callgrind_split.py self DUMP REQS [--files]      top self costs (--files: by source file)
  callgrind_split.py diff A REQS_A B REQS_B        self cost per function, A minus B
  callgrind_split.py hooks DUMP REQS               inclusive cost of each Sluice hook
  callgrind_split.py callees DUMP REQS REGEX       what functions matching REGEX call
  callgrind_split.py callers DUMP REQS REGEX       who calls functions matching REGEX (calls/req)
  callgrind_split.py lines DUMP REQS REGEX         self cost of functions matching REGEX by source
                                                   line (inlined code under its own file:line)

--event NAME (anywhere) reads another event than the first (Ir), e.g. `--event I1mr` for the
first-level instruction cache misses of a dump made with `callgrind.sh --cache-sim`.
"""
import collections
import re
import sys


class Dump:
    def __init__(self, path, event=None):
        names, files = {}, {}
        self.self_fn = collections.Counter()
        self.self_file = collections.Counter()
        self.calls = collections.Counter()  # (caller, callee) -> inclusive cost
        self.ncalls = collections.Counter()  # (caller, callee) -> call count
        self.lines = collections.Counter()  # (fn, file, line) -> self cost
        line_no = 0

        def comp(s, table):
            m = re.match(r"\((\d+)\)(?:\s+(.*))?", s)
            if not m:
                return s
            if m.group(2) is not None:
                table[m.group(1)] = m.group(2)
            return table.get(m.group(1), s)

        fn = fl = cur_file = cfn = None
        pending = None
        col = 1  # the cost column after the position: the first event unless --event
        with open(path, errors="replace") as f:
            for line in f:
                c = line[:1]
                if c.isdigit() or c in "+-*":
                    parts = line.split()
                    if len(parts) < 2:
                        continue
                    pos = parts[0]
                    if pos[0] in "+-":
                        line_no += int(pos)
                    elif pos != "*":
                        line_no = int(pos)
                    # Trailing zero costs are left out of a line.
                    v = int(parts[col]) if col < len(parts) else 0
                    if pending is not None:
                        self.calls[(fn, pending[0])] += v
                        self.ncalls[(fn, pending[0])] += pending[1]
                        pending = None
                    else:
                        self.self_fn[fn] += v
                        self.self_file[cur_file] += v
                        self.lines[(fn, cur_file, line_no)] += v
                elif line.startswith("events:") and event:
                    names_ = line.split()[1:]
                    if event not in names_:
                        sys.exit(f"{path}: no event {event} (it has {' '.join(names_)})")
                    col = names_.index(event) + 1
                elif line.startswith("fn="):
                    fn = comp(line[3:].strip(), names)
                    cur_file = fl
                elif line.startswith("fl="):
                    fl = comp(line[3:].strip(), files)
                    cur_file = fl
                elif line.startswith(("fi=", "fe=")):
                    cur_file = comp(line[3:].strip(), files)
                elif line.startswith("cfn="):
                    cfn = comp(line[4:].strip(), names)
                elif line.startswith(("cfi=", "cfl=")):
                    comp(line[4:].strip(), files)
                elif line.startswith("calls="):
                    pending = (cfn, int(line[6:].split()[0]))

    def inclusive(self):
        inc = collections.Counter(self.self_fn)
        for (caller, callee), v in self.calls.items():
            if caller != callee:
                inc[caller] += v
        return inc


def main():
    argv, event = sys.argv[1:], None
    if "--event" in argv:
        i = argv.index("--event")
        event = argv[i + 1]
        del argv[i : i + 2]
    load = lambda path: Dump(path, event)  # noqa: E731
    cmd, args = argv[0], argv[1:]
    if cmd == "diff":
        a, na, b, nb = load(args[0]), int(args[1]), load(args[2]), int(args[3])
        keys = set(a.self_fn) | set(b.self_fn)
        d = {k: a.self_fn[k] / na - b.self_fn[k] / nb for k in keys}
        print(f"total A {sum(a.self_fn.values()) / na:.0f}  B {sum(b.self_fn.values()) / nb:.0f}")
        for k in sorted(keys, key=lambda k: -abs(d[k]))[:60]:
            print(f"{d[k]:+8.1f}  A {a.self_fn[k] / na:8.1f}  B {b.self_fn[k] / nb:8.1f}  {k}")
        return
    dump, n = load(args[0]), int(args[1])
    if cmd == "self":
        table = dump.self_file if "--files" in args else dump.self_fn
        print(f"total {sum(table.values()) / n:.0f}/request")
        for k, v in table.most_common(60):
            print(f"{v / n:9.1f}  {k}")
    elif cmd == "hooks":
        inc = dump.inclusive()
        pat = re.compile(r"<sluice::edge::Edge as pingora_proxy::proxy_trait::ProxyHttp>::(\w+)")
        rows = [(v, k) for k, v in inc.items() if pat.match(k)]
        for v, k in sorted(rows, reverse=True):
            print(f"{v / n:9.1f}  {k}")
    elif cmd in ("callees", "callers"):
        pat = re.compile(args[2])
        out, cnt = collections.Counter(), collections.Counter()
        for (caller, callee), v in dump.calls.items():
            side, other = (caller, callee) if cmd == "callees" else (callee, caller)
            if side and pat.search(side):
                out[other] += v
                cnt[other] += dump.ncalls[(caller, callee)]
        for k, v in out.most_common(30):
            print(f"{v / n:9.1f} instr {cnt[k] / n:6.2f} calls  {k}")
    elif cmd == "lines":
        pat = re.compile(args[2])
        rows = collections.Counter()
        for (fn, fl, ln), v in dump.lines.items():
            if fn and pat.search(fn):
                rows[(fl, ln)] += v
        print(f"total {sum(rows.values()) / n:.0f}/request")
        for (fl, ln), v in rows.most_common(40):
            print(f"{v / n:9.1f}  {fl}:{ln}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
