"""Medians and paired per-round ratios from c-builds.sh's times file.

Wall time is what users feel; CPU time (the build's processes plus the cache
daemon's) is what stays stable on a shared, noisy machine.
"""
import statistics
import sys
from collections import defaultdict

path, workload, jobs = sys.argv[1], sys.argv[2], sys.argv[3]
wall = defaultdict(dict)
cpu = defaultdict(dict)
for line in open(path):
    r, mode, t, c = line.split("\t")
    wall[mode][int(r)] = float(t)
    cpu[mode][int(r)] = float(c)


def ratio(times, a, b):
    if a not in times or b not in times:
        return float("nan")
    pairs = [times[a][r] / times[b][r] for r in times[a] if r in times[b] and times[b][r] > 0]
    return statistics.median(pairs) if pairs else float("nan")


rounds = max(len(v) for v in wall.values())
print(f"### {workload}, -j{jobs}, {rounds} rounds (medians; ratios are medians of per-round ratios)\n")
print("| mode | wall s | wall × plain | cpu s | cpu × plain |")
print("|---|---|---|---|---|")
for mode in wall:
    print(
        f"| {mode} | {statistics.median(wall[mode].values()):.2f} | {ratio(wall, mode, 'plain'):.3f} "
        f"| {statistics.median(cpu[mode].values()):.2f} | {ratio(cpu, mode, 'plain'):.3f} |"
    )
print()
for a, b in [("cachefs-warm", "ccache-warm"), ("cachefs-warm", "sccache-warm"), ("cachefs-cold", "plain"), ("cachefs-cold", "ccache-cold"), ("cachefs-warm", "cachefsb-warm"), ("cachefs-cold", "cachefsb-cold")]:
    if a in wall and b in wall:
        print(f"- {a} / {b}: wall ×{ratio(wall, a, b):.3f}, cpu ×{ratio(cpu, a, b):.3f}")

# What each cache itself costs on top of what no cache removes.
if "floor" in wall:
    def over_floor(times, a, b):
        pairs = [
            (times[a][r] - times["floor"][r]) / (times[b][r] - times["floor"][r])
            for r in times[a]
            if r in times[b] and r in times["floor"] and times[b][r] > times["floor"][r]
        ]
        return statistics.median(pairs) if pairs else float("nan")

    print(f"- floor (no compiler runs; make, shells, ar, generators): {statistics.median(wall['floor'].values()):.2f} s wall")
    for a, b in [("cachefs-warm", "ccache-warm"), ("cachefs-warm", "sccache-warm")]:
        if a in wall and b in wall:
            print(f"- over the floor, {a} / {b}: wall ×{over_floor(wall, a, b):.3f}, cpu ×{over_floor(cpu, a, b):.3f}")
