#!/usr/bin/env python3
"""Print a `bench transfer --json` report as a table: python3 docs/bench/transfer_table.py FILE.json"""
import json
import sys

r = json.load(open(sys.argv[1]))
print(r["adapter"]["name"], "|", r["adapter"]["backend"], "|", r["adapter"]["driver"], r["adapter"]["driver_info"])
print(f"peaks: host->device {r['h2d_peak_gb_per_s']:.1f} GB/s, device->host {r['d2h_peak_gb_per_s']:.1f} GB/s")
print(f"{'path':<11} {'row B':>6} {'rows':>6} {'us':>10} {'GB/s':>7} {'of peak':>8}  clock")
for t in r["timings"]:
    print(f"{t['path']:<11} {t['row_bytes']:>6} {t['rows']:>6} {t['time_us']:>10.1f} {t['gb_per_s']:>7.2f} "
          f"{100 * t['fraction_of_peak']:>7.1f}%  {t['clock']}")
