#!/usr/bin/env bash
# No-change rescan on a latency-bound mount: ../shared/lab/slowfs-up.sh puts LATENCY_MS
# (default 1) on every round trip of a FUSE passthrough of a 20,000-file corpus; times
# wqscan with its default threads (16 on FUSE) against --threads 1 in one hyperfine run.
#
#   benchmarks/slowfs.sh [N] [LATENCY_MS]      (needs root, /dev/fuse, ../shared/lab)
set -euo pipefail
N=${1:-20000}; LAT=${2:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${LAB:-$HERE/../../shared/lab}
WQ=${WQSCAN:-$(command -v wqscan)}
OUT=${OUT:-/tmp/wqscan-bench}
[ -x "$LAB/slowfs-up.sh" ] || { echo "slowfs.sh: needs $LAB (the network mount lab)" >&2; exit 2; }
mkdir -p "$OUT"
SRC=/tmp/wqlab-$N MNT=/tmp/wqlab-mnt-$N
python3 "$LAB/mkcorpus.py" "$SRC" "$N" >/dev/null
"$LAB/slowfs-up.sh" "$SRC" "$MNT" "$LAT"
trap '"$LAB/slowfs-down.sh" "$MNT" >/dev/null 2>&1 || true' EXIT
DB=$OUT/slowfs-$N.db
rm -f "$DB" "$DB"-wal "$DB"-shm
"$WQ" --db "$DB" add "$MNT" --collection bench --id bench --settle 0 >/dev/null
"$WQ" --db "$DB" reconcile -q && "$WQ" --db "$DB" reconcile -q
hyperfine -N -w 0 -r "${RUNS:-3}" --export-json "$OUT/slowfs-$N.json" \
  -n "wqscan reconcile (default threads)" "$WQ --db $DB reconcile -q" \
  -n "wqscan reconcile --threads 1" "$WQ --db $DB reconcile -q --threads 1" >/dev/null
python3 - "$OUT/slowfs-$N.json" "$N" "$LAT" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
many, one = r["wqscan reconcile (default threads)"], r["wqscan reconcile --threads 1"]
print(f"| no-change rescan, {sys.argv[2]} files, slowfs {sys.argv[3]} ms | median s | |")
print("|---|--:|--:|")
print(f"| wqscan, default threads | {many:.2f} | {one / many:.1f} x faster than one thread |")
print(f"| wqscan --threads 1 | {one:.2f} | 1.0 |")
PY
