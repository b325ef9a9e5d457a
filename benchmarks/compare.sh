#!/usr/bin/env bash
# Whole-process comparison of `wqscan reconcile` with the floor and with peers, in one
# hyperfine run, printed as ratios of medians.
#
#   benchmarks/compare.sh [N]          (default N=100000 files)
#
# Builds the corpus /tmp/wqc-N with ../shared/bench/mkcorpus.py (seed 1) when that folder
# is present (else a smaller generator of its own), a database with one watch of it, and
# times: wqscan reconcile with no change (after a first scan), `limit_walk` (when
# ../shared/bench is present), find -printf, bfs, git status (default and untracked
# cache). Needs hyperfine; WQSCAN (default: the `wqscan` on PATH) picks the binary.
set -euo pipefail
N=${1:-100000}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
WQ=${WQSCAN:-$(command -v wqscan)}
OUT=${OUT:-/tmp/wqscan-bench}
DIR=/tmp/wqc-$N
mkdir -p "$OUT"
command -v hyperfine >/dev/null || { echo "compare.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 2; }

if [ -f "$SHARED/mkcorpus.py" ]; then
  python3 "$SHARED/mkcorpus.py" "$DIR" "$N" --seed 1 >/dev/null
else
  python3 "$HERE/mktree.py" "$DIR" "$N"
fi

DB=$OUT/bench-$N.db
rm -f "$DB" "$DB"-wal "$DB"-shm
"$WQ" --db "$DB" add "$DIR" --collection bench --id bench --settle 0 >/dev/null
"$WQ" --db "$DB" reconcile -q   # first scan: fills the snapshot and the queue

cmds=(-n "wqscan reconcile (no change)" "$WQ --db $DB reconcile -q")
if [ -f "$SHARED/limit_walk.c" ] && gcc -O2 -o "$OUT/limit_walk" "$SHARED/limit_walk.c" -lxxhash 2>/dev/null; then
  cmds+=(-n "limit_walk" "$OUT/limit_walk $DIR")
fi
cmds+=(-n "find -printf" "find $DIR -printf '%P %s %T@ %i\n'")
command -v bfs >/dev/null && cmds+=(-n "bfs -printf" "bfs $DIR -printf '%P %s %T@ %i\n'")
GC=$DIR.git-copy
if command -v git >/dev/null; then
  if [ ! -d "$GC/.git" ]; then
    rm -rf "$GC"; cp -a "$DIR" "$GC"
    git -C "$GC" init -q && git -C "$GC" add -A
    git -C "$GC" -c user.name=bench -c user.email=bench@localhost -c gc.auto=0 commit -qm base
  fi
  cmds+=(-n "git status" "git -C $GC status --porcelain")
  cmds+=(-n "git status (untracked cache)" "git -C $GC -c core.untrackedCache=true -c core.fsmonitor=false status --porcelain")
fi

hyperfine -N -w 2 -r "${RUNS:-10}" --export-json "$OUT/compare-$N.json" "${cmds[@]}" >/dev/null
python3 - "$OUT/compare-$N.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
by = {r["command"]: r["median"] for r in res}
ref = by.get("limit_walk") or by["find -printf"]
refname = "limit_walk" if "limit_walk" in by else "find -printf"
print(f"| command | median ms | x {refname} |")
print("|---|--:|--:|")
for r in res:
    print(f"| {r['command']} | {r['median'] * 1000:.1f} | {r['median'] / ref:.2f} |")
PY
