#!/usr/bin/env python3
"""Medians of a bench/run-ab.sh directory: per workload and side, end-to-end p50/p99 and
the broker's CPU in each run."""
import glob
import json
import re
import statistics
import sys

runs = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    match = re.match(r".*/(.+)-(before|after)-(\d+)\.json$", path)
    if not match:
        continue
    workload, side, round_ = match.groups()
    result = json.load(open(path))
    overall = result["overall"]
    cpu = re.search(r"broker (\d+)%", open(path[:-5] + ".txt").read())
    runs.setdefault((workload, side), []).append(
        (int(round_), overall["end_to_end"]["p50_us"] / 1000, overall["end_to_end"]["p99_us"] / 1000,
         int(cpu.group(1)) if cpu else None, overall["publish_msgs_per_s"], result["counts"]["errors"])
    )
for (workload, side), rows in sorted(runs.items()):
    rows.sort()
    cpus = [r[3] for r in rows]
    print(f"{workload:42s} {side:6s} e2e p50 {statistics.median(r[1] for r in rows):.2f} ms "
          f"p99 {statistics.median(r[2] for r in rows):.2f} ms | broker CPU {' '.join(map(str, cpus))} % "
          f"(median {statistics.median(cpus)}) | {statistics.median(r[4] for r in rows):,.0f} msgs/s | errors {sum(r[5] for r in rows)}")
