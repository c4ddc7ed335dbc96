"""Medians and paired per-round ratios from c-builds.sh's times file."""
import statistics
import sys
from collections import defaultdict

path, workload, jobs = sys.argv[1], sys.argv[2], sys.argv[3]
times = defaultdict(dict)
for line in open(path):
    r, mode, t = line.split("\t")
    times[mode][int(r)] = float(t)


def ratio(a, b):
    pairs = [times[a][r] / times[b][r] for r in times[a] if r in times[b] and times[b][r] > 0]
    return statistics.median(pairs) if pairs else float("nan")


print(f"### {workload}, -j{jobs}, {len(times['plain'])} rounds (median wall seconds; ratios are medians of per-round ratios)\n")
print("| mode | median s | × plain |")
print("|---|---|---|")
for mode in times:
    print(f"| {mode} | {statistics.median(times[mode].values()):.2f} | {ratio(mode, 'plain'):.3f} |")
print()
for a, b in [("cachefs-warm", "ccache-warm"), ("cachefs-warm", "sccache-warm"), ("cachefs-cold", "plain"), ("cachefs-cold", "ccache-cold")]:
    if a in times and b in times:
        print(f"- {a} / {b}: ×{ratio(a, b):.3f}")
