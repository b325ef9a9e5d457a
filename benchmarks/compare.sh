#!/usr/bin/env bash
# Whole-process comparison of `wqscan reconcile` with the floor and with peers, timed with
# hyperfine in one run per scenario and printed as ratios of medians (docs/performance.md).
#
#   benchmarks/compare.sh [N]        (default N=100000 files)
#
# Scenarios on the corpus /tmp/wqc-N (../shared/bench/mkcorpus.py with seed 1 when that
# folder is present, else benchmarks/mktree.py):
#   no-change  wqscan (default threads and --threads 1) vs limit_walk (when
#              ../shared/bench is present), find -printf, bfs -printf, git status (default
#              and untracked cache), watchdog snapshot+diff
#              and, with --no-default-ignores, vs limit_walk of the same tree
#   fixed      `reconcile` of a database without watches and `--version`, vs `python -c
#              pass` of the same interpreter
#   first      wqscan from an empty database vs limit_walk --hash plus the same-rows insert
#              reference (same_rows.py: bare apsw writing exactly the rows of that first
#              scan into the same schema), and ../shared/bench/sqlite_ref.py
#   changed    wqscan after 1% of the files were rewritten and 1% touched, on a copy
#   layouts    first scan and no-change rescan into the workspace-qdrant-mcp layout (a
#              database made by `init --layout workspace-qdrant-mcp`) beside the default
#              layout, in the same hyperfine runs (LAYOUTS=0 skips it)
# Needs hyperfine; peers that are missing are skipped. WQSCAN picks the wqscan binary
# (default: on PATH); peers needing Python packages get their own venv in $OUT/peers.
set -euo pipefail
N=${1:-100000}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
WQ=${WQSCAN:-$(command -v wqscan)}
WQPY=$(dirname "$WQ")/python  # the interpreter wqscan's script runs on
unset PYTHONDONTWRITEBYTECODE  # as installed: each module compiled once, not per run
"$WQPY" -m compileall -q "$("$WQPY" -c 'import os, wqscan; print(os.path.dirname(wqscan.__file__))')" >/dev/null
OUT=${OUT:-/tmp/wqscan-bench}
RUNS=${RUNS:-10}
DIR=/tmp/wqc-$N
mkdir -p "$OUT"
command -v hyperfine >/dev/null || { echo "compare.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 2; }

if [ -f "$SHARED/mkcorpus.py" ]; then
  if [ "$(cat "$DIR.stamp" 2>/dev/null)" != "$N 1" ]; then  # run_all.sh's convention
    python3 "$SHARED/mkcorpus.py" "$DIR" "$N" --seed 1 --force >/dev/null && echo "$N 1" >"$DIR.stamp"
  fi
else
  python3 "$HERE/mktree.py" "$DIR" "$N"
fi
LW=
if [ -f "$SHARED/limit_walk.c" ] && gcc -O2 -o "$OUT/limit_walk" "$SHARED/limit_walk.c" -lxxhash 2>/dev/null; then
  LW=$OUT/limit_walk
fi
PEERS=$OUT/peers
[ -x "$PEERS/bin/python" ] || python3 -m venv "$PEERS"
"$PEERS/bin/python" -c 'import watchdog, apsw' 2>/dev/null || "$PEERS/bin/pip" install -q watchdog apsw >/dev/null 2>&1 || true

DB=$OUT/nochange-$N.db
rm -f "$DB" "$DB"-wal "$DB"-shm
"$WQ" --db "$DB" add "$DIR" --collection bench --id bench --settle 0 >/dev/null
"$WQ" --db "$DB" reconcile -q && "$WQ" --db "$DB" reconcile -q  # fill, then settle racy entries
NDB=$OUT/noignores-$N.db
rm -f "$NDB" "$NDB"-wal "$NDB"-shm
"$WQ" --db "$NDB" add "$DIR" --collection bench --id bench --settle 0 --no-default-ignores >/dev/null
"$WQ" --db "$NDB" reconcile -q && "$WQ" --db "$NDB" reconcile -q

echo "== no-change rescan, $N files =="
cmds=(-n "wqscan reconcile" "$WQ --db $DB reconcile -q"
      -n "wqscan reconcile --threads 1" "$WQ --db $DB reconcile -q --threads 1"
      -n "wqscan reconcile, no default ignores" "$WQ --db $NDB reconcile -q")
[ -n "$LW" ] && cmds+=(-n "limit_walk" "$LW $DIR")
cmds+=(-n "find -printf" "find $DIR -printf '%P %s %T@ %i\n'")
command -v bfs >/dev/null && cmds+=(-n "bfs -printf" "bfs $DIR -printf '%P %s %T@ %i\n'")
GC=$DIR.git-copy
if command -v git >/dev/null; then
  if [ ! -d "$GC/.git" ]; then
    rm -rf "$GC"; cp -a "$DIR" "$GC"
    git -C "$GC" init -q && git -C "$GC" add -A
    git -C "$GC" -c user.name=bench -c user.email=bench@localhost -c gc.auto=0 commit -qm base
  fi
  git -C "$GC" -c core.untrackedCache=true status --porcelain >/dev/null
  cmds+=(-n "git status" "git -C $GC status --porcelain"
         -n "git status (untracked cache)" "git -C $GC -c core.untrackedCache=true -c core.fsmonitor=false status --porcelain")
fi
"$PEERS/bin/python" -c 'import watchdog' 2>/dev/null &&
  cmds+=(-n "watchdog snapshot+diff" "$PEERS/bin/python $HERE/wd_snapdiff.py $DIR")
hyperfine -N -w 2 -r "$RUNS" --export-json "$OUT/nochange-$N.json" "${cmds[@]}" >/dev/null

echo "== fixed cost =="
EDB=$OUT/empty.db
rm -f "$EDB" "$EDB"-wal "$EDB"-shm
"$WQ" --db "$EDB" init -q
hyperfine -N -w 5 -r 40 --export-json "$OUT/fixed-$N.json" -n "python -c pass" "$WQPY -c pass" \
  -n "wqscan reconcile (no watch)" "$WQ --db $EDB reconcile -q" \
  -n "wqscan --version" "$WQ --db $EDB --version" >/dev/null

echo "== first scan (empty database), $N files =="
FDB=$OUT/first-$N.db
cmds=(--prepare "sh -c 'rm -f $FDB $FDB-wal $FDB-shm; $WQ --db $FDB add $DIR --collection bench --id bench --settle 0 >/dev/null'" \
      -n "wqscan reconcile (first scan)" "$WQ --db $FDB reconcile -q")
hyperfine -N -w 1 -r "${FIRST_RUNS:-5}" --export-json "$OUT/first-$N.json" "${cmds[@]}" >/dev/null
if [ -n "$LW" ]; then
  hyperfine -N -w 1 -r "$RUNS" --export-json "$OUT/hash-$N.json" -n "limit_walk --hash" "$LW --hash $DIR" >/dev/null
  "$WQPY" "$HERE/same_rows.py" "$FDB" --out "$OUT" >"$OUT/same_rows-$N.txt"
  if [ -f "$SHARED/sqlite_ref.py" ]; then
    "$PEERS/bin/python" "$SHARED/sqlite_ref.py" "$DIR" --db "$OUT/ref.db" --runs 5 >"$OUT/sqlite_ref-$N.txt"
  fi
fi

echo "== 1% rewritten + 1% touched, $N files =="
CP=$OUT/changed-$N
if [ ! -d "$CP" ]; then cp -a "$DIR" "$CP"; fi
CDB=$OUT/changed-$N.db
rm -f "$CDB" "$CDB"-wal "$CDB"-shm
"$WQ" --db "$CDB" add "$CP" --collection bench --id bench --settle 0 >/dev/null
"$WQ" --db "$CDB" reconcile -q && "$WQ" --db "$CDB" reconcile -q
hyperfine -N -w 1 -r "$RUNS" --export-json "$OUT/changed-$N.json" \
  --prepare "python3 $HERE/mutate.py $CP 1" -n "wqscan reconcile (2% changed)" "$WQ --db $CDB reconcile -q" \
  --prepare "true" -n "wqscan reconcile (no change, same copy)" "$WQ --db $CDB reconcile -q" >/dev/null

if [ "${LAYOUTS:-1}" != 0 ]; then
  echo "== layouts: wqscan vs workspace-qdrant-mcp, $N files =="
  for L in wqscan workspace-qdrant-mcp; do
    LDB=$OUT/layout-$L-$N.db
    rm -f "$LDB" "$LDB"-wal "$LDB"-shm
    "$WQ" --db "$LDB" init -q --layout "$L"
    "$WQ" --db "$LDB" add "$DIR" --collection bench --id bench --settle 0 >/dev/null
    "$WQ" --db "$LDB" reconcile -q && "$WQ" --db "$LDB" reconcile -q
  done
  A=$OUT/layout-wqscan-$N.db B=$OUT/layout-workspace-qdrant-mcp-$N.db
  hyperfine -N -w 2 -r "$RUNS" --export-json "$OUT/layouts-nochange-$N.json" \
    -n "no-change, wqscan layout" "$WQ --db $A reconcile -q" \
    -n "no-change, workspace-qdrant-mcp layout" "$WQ --db $B reconcile -q" >/dev/null
  fresh() { echo "sh -c 'rm -f $1 $1-wal $1-shm; $WQ --db $1 init -q --layout $2; $WQ --db $1 add $DIR --collection bench --id bench --settle 0 >/dev/null'"; }
  hyperfine -N -w 1 -r "${FIRST_RUNS:-5}" --export-json "$OUT/layouts-first-$N.json" \
    --prepare "$(fresh "$OUT/lf-a.db" wqscan)" -n "first scan, wqscan layout" "$WQ --db $OUT/lf-a.db reconcile -q" \
    --prepare "$(fresh "$OUT/lf-b.db" workspace-qdrant-mcp)" -n "first scan, workspace-qdrant-mcp layout" "$WQ --db $OUT/lf-b.db reconcile -q" >/dev/null
fi

python3 - "$OUT" "$N" <<'PY'
import json, os, re, sys
out, n = sys.argv[1], sys.argv[2]
def load(name):
    path = os.path.join(out, f"{name}-{n}.json")
    return {r["command"]: r["median"] for r in json.load(open(path))["results"]} if os.path.exists(path) else {}
def median_of(name):
    path = os.path.join(out, f"{name}-{n}.txt")
    for line in open(path) if os.path.exists(path) else ():
        if line.startswith("insert"):
            return float(re.search(r"median_s=([0-9.]+)", line).group(1))
nc, first, hashed, changed, fixed = (load(k) for k in ("nochange", "first", "hash", "changed", "fixed"))
ref = nc.get("limit_walk")
base = ref or nc["find -printf"]
base_name = "limit_walk" if ref else "find -printf"
targets = []  # (target, measured, goal, met)
def target(name, value, goal, unit="x"):
    fmt = f"{value:.2f}x" if unit == "x" else f"+{value * 1000:.1f} ms"
    want = f"<= {goal:.2f}x" if unit == "x" else f"<= +{goal * 1000:.0f} ms"
    targets.append((name, fmt, want, "yes" if value <= goal else "NO"))

print(f"\n| no-change rescan, {n} files | median ms | x {base_name} |")
print("|---|--:|--:|")
for cmd, m in nc.items():
    print(f"| {cmd} | {m * 1000:.0f} | {m / base:.2f} |")
gsu = nc.get("git status (untracked cache)")
if gsu:
    target("1. no-change rescan / git status (untracked cache)", nc["wqscan reconcile"] / gsu, 1.0)
if ref:
    target("1. no-change, no default ignores / limit_walk",
           nc["wqscan reconcile, no default ignores"] / ref, 0.65)
if fixed:
    py = fixed["python -c pass"]
    print("\n| fixed cost | median ms | above python -c pass |")
    print("|---|--:|--:|")
    for cmd, m in fixed.items():
        print(f"| {cmd} | {m * 1000:.1f} | {(m - py) * 1000:+.1f} ms |")
    target("2. reconcile, no watch, above python -c pass", fixed["wqscan reconcile (no watch)"] - py,
           0.015, "ms")
    target("2. --version above python -c pass", fixed["wqscan --version"] - py, 0.010, "ms")
wq_first = first.get("wqscan reconcile (first scan)")
lh = hashed.get("limit_walk --hash")
same, generic = median_of("same_rows"), median_of("sqlite_ref")
if wq_first is not None:
    print(f"\n| first scan, {n} files | median ms | wqscan / this |")
    print("|---|--:|--:|")
    print(f"| wqscan reconcile (empty database) | {wq_first * 1000:.0f} | |")
    if lh is not None:
        print(f"| limit_walk --hash | {lh * 1000:.0f} | {wq_first / lh:.2f} |")
    if same is not None:
        print(f"| bare apsw, the same rows into the same schema | {same * 1000:.0f} | {wq_first / same:.2f} |")
    if generic is not None:
        print(f"| sqlite_ref.py insert (one generic table) | {generic * 1000:.0f} | |")
    if lh is not None and same is not None:
        print(f"| serial sum: limit_walk --hash + same rows | {(lh + same) * 1000:.0f} | {wq_first / (lh + same):.2f} |")
        target("3. first scan / (limit_walk --hash + same-rows insert)", wq_first / (lh + same), 0.8)
if changed:
    c2, c0 = changed["wqscan reconcile (2% changed)"], changed["wqscan reconcile (no change, same copy)"]
    print(f"\n| incremental, {n} files | median ms | |")
    print("|---|--:|--:|")
    print(f"| wqscan, 1% rewritten + 1% touched | {c2 * 1000:.0f} | {c2 / c0:.2f} x no-change |")
    print(f"| wqscan, no change (same tree) | {c0 * 1000:.0f} | 1.00 |")
    if lh is not None and ref:
        budget = c0 + 0.02 * (lh - ref)
        print(f"| no-change + hashing 2% of the files (limit_walk's cost) | {budget * 1000:.0f} | "
              f"wqscan = {c2 / budget:.2f} x this |")
        target("4. incremental / (no-change + hashing 2% at limit_walk's rate)", c2 / budget, 1.2)
for kind in ("nochange", "first"):
    runs = load(f"layouts-{kind}")
    if runs:
        (a, ma), (b, mb) = runs.items()
        print(f"\n| {kind}, {n} files, by layout | median ms | x wqscan layout |")
        print("|---|--:|--:|")
        print(f"| {a} | {ma * 1000:.0f} | 1.00 |")
        print(f"| {b} | {mb * 1000:.0f} | {mb / ma:.2f} |")
        target(f"6. {kind}, workspace-qdrant-mcp / wqscan layout", mb / ma, 1.10)
print("\n| performance target | measured | goal | met |")
print("|---|--:|--:|:-:|")
for row in targets:
    print("| " + " | ".join(row) + " |")
PY
