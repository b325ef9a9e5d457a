#!/usr/bin/env bash
# Peak memory of a no-change rescan of a big tree (default 1,000,000 small files), from
# /usr/bin/time -v, next to the interpreter's own start-up footprint.
#
#   benchmarks/memory.sh [N]
set -euo pipefail
N=${1:-1000000}
HERE=$(cd "$(dirname "$0")" && pwd)
WQ=${WQSCAN:-$(command -v wqscan)}
OUT=${OUT:-/tmp/wqscan-bench}
DIR=/tmp/wqm-$N
mkdir -p "$OUT" "$DIR"
[ -x /usr/bin/time ] || { echo "memory.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
python3 "$HERE/mktree.py" "$DIR" "$N" --max-size 512
DB=$OUT/memory-$N.db
if [ ! -f "$DB" ]; then
  "$WQ" --db "$DB" add "$DIR" --collection bench --id bench --settle 0 >/dev/null
  "$WQ" --db "$DB" reconcile -q
fi
"$WQ" --db "$DB" reconcile -q
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/{print $2}'; }
PY=$(head -1 "$WQ" | sed 's/^#!//')
base=$(rss "$PY" -c "import wqscan.reconcile")
scan=$(rss "$WQ" --db "$DB" reconcile -q)
echo "| no-change rescan, $N files | peak RSS MiB |"
echo "|---|--:|"
echo "| wqscan reconcile | $((scan / 1024)) |"
echo "| python + wqscan imports, no scan | $((base / 1024)) |"
