#!/usr/bin/env bash
# Where the policy's CPU goes, end to end: Airlock and its pass-through (or an earlier airlock
# build) serve the same pgbench workload at the same time, each sampled by perf. Prints, per
# run, each target's CPU per transaction and the part of it spent in the guard's own code (the
# guard, classification, policy and masking, with the hashing, comparing and UTF-8 checks they
# call), then the symbols whose CPU per transaction differs most between the two targets.
#
# e2e.sh measures a whole process's CPU, in which a change of a microsecond or two per
# transaction is lost in the drift of a shared VM; the guard's share of the samples is far
# steadier, because both targets see the same load and the same drift.
#
#   benches/guard_profile.sh                                    # TPC-B, airlock vs passthrough
#   AIRLOCK_BASELINE=/tmp/airlock-old RUNS=4 benches/guard_profile.sh
#   WORKLOAD="-S -C -c 8 -j 2" benches/guard_profile.sh          # connect per transaction
#
# Environment:
#   WORKLOAD          pgbench arguments (default "-c 8 -j 2": TPC-B-like, 8 clients)
#   DURATION          seconds sampled per run (default 20)
#   RUNS              runs; the two targets swap sides each run (default 2)
#   AIRLOCK_BASELINE  another airlock binary to compare with instead of the pass-through
#   SKIP_BUILD=1      use the binaries already in target/release
#   TOP               symbols listed at each end (default 15)
#   PERF_DIR          keep each run's perf data there (perf-RUN-a.data is Airlock), for
#                     `perf annotate -i DIR/perf-1-a.data --stdio -s SYMBOL`
#
# Needs psql, pgbench (tables at scale 10 in database test, as e2e.sh makes them), python3 and
# perf (installed with apt-get as linux-perf when missing; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${WORKLOAD:--c 8 -j 2}
DURATION=${DURATION:-20}
RUNS=${RUNS:-2}
BENCH_USER=bench
BENCH_PASS=bench-pass
export PGSSLMODE=disable PGCONNECT_TIMEOUT=5
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS

# shellcheck source=benches/lib.sh
source benches/lib.sh
build_binaries
require_tools psql pgbench python3
if ! command -v perf >/dev/null; then
    log "perf not found; installing it from Debian..."
    apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
psql -X -h 127.0.0.1 -U postgres -d test -Atqc 'select count(*) from pgbench_branches' >/dev/null 2>&1 ||
    pgbench -i -s 10 -q -h 127.0.0.1 -U postgres test >/dev/null 2>&1

setup_tmp airlock-guard-profile
read -r PORT_A PORT_B < <(free_ports 2)
VERIFIER=$(printf '%s' "$BENCH_PASS" | "$AIRLOCK" passwd)
airlock_bench_config "$PORT_A" 127.0.0.1:5432 "$BENCH_USER" "$VERIFIER" >"$TMP/a.toml"
airlock_bench_config "$PORT_B" 127.0.0.1:5432 "$BENCH_USER" "$VERIFIER" >"$TMP/b.toml"
"$AIRLOCK" serve --config "$TMP/a.toml" >"$TMP/a.log" 2>&1 &
PID_A=$!
PIDS+=("$PID_A")
if [[ -n ${AIRLOCK_BASELINE:-} ]]; then
    OTHER=baseline
    "$AIRLOCK_BASELINE" serve --config "$TMP/b.toml" >"$TMP/b.log" 2>&1 &
else
    OTHER=passthrough
    "$PASSTHROUGH" "$TMP/b.toml" >"$TMP/b.log" 2>&1 &
fi
PID_B=$!
PIDS+=("$PID_B")
wait_for_login "$PORT_A" "$BENCH_USER" "$BENCH_PASS" "$TMP/a.log"
wait_for_login "$PORT_B" "$BENCH_USER" "$BENCH_PASS" "$TMP/b.log"

read -r -a ARGS <<<"$WORKLOAD"
log "airlock vs $OTHER, pgbench $WORKLOAD, $RUNS runs of ${DURATION}s sampled"
for run in $(seq "$RUNS"); do
    # The two pgbench runs start one after the other: swap which goes first each run.
    order=(a b)
    ((run % 2 == 0)) && order=(b a)
    jobs=()
    for side in "${order[@]}"; do
        port=PORT_${side^^}
        PGPASSWORD=$BENCH_PASS timeout $((DURATION + 60)) pgbench -n "${ARGS[@]}" -T $((DURATION + 6)) \
            -h 127.0.0.1 -p "${!port}" -U "$BENCH_USER" test >"$TMP/pgbench-$run-$side.log" 2>&1 &
        jobs+=($!)
    done
    sleep 3
    perf record -q -F 2999 -p "$PID_A" -o "$TMP/perf-$run-a.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    jobs+=($!)
    perf record -q -F 2999 -p "$PID_B" -o "$TMP/perf-$run-b.data" -- sleep "$DURATION" >/dev/null 2>&1
    wait "${jobs[@]}"
    for side in a b; do
        grep -q '^tps' "$TMP/pgbench-$run-$side.log" || {
            cat "$TMP/pgbench-$run-$side.log" >&2
            exit 1
        }
        perf report -i "$TMP/perf-$run-$side.data" --stdio --no-children --sort dso,symbol -g none \
            >"$TMP/report-$run-$side.txt" 2>/dev/null
    done
done

if [[ -n ${PERF_DIR:-} ]]; then
    mkdir -p "$PERF_DIR"
    cp "$TMP"/perf-*.data "$PERF_DIR"/
    log "perf data kept in $PERF_DIR"
fi

python3 - "$TMP" "$RUNS" "$DURATION" "$OTHER" "${TOP:-15}" <<'PY'
import re, sys, statistics

tmp, runs, duration, other, top = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
# The guard's code, and what it calls that a pass-through does not.
GUARD = re.compile(r"airlock::(guard|sql|policy|mask)::|memcmp|bcmp|from_utf8|foldhash|Verdict|Expect")

def load(run, side):
    """(CPU us per transaction, {(dso, symbol): us per transaction}) of one target in one run."""
    tps = float(re.search(r"^tps = ([\d.]+)", open(f"{tmp}/pgbench-{run}-{side}.log").read(), re.M)[1])
    text = open(f"{tmp}/report-{run}-{side}.txt").read()
    seconds = int(re.search(r"Event count \(approx\.\): (\d+)", text)[1]) / 1e9
    per_txn = seconds / (tps * duration) * 1e6
    symbols = {}
    for m in re.finditer(r"^\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*?)\s*$", text, re.M):
        dso = "binary" if m[2] in ("airlock", "passthrough") or "airlock" in m[2] else m[2]
        symbols[(dso, m[3][:100])] = float(m[1]) * per_txn / 100
    return per_txn, symbols

def guard(symbols):
    return sum(v for (_, s), v in symbols.items() if GUARD.search(s))

diffs, guard_a, guard_b, cpu_diffs = {}, [], [], []
print(f"{'run':>3}  {'airlock CPU/txn':>15}  {other + ' CPU/txn':>19}  {'airlock guard':>13}  {other + ' guard':>17}")
for run in range(1, runs + 1):
    (cpu_a, a), (cpu_b, b) = load(run, "a"), load(run, "b")
    guard_a.append(guard(a))
    guard_b.append(guard(b))
    cpu_diffs.append(cpu_a - cpu_b)
    print(f"{run:>3}  {cpu_a:>12.1f} us  {cpu_b:>16.1f} us  {guard_a[-1]:>10.2f} us  {guard_b[-1]:>14.2f} us")
    for key in set(a) | set(b):
        diffs.setdefault(key, []).append(a.get(key, 0) - b.get(key, 0))
paired = [x - y for x, y in zip(guard_a, guard_b)]
print(f"guard code, airlock - {other}: median {statistics.median(paired):+.2f} us/txn "
      f"(runs {', '.join(f'{d:+.2f}' for d in paired)})")
print(f"whole process, airlock - {other}: median {statistics.median(cpu_diffs):+.2f} us/txn "
      f"(runs {', '.join(f'{d:+.2f}' for d in cpu_diffs)})")
print(f"symbols by CPU per transaction, airlock - {other} (mean of the runs), most and least:")
rows = sorted(((sum(v) / runs, k) for k, v in diffs.items()), reverse=True)
shown = rows if len(rows) <= 2 * top else rows[:top] + [None] + rows[-top:]
for row in shown:
    if row is None:
        print("  ...")
        continue
    d, (dso, symbol) = row
    print(f"  {d:+6.2f} us  {dso[:12]:<12} {symbol}")
PY
