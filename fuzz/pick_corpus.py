#!/usr/bin/env python3
"""Picks a small seed corpus: at most LIMIT inputs that together reach the most coverage edges.

libFuzzer's own minimisation (`cargo fuzz cmin`, `-merge=1`, `-set_cover_merge=1`) keeps every
input that adds a feature, which is hundreds of files for the structured targets. This script
reads the merge control file such a merge writes, and greedily takes the input that adds the
most edges (`COV` lines), smaller first on ties, until LIMIT inputs or full coverage.

    # from fuzz/, with the target built (cargo fuzz build …):
    mkdir -p /tmp/merged
    target/x86_64-unknown-linux-gnu/release/<target> -merge=1 \
        -merge_control_file=/tmp/control /tmp/merged <corpus directories…>
    python3 pick_corpus.py /tmp/control corpus/<target> 48
"""
import os
import shutil
import sys


def main() -> None:
    control, out_dir, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lines = open(control).read().split("\n")
    count = int(lines[0])
    files = lines[2 : 2 + count]
    edges = {}
    for line in lines[2 + count :]:
        parts = line.split()
        if parts and parts[0] == "COV":
            edges[int(parts[1])] = set(parts[2:])
    everything = set().union(*edges.values())
    chosen, covered = [], set()
    while len(chosen) < limit:
        best = max(edges, key=lambda i: (len(edges[i] - covered), -os.path.getsize(files[i])))
        if not edges[best] - covered:
            break
        chosen.append(best)
        covered |= edges[best]
    os.makedirs(out_dir, exist_ok=True)
    for index in chosen:
        shutil.copy(files[index], os.path.join(out_dir, os.path.basename(files[index])))
    share = 100 * len(covered) / max(len(everything), 1)
    print(f"{len(chosen)} inputs reach {len(covered)} of {len(everything)} edges ({share:.1f}%)")


if __name__ == "__main__":
    main()
