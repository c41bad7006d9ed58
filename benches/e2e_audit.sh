#!/usr/bin/env bash
# End-to-end audit benchmark: pgbench through three Airlock instances that differ only in
# [state] audit: "required", "best-effort" and "off", interleaved round by round (each round
# starting with the next instance). Reports the median TPS per instance and workload, the
# ratios to "off", and each instance's CPU per transaction, with the parts of it spent by
# the session workers (one thread by default: it shares the cores with PostgreSQL and
# pgbench, and TPS follows its CPU per transaction) and by the audit flusher thread, and the
# whole machine's CPU per transaction and how busy it was. Round by round, it also pairs
# each trail's TPS and worker CPU with audit off's.
#
#   benches/e2e_audit.sh                      # ROUNDS=3 DURATION=10
#   ROUNDS=1 DURATION=3 benches/e2e_audit.sh  # quick check
#
# Environment: ROUNDS, DURATION (seconds per run), WORKLOADS ("select tpcb"), CLIENTS
# (pgbench -c, 8), BENCH_TMP (/tmp, where the state directories go), SCALE (pgbench scale,
# default 10; the tables in database test are made unless already at this scale),
# SKIP_BUILD=1, KEEP_TMP=1.
# Needs cargo, psql, pgbench, python3, PostgreSQL on 127.0.0.1:5432 (user postgres, trust).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
PASS=bench-pass

cd "$(dirname "$0")/.."
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS
export PGSSLMODE=disable PGCONNECT_TIMEOUT=5

# shellcheck source=benches/lib.sh
source benches/lib.sh
build_binaries
require_tools psql pgbench python3
setup_tmp airlock-audit

direct() { psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d test "$@"; }
have=$(direct -Atc "select count(*) / 100000 from pgbench_accounts" 2>/dev/null || echo 0)
if [[ $have != "$SCALE" ]]; then
    log "pgbench -i -s $SCALE..."
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p 5432 -U postgres test >/dev/null 2>&1
fi

VERIFIER=$(printf '%s' "$PASS" | "$AIRLOCK" passwd)
mkdir "$TMP/policy"
printf '[defaults]\naction = "allow"\n' >"$TMP/policy/policy.toml"
read -r P_REQ P_BEST P_OFF < <(free_ports 3)
declare -A PORT=([required]=$P_REQ [best-effort]=$P_BEST [off]=$P_OFF)
declare -A PID
for mode in required best-effort off; do
    mkdir "$TMP/$mode"
    {
        airlock_bench_config "${PORT[$mode]}" 127.0.0.1:5432 bench "$VERIFIER"
        printf '\n[policy]\ndir = "%s"\n\n[state]\ndir = "%s"\naudit = "%s"\n' \
            "$TMP/policy" "$TMP/$mode/state" "$mode"
    } >"$TMP/$mode/airlock.toml"
    "$AIRLOCK" serve --config "$TMP/$mode/airlock.toml" >"$TMP/$mode/airlock.log" 2>&1 &
    PID[$mode]=$!
    PIDS+=("$!")
done
for mode in required best-effort off; do
    wait_for_login "${PORT[$mode]}" bench "$PASS" "$TMP/$mode/airlock.log"
done

CLIENTS=${CLIENTS:-8}
declare -A WORKLOAD=([select]="-S -c $CLIENTS -j 2" [tpcb]="-c $CLIENTS -j 2")
MODES=(required best-effort off)
for round in $(seq "$ROUNDS"); do
    # Each round starts with the next instance, so that none always runs first.
    first=$(((round - 1) % 3))
    order=("${MODES[@]:first}" "${MODES[@]:0:first}")
    for workload in ${WORKLOADS:-select tpcb}; do
        for mode in "${order[@]}"; do
            t0=$(cpu_ticks "${PID[$mode]}")
            read -r m0 all0 < <(machine_ticks)
            f0=$(thread_ticks "${PID[$mode]}" airlock-audit)
            w0=$(thread_ticks "${PID[$mode]}" airlock-worker-)
            # shellcheck disable=SC2086
            out=$(PGPASSWORD=$PASS pgbench -n -T "$DURATION" ${WORKLOAD[$workload]} \
                -h 127.0.0.1 -p "${PORT[$mode]}" -U bench test 2>&1) || true # reported below
            t1=$(cpu_ticks "${PID[$mode]}")
            read -r m1 all1 < <(machine_ticks)
            f1=$(thread_ticks "${PID[$mode]}" airlock-audit)
            w1=$(thread_ticks "${PID[$mode]}" airlock-worker-)
            tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
            txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
            [[ -n $tps && -n $txns ]] || { log "pgbench failed:"; log "$out"; exit 1; }
            echo "$workload $mode $tps $txns $((t1 - t0)) $((f1 - f0)) $((m1 - m0)) $((all1 - all0)) $round $((w1 - w0))" >>"$TMP/results"
            log "round $round: $workload $mode tps=$tps"
        done
    done
done

records=$(python3 -c "
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute('select count(*) from audit').fetchone()[0])
" "$TMP/required/state/audit.db")
PYTHONPATH=benches python3 - "$TMP/results" "$(getconf CLK_TCK)" "$records" <<'PY'
import statistics, sys
from spread import per_round
rows = [l.split() for l in open(sys.argv[1])]
tck = int(sys.argv[2])
# A row's CPU ticks in column `col`, in microseconds per transaction.
us = lambda r, col: int(r[col]) / tck * 1e6 / int(r[3])
print(f"{'workload':<8} {'audit':<12} {'tps':>9} {'x off':>6} {'cpu us/txn':>11} {'of it worker':>13} {'flusher':>8} {'machine us/txn':>15} {'busy':>5}")
for w in dict.fromkeys(r[0] for r in rows):
    med = {}
    for m in ("required", "best-effort", "off"):
        rs = [r for r in rows if r[0] == w and r[1] == m]
        tps = statistics.median(float(r[2]) for r in rs)
        per_txn = lambda col: statistics.median(us(r, col) for r in rs)
        busy = statistics.median(int(r[6]) / int(r[7]) for r in rs)
        med[m] = (tps, per_txn(4), per_txn(9), per_txn(5), per_txn(6), busy)
    for m, (tps, cpu, worker, flusher, machine, busy) in med.items():
        print(f"{w:<8} {m:<12} {tps:>9.0f} {tps / med['off'][0]:>6.2f} {cpu:>11.1f} {worker:>13.1f} {flusher:>8.1f} {machine:>15.1f} {busy:>5.0%}")
    # Round by round: the instances ran seconds apart, so the machine's drift cancels.
    off = {r[8]: float(r[2]) for r in rows if r[0] == w and r[1] == "off"}
    off_worker = {r[8]: us(r, 9) for r in rows if r[0] == w and r[1] == "off"}
    for m in ("required", "best-effort"):
        rs = [r for r in rows if r[0] == w and r[1] == m and r[8] in off]
        paired = per_round([float(r[2]) / off[r[8]] for r in rs], ".2f")
        if paired:
            print(f"  {m} x off, paired by round: {paired}")
            worker = per_round([us(r, 9) - off_worker[r[8]] for r in rs], "+.1f", " us")
            print(f"  {m} worker CPU over off, per transaction: {worker}")
print(f"records in the required trail: {sys.argv[3]}")
PY
