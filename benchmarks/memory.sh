#!/usr/bin/env bash
# Peak memory of a no-change rescan of a big tree (default 1,000,000 small files), and of a
# scan that finds CHANGES new files (default 500,000) in a watch whose snapshot is not
# empty, so that all of them wait for the mass-delete guard's decision; from
# /usr/bin/time -v, next to the interpreter's own start-up footprint.
#
#   benchmarks/memory.sh [N]        (CHANGES=0 skips the second case)
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
echo "| case | peak RSS MiB |"
echo "|---|--:|"
echo "| wqscan reconcile, no change, $N files | $((scan / 1024)) |"
C=${CHANGES:-500000}
if [ "$C" != 0 ]; then
  CDIR=/tmp/wqm-changes-$C
  python3 "$HERE/mktree.py" "$CDIR/new" "$C" --max-size 64
  mkdir -p "$CDIR/root/seed"
  for i in $(seq 200); do echo "seed $i" >"$CDIR/root/seed/f$i.txt"; done
  SEED=$OUT/memory-changes-seed.db CDB=$OUT/memory-changes.db
  rm -f "$SEED" "$SEED"-wal "$SEED"-shm
  "$WQ" --db "$SEED" add "$CDIR/root" --collection bench --id bench --settle 0 >/dev/null
  "$WQ" --db "$SEED" reconcile -q
  rm -f "$CDB" "$CDB"-wal "$CDB"-shm
  cp "$SEED" "$CDB"; if [ -f "$SEED-wal" ]; then cp "$SEED-wal" "$CDB-wal"; fi
  mv "$CDIR/new" "$CDIR/root/new"
  changed=$(rss "$WQ" --db "$CDB" reconcile -q)
  mv "$CDIR/root/new" "$CDIR/new"
  echo "| wqscan reconcile, $C new files (held for the guard) | $((changed / 1024)) |"
fi
echo "| python + wqscan imports, no scan | $((base / 1024)) |"
