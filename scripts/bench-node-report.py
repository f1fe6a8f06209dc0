"""Markdown report of scripts/bench-node.sh from its raw data.

  bench-node-report.py starts OUT CLK_TCK SECONDS
  bench-node-report.py node OUT CLK_TCK SECONDS PROCS PODS CONTAINERS STARTS COPIES MB SETUP EVERY

Reads, per agent NAME in OUT: NAME.tsv (t, utime+stime ticks, VmRSS,
RssAnon, RssFile in kB, load1, the machine's busy and total CPU ticks, its
MemAvailable in kB), NAME.metrics (each /metrics scrape after a line
"@ t"), NAME.smaps (smaps_rollup after "@ label"), NAME.smaps-end (the
whole smaps at the end); for the node phase also overview.json (the page's
/api/overview at the end).
"""

import json
import sys

MIB_KB = 1024.0
MIB = 2.0**20


def metrics(path):
    """{t: {metric line name (labels included): value}}."""
    at, scrapes = None, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("@ "):
                at = float(line[2:])
                scrapes[at] = {}
            elif line and at is not None:
                name, _, value = line.rpartition(" ")
                try:
                    scrapes[at][name] = float(value)
                except ValueError:
                    pass
    return scrapes


def load(out, name):
    """The 10 s readings that have a /metrics scrape, each with it as "m"."""
    m = metrics(f"{out}/{name}.metrics")
    rows = []
    with open(f"{out}/{name}.tsv") as f:
        head = f.readline().split()
        for line in f:
            r = dict(zip(head, map(float, line.split())))
            r["m"] = m.get(r["t"], {})
            if "hearth_samples_total" in r["m"]:
                rows.append(r)
    return rows


def g(r, name, default=0.0):
    return r["m"].get(name, default)


class Span:
    """What the agent (and the machine) did between two readings."""

    def __init__(self, a, b, tck):
        self.dt = b["t"] - a["t"]
        self.cpu = (b["ticks"] - a["ticks"]) / tck
        all_ = b["cpu_all"] - a["cpu_all"]
        self.busy = 100 * (b["cpu_busy"] - a["cpu_busy"]) / all_ if all_ else float("nan")
        self.samples = g(b, "hearth_samples_total") - g(a, "hearth_samples_total")
        self.lost = g(b, "hearth_lost_samples_total") - g(a, "hearth_lost_samples_total")

    def cpu_pct(self):
        return 100 * self.cpu / self.dt

    def us_per_sample(self):
        return 1e6 * self.cpu / self.samples if self.samples else float("nan")

    def lost_pct(self):
        total = self.samples + self.lost
        return 100 * self.lost / total if total else 0.0


def slope(points):
    """Least-squares slope of [(t, y)], or None."""
    n = len(points)
    if n < 3:
        return None
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else None


def per_10_min(s):
    return "n/a" if s is None else f"{600 * s:+.1f}"


def mappings_line(out, name, bindir):
    """Where the resident size is at the end, from the agent's full smaps."""
    by_path, path = {}, None
    try:
        with open(f"{out}/{name}.smaps-end") as f:
            for line in f:
                head = line.split(None, 5)
                if len(head) >= 5 and "-" in head[0] and ":" in head[3]:
                    path = head[5].strip() if len(head) == 6 else ""
                elif line.startswith("Rss:") and path is not None:
                    by_path[path] = by_path.get(path, 0) + int(line.split()[1])
    except OSError as e:
        return f"mappings at the end: none read ({e})"
    anon = sum(v for p, v in by_path.items() if not p.startswith("/"))
    copies = {p: v for p, v in by_path.items() if p.startswith(bindir + "/")}
    others = sorted(((v, p) for p, v in by_path.items() if p.startswith("/") and p not in copies),
                    reverse=True)[:3]
    return (f"resident at the end, by mapping: not file-backed (heap, anonymous, stack) "
            f"{anon / MIB_KB:.1f} MiB; {len(copies)} bigbin copies "
            f"{sum(copies.values()) / MIB_KB:.1f} MiB; largest other files: "
            + ", ".join(f"{p} {v / MIB_KB:.1f} MiB" for v, p in others))


def smaps_line(out, name):
    keep = ("Rss", "Anonymous", "Pss_File", "Shared_Clean", "Private_Dirty")
    sections = []
    with open(f"{out}/{name}.smaps") as f:
        for line in f:
            if line.startswith("@ "):
                sections.append((line[2:].strip(), []))
            elif sections and line.split(":")[0] in keep:
                key, value = line.split()[:2]
                sections[-1][1].append(f"{key[:-1]} {int(value):,}")
    return "smaps_rollup (kB): " + "; ".join(f"{label}: {', '.join(v)}" for label, v in sections)


def starts(out, tck, secs):
    rows = load(out, "starts")
    print(f"## 1. Process starts: split_c + split_rust + spawner (150 starts/s), "
          f"agent with its page on, {secs} s")
    print()
    if len(rows) < 2:
        print("(not enough readings)")
        return
    print("| from | s | agent CPU s | CPU % of a core | samples | samples/s | CPU µs/sample "
          "| lost records | lost % | machine busy % | load1 (mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    later = next((r for r in rows if r["t"] >= 10), rows[0])
    for label, first in [("agent healthy", rows[0]), ("10 s later", later)]:
        s = Span(first, rows[-1], tck)
        loads = [r["load1"] for r in rows if r["t"] >= first["t"]]
        print(f"| {label} | {s.dt:.0f} | {s.cpu:.2f} | {s.cpu_pct():.2f} | {s.samples:.0f} | "
              f"{s.samples / s.dt:.1f} | {s.us_per_sample():.0f} | {s.lost:.0f} | "
              f"{s.lost_pct():.2f} | {s.busy:.0f} | {sum(loads) / len(loads):.2f} |")
    print()
    print(smaps_line(out, "starts"))
    print()


def overview_line(out):
    try:
        with open(f"{out}/overview.json") as f:
            ov = json.load(f)
        rows = ov["rows"]
        pods = [r for r in rows if r["kind"] == "pod"]
        named = [r for r in pods if not r["key"].startswith("pod:uid:")]
        loose = [r for r in rows if r["kind"] == "container" and r["depth"] == 0]
        svc = sum(r["processes"] for r in rows
                  if r["kind"] == "process" and r["depth"] == 2 and r["label"].startswith("svc-"))
        return (f"page (/api/overview, whole history): {len(named)} pods named, "
                f"{len(pods) - len(named)} known only by uid, {len(loose)} containers outside "
                f"any pod; {svc} svc-* processes under pods; {ov['total_samples']} samples, "
                f"{ov['lost_samples']} lost, {len(ov['timeline'])} windows")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"page: no overview ({e})"


def node(out, tck, secs, procs, pods, ncont, nstarts, copies, mb, setup, every):
    block = 300 if secs >= 600 else 60
    warm = 300 if secs > 600 else secs // 2
    print(f"## 2. Busy node, {secs / 60:g} min: {procs} processes in {pods} pods ({ncont} "
          f"containers), 150 starts/s, a new {mb} MB binary every {every} s ({nstarts} starts "
          f"over {copies} copies)")
    print()
    print(f"Set-up before the agents started: {setup} s. Rows are {block // 60}-minute intervals; "
          "CPU µs/sample = agent CPU time / samples taken in the interval; lost % = lost / "
          "(samples + lost); memory at the interval's end; load1 the mean of the 10 s readings; "
          "binaries = `hearth_binaries`, history = `hearth_ui_history_bytes`, report = max of "
          "`hearth_report_seconds`.")
    print()
    for name, title in [("page", "page on, --ui-history 15m"), ("nopage", "--ui-listen off")]:
        rows = load(out, name)
        print(f"### Agent, {title}")
        print()
        if len(rows) < 2:
            print("(not enough readings)")
            print()
            continue
        print("| minutes | CPU % of a core | CPU µs/sample | samples/s | lost % | VmRSS MiB "
              "| RssAnon MiB | RssFile MiB | machine busy % | load1 | binaries | history MiB "
              "| report s (max) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        end, lo = rows[-1]["t"], 0.0
        while lo < end - 1:
            hi = min(lo + block, end)
            a = min(rows, key=lambda r: abs(r["t"] - lo))
            b = min(rows, key=lambda r: abs(r["t"] - hi))
            inside = [r for r in rows if a["t"] < r["t"] <= b["t"]]
            if b["t"] <= a["t"] or not inside:
                break
            s = Span(a, b, tck)
            print(f"| {a['t'] / 60:.0f}–{b['t'] / 60:.0f} | {s.cpu_pct():.2f} | "
                  f"{s.us_per_sample():.0f} | {s.samples / s.dt:.1f} | {s.lost_pct():.2f} | "
                  f"{b['rss_kb'] / MIB_KB:.1f} | {b['anon_kb'] / MIB_KB:.1f} | "
                  f"{b['file_kb'] / MIB_KB:.1f} | {s.busy:.0f} | "
                  f"{sum(r['load1'] for r in inside) / len(inside):.1f} | "
                  f"{g(b, 'hearth_binaries'):.0f} | {g(b, 'hearth_ui_history_bytes') / MIB:.1f} | "
                  f"{max(g(r, 'hearth_report_seconds') for r in inside):.2f} |")
            lo = hi
        print()
        first, last = rows[0], rows[-1]
        s = Span(first, last, tck)
        print(f"Whole run: {s.cpu:.1f} s of CPU in {s.dt:.0f} s ({s.cpu_pct():.2f} % of a core), "
              f"{s.samples:.0f} samples ({s.us_per_sample():.0f} µs of CPU each), {s.lost:.0f} "
              f"records lost ({s.lost_pct():.2f} %); windows {g(last, 'hearth_windows_total'):.0f}, "
              f"dropped {g(last, 'hearth_windows_dropped_total'):.0f}; the machine was "
              f"{s.busy:.0f} % busy, memory available at least "
              f"{min(r['avail_kb'] for r in rows) / MIB_KB:.0f} MiB.")
        print()
        after = [r for r in rows if r["t"] >= warm]
        if after:
            top = max(after, key=lambda r: r["rss_kb"])
            rss = per_10_min(slope([(r["t"], r["rss_kb"] / MIB_KB) for r in after]))
            anon = per_10_min(slope([(r["t"], r["anon_kb"] / MIB_KB) for r in after]))
            print(f"After warm-up (t ≥ {warm / 60:g} min): max VmRSS {top['rss_kb'] / MIB_KB:.1f} MiB "
                  f"(at {top['t'] / 60:.1f} min), max RssAnon "
                  f"{max(r['anon_kb'] for r in after) / MIB_KB:.1f} MiB; slope VmRSS {rss} MiB/10 min, "
                  f"RssAnon {anon} MiB/10 min (least squares over {len(after)} readings).")
            full = [r for r in rows if r["t"] >= 930]
            if name == "page" and len(full) >= 3:
                rss = per_10_min(slope([(r["t"], r["rss_kb"] / MIB_KB) for r in full]))
                anon = per_10_min(slope([(r["t"], r["anon_kb"] / MIB_KB) for r in full]))
                print(f"Once the 15-minute history is full (t ≥ 15.5 min): slope VmRSS {rss} "
                      f"MiB/10 min, RssAnon {anon} MiB/10 min.")
            print()
        parts = sorted((k, v) for k, v in last["m"].items() if k.startswith("hearth_memory"))
        if parts:
            print("| memory at the end (`hearth_memory*`) | MiB |")
            print("|---|---:|")
            for k, v in parts:
                print(f"| `{k}` | {v / MIB:.1f} |")
        else:
            print("Memory by part: this agent exports no `hearth_memory*` metric.")
        print()
        print(f"pods resolved: {g(last, 'hearth_k8s_pods'):.0f} of {pods} (hearth_k8s_pods; "
              f"watch healthy {g(last, 'hearth_k8s_watch_healthy'):.0f}, failures "
              f"{g(last, 'hearth_k8s_watch_failures_total'):.0f})")
        if name == "page":
            print()
            print(overview_line(out))
        print()
        print(mappings_line(out, name, f"{out}/bin"))
        print()
        print(smaps_line(out, name))
        print()


def main():
    what, out, tck, secs, *rest = sys.argv[1:]
    if what == "starts":
        starts(out, int(tck), int(secs))
    else:
        node(out, int(tck), int(secs), *rest)


main()
