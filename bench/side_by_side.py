#!/usr/bin/env python3
"""Side-by-side medians of bench.py result files: one column per file, and each column's
ratio to the first one. Usage: side_by_side.py FIRST.json OTHER.json ..."""
import json
import os
import sys

ROWS = [
    ("push_mono_MBps", "push 1 GiB, monolithic (MB/s)"),
    ("push_chunked_MBps", "push 1 GiB, 16 MiB chunks (MB/s)"),
    ("pull_MBps", "pull of the blob just pushed (MB/s)"),
    ("pull_verify_MBps", "pull + client sha256 (MB/s)"),
    ("pull_hot_MBps", "pull again, hot (MB/s)"),
    ("push_mono_reg_cpu_s_per_GiB", "registry CPU, mono push (s/GiB)"),
    ("push_chunked_reg_cpu_s_per_GiB", "registry CPU, chunked push (s/GiB)"),
    ("pull_reg_cpu_s_per_GiB", "registry CPU, pull (s/GiB)"),
    ("small_c1_blobs_per_s", "4 KiB blobs, 1 client (/s)"),
    ("small_c16_blobs_per_s", "4 KiB blobs, 16 clients (/s)"),
    ("small_c16_blob_p99_ms", "  p99 (ms)"),
    ("manifest_get_c64_rps", "manifest GET, 64 conns (req/s)"),
    ("manifest_get_c64_p99_us", "  p99 (us)"),
    ("manifest200_get_c64_rps", "manifest GET, 64 conns, 200 layers (req/s)"),
    ("blob_head_c64_rps", "blob HEAD, 64 conns (req/s)"),
    ("blob_head_c64_p99_us", "  p99 (us)"),
    ("reg_peak_rss_MiB", "peak RSS (MiB)"),
    ("reg_cpu_run_s", "registry CPU, whole run (s)"),
]


def main():
    files = sys.argv[1:]
    if not files:
        sys.exit(__doc__)
    sums = []
    for fn in files:
        with open(fn) as f:
            d = json.load(f)
        sums.append((os.path.basename(fn).removesuffix(".json"), d["summary"], len(d["runs"])))
    head = ["metric (median)"] + [f"{n} ({r} runs)" for n, _, r in sums]
    head += [f"{n} / {sums[0][0]}" for n, _, _ in sums[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for key, label in ROWS:
        vals = [s.get(key, {}).get("median") for _, s, _ in sums]
        if all(v is None for v in vals):
            continue
        cells = [label] + [f"{v:,.1f}" if v is not None and v < 100 else
                           (f"{v:,.0f}" if v is not None else "—") for v in vals]
        for v in vals[1:]:
            cells.append(f"{v / vals[0]:.2f}" if v and vals[0] else "—")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
