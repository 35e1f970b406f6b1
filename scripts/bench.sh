#!/usr/bin/env bash
# Runs the exporter's criterion benchmarks and prints, per item, the packed encoding against
# the upstream crates' one-item-per-event encoding measured in the same run, with the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench -p otlp-user-events --bench encode -- "$@"

python3 - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion")
def mean_ns(group, fn):
    p = root / group / fn / "new" / "estimates.json"
    return json.loads(p.read_text())["mean"]["point_estimate"] if p.exists() else None
ITEMS = 1000
print()
print(f"{'benchmark':<24}{'packed ns/item':>16}{'1-per-event ns/item':>22}{'speed-up':>10}")
for group in ["sum_3_attrs", "histogram_10_buckets", "span_6_attrs_1_event"]:
    packed, single = mean_ns(group, "packed"), mean_ns(group, "one_per_event")
    if packed is None or single is None:
        continue
    print(f"{group:<24}{packed / ITEMS:>16.1f}{single / ITEMS:>22.1f}{single / packed:>9.2f}x")
idle = mean_ns("export_no_listener", ".") or mean_ns("export_no_listener", "")
p = root / "export_no_listener" / "new" / "estimates.json"
if p.exists():
    print(f"{'export, no listener':<24}{json.loads(p.read_text())['mean']['point_estimate']:>16.1f} ns per export")
PY
