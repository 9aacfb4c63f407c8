#!/usr/bin/env python3
"""Print a `bench kernels --json` report as a table: python3 docs/bench/table.py FILE.json"""
import json
import sys

r = json.load(open(sys.argv[1]))
print(r["adapter"]["name"], "|", r["adapter"]["backend"], "|", r["adapter"]["driver"], r["adapter"]["driver_info"])
c = r["ceilings"]
print(f"ceilings: copy {c['copy_gb_per_s']:.0f} GB/s, f32 FMA {c['fma_gflop_per_s'] / 1e3:.1f} TFLOP/s")
print(f"{'kernel':<16} {'preset':<6} {'B':>3} {'ctx':>7} {'us':>10} {'GB/s':>8} {'GFLOP/s':>9} {'roof_us':>9} {'frac':>6}")
for t in r["timings"]:
    print(f"{t['kernel']:<16} {t['preset']:<6} {t['batch']:>3} {t['context']:>7} {t['time_us']:>10.1f} "
          f"{t['gb_per_s']:>8.1f} {t['gflop_per_s']:>9.1f} {t['roofline_us']:>9.1f} {100 * t['roofline_fraction']:>5.1f}%")
