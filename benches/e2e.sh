#!/usr/bin/env bash
# End-to-end benchmark: pgbench against PostgreSQL directly, through a plain TCP relay
# (examples/tcp_relay.rs, the floor), through PgBouncer (session mode), through Airlock and
# through Airlock's pass-through (examples/passthrough.rs: the same build and config with
# nothing in the inspection seam). Reports median TPS per target, the CPU each proxy spends
# per transaction, and what the policy adds (airlock minus passthrough, round by round).
# With FLOOR, also through the seam's floor (examples/seam_floor.rs): the least any
# statement-judging inspector costs, to set what the policy adds against.
#
#   benches/e2e.sh                      # ROUNDS=3 DURATION=10
#   ROUNDS=1 DURATION=3 benches/e2e.sh  # quick check
#
# Environment:
#   ROUNDS          rounds; each round runs every workload against every target (default 3)
#   DURATION        seconds per pgbench run (default 10)
#   PGHOST/PGPORT   the PostgreSQL under test (default 127.0.0.1:5432, user postgres, trust
#                   auth, database "test" must exist)
#   BENCH_DB        database holding the pgbench tables (default test)
#   SCALE           pgbench scale factor (default 10); `pgbench -i` runs unless the tables
#                   are already at this scale (FORCE_INIT=1 re-creates them regardless)
#   PGBOUNCER_AUTH  scram-sha-256 (default, what Airlock does too) or trust: how PgBouncer
#                   checks its clients, which matters for the -C workload.
#   AIRLOCK_REUSE   true (default, like PgBouncer's session mode) or false: Airlock's
#                   reuse_server_sessions.
#   AIRLOCK_BASELINE  path to another airlock binary (e.g. one built from an earlier commit)
#                   to run as target "baseline" with the same config, in the same rounds:
#                   the way to measure what a change costs per transaction
#   FLOOR           seam or shape: also run target "floor", Airlock's relay with an inspector
#                   shown what the guard is shown that does nothing with it (seam), or only
#                   takes each simple Query's shape and looks it up once (shape)
#   WORKLOADS_ONLY  run only the workloads whose name contains this text
#   RATE            pgbench -R: transactions per second for every run (default: as fast as
#                   it goes). Below every target's top speed, each target sees the same
#                   event rate, so CPU per transaction compares like for like
#   TARGETS_ONLY    run only these targets (say "airlock passthrough": more rounds of a
#                   comparison in the same time)
#   CONCURRENT=1    in each round, run every target's pgbench at the same time instead of
#                   one after another. Each target then sees the same machine at the same
#                   moment, so what one costs over another (CPU per transaction, paired by
#                   round) is far steadier on a shared VM; TPS are no longer each target's
#                   top speed. Meant for two or three targets (TARGETS_ONLY="airlock
#                   passthrough", or with AIRLOCK_BASELINE "airlock baseline")
#   SKIP_BUILD=1    use the binaries already in target/release
#   KEEP_TMP=1      keep the temp dir (configs, logs, raw results)
#
# Needs: cargo, psql, pgbench, python3, and pgbouncer (installed with apt-get if missing,
# which needs root). Listens on loopback only; every process it starts is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
PG_HOST=${PGHOST:-127.0.0.1}
PG_PORT=${PGPORT:-5432}
PG_USER=postgres
DB=${BENCH_DB:-test}
BENCH_USER=bench
BENCH_PASS=bench-pass
PGBOUNCER_AUTH=${PGBOUNCER_AUTH:-scram-sha-256}
RUN_TIMEOUT=$((DURATION + 60))

case $PGBOUNCER_AUTH in trust | scram-sha-256) ;; *)
    echo "PGBOUNCER_AUTH must be trust or scram-sha-256" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS
# No TLS anywhere: direct, relay, PgBouncer and Airlock all run in clear on loopback.
export PGSSLMODE=disable PGCONNECT_TIMEOUT=5

# shellcheck source=benches/lib.sh
source benches/lib.sh

# ---------------------------------------------------------------- build and tools
build_binaries

PGBOUNCER=$(command -v pgbouncer || true)
[[ -z $PGBOUNCER && -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer
if [[ -z $PGBOUNCER ]]; then
    log "pgbouncer not found; installing it from Debian..."
    apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null
    PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
fi
require_tools psql pgbench python3

# ---------------------------------------------------------------- temp dir and cleanup
setup_tmp airlock-e2e
chmod 755 "$TMP" # PgBouncer drops root and must still read its files
read -r AIRLOCK_PORT RELAY_PORT PGB_PORT BASELINE_PORT PASSTHROUGH_PORT FLOOR_PORT < <(free_ports 6)

# ---------------------------------------------------------------- Airlock
VERIFIER=$(printf '%s' "$BENCH_PASS" | "$AIRLOCK" passwd)
airlock_bench_config "$AIRLOCK_PORT" "$PG_HOST:$PG_PORT" "$BENCH_USER" "$VERIFIER" >"$TMP/airlock.toml"
"$AIRLOCK" serve --config "$TMP/airlock.toml" >"$TMP/airlock.log" 2>&1 &
AIRLOCK_PID=$!
PIDS+=("$AIRLOCK_PID")
# The same config with nothing in the seam: what the policy adds is Airlock's CPU minus this.
sed "s/127.0.0.1:$AIRLOCK_PORT/127.0.0.1:$PASSTHROUGH_PORT/" "$TMP/airlock.toml" >"$TMP/passthrough.toml"
"$PASSTHROUGH" "$TMP/passthrough.toml" >"$TMP/passthrough.log" 2>&1 &
PASSTHROUGH_PID=$!
PIDS+=("$PASSTHROUGH_PID")
BASELINE_PID=
if [[ -n ${AIRLOCK_BASELINE:-} ]]; then
    sed "s/127.0.0.1:$AIRLOCK_PORT/127.0.0.1:$BASELINE_PORT/" "$TMP/airlock.toml" >"$TMP/baseline.toml"
    "$AIRLOCK_BASELINE" serve --config "$TMP/baseline.toml" >"$TMP/baseline.log" 2>&1 &
    BASELINE_PID=$!
    PIDS+=("$BASELINE_PID")
fi
FLOOR_PID=
case ${FLOOR:-} in
'') ;;
seam | shape)
    [[ -x $FLOOR_BIN ]] || { log "missing $FLOOR_BIN (cargo build --release --example seam_floor)"; exit 1; }
    sed "s/127.0.0.1:$AIRLOCK_PORT/127.0.0.1:$FLOOR_PORT/" "$TMP/airlock.toml" >"$TMP/floor.toml"
    AIRLOCK_FLOOR=$FLOOR "$FLOOR_BIN" "$TMP/floor.toml" >"$TMP/floor.log" 2>&1 &
    FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    ;;
*) echo "FLOOR must be seam or shape" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- TCP relay
"$RELAY" "127.0.0.1:$RELAY_PORT" "$PG_HOST:$PG_PORT" >"$TMP/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")

# ---------------------------------------------------------------- PgBouncer
if [[ $PGBOUNCER_AUTH == trust ]]; then
    printf '"%s" ""\n' "$BENCH_USER" >"$TMP/userlist.txt"
else
    printf '"%s" "%s"\n' "$BENCH_USER" "$VERIFIER" >"$TMP/userlist.txt"
fi
cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
$DB = host=$PG_HOST port=$PG_PORT dbname=$DB user=$PG_USER

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = $PGBOUNCER_AUTH
auth_file = $TMP/userlist.txt
pool_mode = session
max_client_conn = 1000
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
EOF
chmod 644 "$TMP"/pgbouncer.ini "$TMP"/userlist.txt
PGB_ARGS=()
if [[ $(id -u) == 0 ]]; then # PgBouncer refuses to run as root
    if id postgres >/dev/null 2>&1; then PGB_ARGS=(-u postgres); else PGB_ARGS=(-u nobody); fi
fi
"$PGBOUNCER" "${PGB_ARGS[@]}" "$TMP/pgbouncer.ini" >"$TMP/pgbouncer.log" 2>&1 &
PGB_PID=$!
PIDS+=("$PGB_PID")

# ---------------------------------------------------------------- targets
# target -> "port user pid"
declare -A PORT=([direct]=$PG_PORT [relay]=$RELAY_PORT [pgbouncer]=$PGB_PORT [airlock]=$AIRLOCK_PORT [passthrough]=$PASSTHROUGH_PORT [baseline]=$BASELINE_PORT [floor]=$FLOOR_PORT)
declare -A USER_OF=([direct]=$PG_USER [relay]=$PG_USER [pgbouncer]=$BENCH_USER [airlock]=$BENCH_USER [passthrough]=$BENCH_USER [baseline]=$BENCH_USER [floor]=$BENCH_USER)
declare -A PID_OF=([direct]="" [relay]=$RELAY_PID [pgbouncer]=$PGB_PID [airlock]=$AIRLOCK_PID [passthrough]=$PASSTHROUGH_PID [baseline]=$BASELINE_PID [floor]=$FLOOR_PID)
declare -A HOST_OF=([direct]=$PG_HOST [relay]=127.0.0.1 [pgbouncer]=127.0.0.1 [airlock]=127.0.0.1 [passthrough]=127.0.0.1 [baseline]=127.0.0.1 [floor]=127.0.0.1)
TARGETS=(direct relay pgbouncer airlock passthrough)
[[ -n $BASELINE_PID ]] && TARGETS+=(baseline)
[[ -n $FLOOR_PID ]] && TARGETS+=(floor)
if [[ -n ${TARGETS_ONLY:-} ]]; then
    kept=()
    for t in "${TARGETS[@]}"; do [[ " $TARGETS_ONLY " == *" $t "* ]] && kept+=("$t"); done
    TARGETS=("${kept[@]}")
    ((${#TARGETS[@]})) || { echo "TARGETS_ONLY names none of the targets" >&2; exit 1; }
fi

conn_env() { # password only where the target checks one
    case $1 in
    airlock | passthrough | baseline | floor) echo "PGPASSWORD=$BENCH_PASS" ;;
    pgbouncer) echo "PGPASSWORD=$BENCH_PASS" ;;
    *) echo "PGPASSWORD=" ;;
    esac
}

wait_ready() {
    local t=$1 i
    for i in $(seq 100); do
        if env "$(conn_env "$t")" psql -h "${HOST_OF[$t]}" -p "${PORT[$t]}" -U "${USER_OF[$t]}" -d "$DB" \
            -XAtqc 'select 1' >/dev/null 2>"$TMP/ready-$t.err"; then
            return 0
        fi
        if [[ -n ${PID_OF[$t]} ]] && ! kill -0 "${PID_OF[$t]}" 2>/dev/null; then break; fi
        sleep 0.2
    done
    log "$t is not accepting connections on port ${PORT[$t]}:"
    cat "$TMP/ready-$t.err" >&2
    [[ -f $TMP/$t.log ]] && tail -n 20 "$TMP/$t.log" >&2
    exit 1
}
for t in "${TARGETS[@]}"; do wait_ready "$t"; done

# ---------------------------------------------------------------- machine
PG_VERSION=$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$DB" -XAtqc 'select version()')
echo "== machine"
echo "cpus:      $(nproc)"
echo "cpu:       $(lscpu | grep 'Model name' | sed 's/Model name:[[:space:]]*//' | head -n1)"
echo "kernel:    $(uname -sr)"
echo "postgres:  $PG_VERSION"
echo "pgbouncer: $("$PGBOUNCER" --version | head -n1) (session mode, auth_type=$PGBOUNCER_AUTH)"
echo "airlock:   $("$AIRLOCK" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty'); client auth scram-sha-256, upstream tls disable, reuse_server_sessions=${AIRLOCK_REUSE:-true})"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (before the run)"
echo "passthrough: examples/passthrough.rs, Airlock with nothing in the seam, same config"
[[ -n $BASELINE_PID ]] && echo "baseline:  $AIRLOCK_BASELINE, same config"
[[ -n $FLOOR_PID ]] && echo "floor:     examples/seam_floor.rs ($FLOOR), same config"
if [[ ${CONCURRENT:-0} == 1 ]]; then together="at the same time"; else together="interleaved"; fi
echo "runs:      $ROUNDS rounds x ${DURATION}s, targets $together: ${TARGETS[*]}${RATE:+, pgbench -R $RATE}"
echo

# ---------------------------------------------------------------- data
current_scale() { # branches and accounts must both match the scale, else 0
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$DB" -XAtq -c \
        "select case when (select count(*) from pgbench_accounts) = 100000 * count(*) then count(*) else 0 end
         from pgbench_branches" 2>/dev/null || echo 0
}
if [[ ${FORCE_INIT:-0} != 1 && $(current_scale) == "$SCALE" ]]; then
    log "pgbench tables in $DB are already at scale $SCALE"
else
    log "initialising pgbench tables (scale $SCALE) in $DB..."
    pgbench -i -s "$SCALE" -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$DB" >"$TMP/init.log" 2>&1 ||
        { cat "$TMP/init.log" >&2; exit 1; }
fi

# ---------------------------------------------------------------- runs
WORKLOADS=(
    "select, 8 clients|-S -c 8 -j 2"
    "select, 1 client|-S -c 1 -j 1"
    "prepared, 8 clients|-S -M prepared -c 8 -j 2"
    "connect per transaction, 8 clients|-S -C -c 8 -j 2"
    "tpcb-like writes, 8 clients|-c 8 -j 2"
)
if [[ -n ${WORKLOADS_ONLY:-} ]]; then
    kept=()
    for w in "${WORKLOADS[@]}"; do [[ ${w%%|*} == *"$WORKLOADS_ONLY"* ]] && kept+=("$w"); done
    WORKLOADS=("${kept[@]}")
fi
RESULTS=$TMP/results.tsv
: >"$RESULTS"
FAILED=0

# pgbench against target $1 with the current workload's args, its output in $2.
bench_run() {
    env "$(conn_env "$1")" timeout "$RUN_TIMEOUT" pgbench -n -T "$DURATION" "${args[@]}" ${RATE:+-R "$RATE"} \
        -h "${HOST_OF[$1]}" -p "${PORT[$1]}" -U "${USER_OF[$1]}" "$DB" >"$2" 2>&1
}

# Records target $1's finished run: pgbench output $2, exit code $3, the proxy's CPU
# nanoseconds before it $4.
record_run() {
    local t=$1 out=$2 rc=$3 before=$4 pid=${PID_OF[$1]} ns=-1 tps txns
    if [[ -n $pid ]]; then
        if kill -0 "$pid" 2>/dev/null; then
            ns=$(($(cpu_ns "$pid") - before))
        else
            log "$t (pid $pid) has exited:"; tail -n 20 "$TMP/$t.log" >&2; exit 1
        fi
    fi
    tps=$(awk '/^tps = / { print $3; exit }' "$out")
    txns=$(awk -F': ' '/^number of transactions actually processed: / { print $2 + 0; exit }' "$out")
    if [[ $rc != 0 || -z $tps || -z $txns ]]; then
        FAILED=1
        log "FAILED: $t, $name (pgbench exit $rc); pgbench output:"
        sed 's/^/    /' "$out" >&2
        printf '%s\t%s\t%s\tFAIL\tFAIL\t%s\n' "$round" "$name" "$t" "$ns" >>"$RESULTS"
        echo "FAILED: $t, $name, round $round (pgbench exit $rc):"
        grep -v '^\(transaction type\|scaling factor\|query mode\|number of\|duration\|latency\|initial\|tps\|maximum\|pgbench (\)' "$out" |
            head -n 20 | sed 's/^/    /' || true
        return
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$t" "$tps" "$txns" "$ns" >>"$RESULTS"
}

cpu_before() { if [[ -n ${PID_OF[$1]} ]]; then cpu_ns "${PID_OF[$1]}"; else echo 0; fi; }

for ((round = 1; round <= ROUNDS; round++)); do
    for w in "${!WORKLOADS[@]}"; do
        name=${WORKLOADS[$w]%%|*}
        read -r -a args <<<"${WORKLOADS[$w]#*|}"
        # Each round starts with the next target, so that none always runs first.
        order=()
        for ((i = 0; i < ${#TARGETS[@]}; i++)); do order+=("${TARGETS[(i + round - 1) % ${#TARGETS[@]}]}"); done
        if [[ ${CONCURRENT:-0} == 1 ]]; then
            log "round $round/$ROUNDS  $name  ${order[*]} at the same time"
            declare -A cpu0=() job=()
            for t in "${order[@]}"; do
                cpu0[$t]=$(cpu_before "$t")
                bench_run "$t" "$TMP/run-$round-$w-$t.log" &
                job[$t]=$!
            done
            for t in "${order[@]}"; do
                rc=0
                wait "${job[$t]}" || rc=$?
                record_run "$t" "$TMP/run-$round-$w-$t.log" "$rc" "${cpu0[$t]}"
            done
        else
            for t in "${order[@]}"; do
                log "round $round/$ROUNDS  $name  $t"
                before=$(cpu_before "$t")
                rc=0
                bench_run "$t" "$TMP/run-$round-$w-$t.log" || rc=$?
                record_run "$t" "$TMP/run-$round-$w-$t.log" "$rc" "$before"
            done
        fi
    done
done

# ---------------------------------------------------------------- summary
PYTHONPATH=benches python3 - "$RESULTS" "$DURATION" "${TARGETS[*]}" "${WORKLOADS[@]}" <<'PY'
import statistics, sys
from spread import per_round

path, duration = sys.argv[1], sys.argv[2]
targets = sys.argv[3].split()
workloads = [w.split("|", 1) for w in sys.argv[4:]]
runs = {}  # (workload, target) -> [(tps, txns, CPU ns)]
by_round = {}  # (workload, target) -> {round: CPU us per txn}
for line in open(path):
    rnd, name, target, tps, txns, ns = line.rstrip("\n").split("\t")
    runs.setdefault((name, target), []).append(
        None if tps == "FAIL" else (float(tps), int(txns), int(ns)))
    if tps != "FAIL" and int(txns) > 0 and int(ns) >= 0:
        by_round.setdefault((name, target), {})[rnd] = int(ns) / 1e3 / int(txns)

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, spec):
    return "-".rjust(int(spec.split(".")[0])) if x is None else format(x, spec)

for name, args in workloads:
    print(f"== {name}   (pgbench -n {args} -T {duration})")
    print(f"{'target':<10} {'median tps':>11} {'min..max tps':>19} {'vs direct':>9} "
          f"{'vs pgbouncer':>12} {'proxy CPU us/txn':>16} {'runs':>5}")
    tps, cpu, row = {}, {}, {}
    for t in targets:
        ok = [r for r in runs.get((name, t), []) if r is not None]
        failed = len(runs.get((name, t), [])) - len(ok)
        tps[t] = med([r[0] for r in ok]) if ok else None
        cpu[t] = None if t == "direct" else med(
            [r[2] / 1e3 / r[1] for r in ok if r[1] > 0 and r[2] >= 0])
        spread = f"{min(r[0] for r in ok):.0f}..{max(r[0] for r in ok):.0f}" if ok else "-"
        row[t] = (spread, f"{len(ok)}" + (f" ({failed} FAILED)" if failed else ""))
    for t in targets:
        spread, runs_s = row[t]
        print(f"{t:<10} {fmt(tps[t], '11.1f')} {spread:>19} "
              f"{fmt(tps[t] / tps['direct'] if tps[t] and tps.get('direct') else None, '9.3f')} "
              f"{fmt(tps[t] / tps['pgbouncer'] if tps[t] and tps.get('pgbouncer') else None, '12.3f')} "
              f"{fmt(cpu[t], '16.1f')} {runs_s:>5}")
    a_cpu, b_cpu = cpu.get("airlock"), cpu.get("pgbouncer")
    a_tps, b_tps = tps.get("airlock"), tps.get("pgbouncer")
    if a_cpu and b_cpu:
        r = a_cpu / b_cpu
        print(f"airlock/pgbouncer CPU per txn: {r:.2f}x  (target <= 1.20x: {'met' if r <= 1.2 else 'NOT met'})")
    else:
        print("airlock/pgbouncer CPU per txn: n/a")
    if a_tps and b_tps:
        r = a_tps / b_tps
        print(f"airlock/pgbouncer TPS:         {r:.2f}x  (target >= 0.95x: {'met' if r >= 0.95 else 'NOT met'})")
    else:
        print("airlock/pgbouncer TPS:         n/a")
    pairs = [("airlock", "passthrough"), ("airlock", "baseline"), ("airlock", "floor"),
             ("floor", "passthrough")]
    for one, other in pairs:
        if one not in targets or other not in targets or not cpu.get(one) or not cpu.get(other):
            continue
        d = cpu[one] - cpu[other]
        print(f"{one} - {other} CPU per txn: {d:+.2f} us ({cpu[one] / cpu[other]:.2f}x)")
        # Round by round: the two ran minutes apart at most, so drift cancels.
        a, b = by_round.get((name, one), {}), by_round.get((name, other), {})
        paired = per_round([a[r] - b[r] for r in a if r in b], "+.2f", " us")
        if paired:
            print(f"  paired by round: {paired}")
    print()
print("tps: pgbench's figure (for -C it includes connecting; otherwise it excludes the initial")
print("connection). proxy CPU us/txn: CPU time of the proxy process's threads over the run,")
print("from /proc/PID/task/*/schedstat, divided by the transactions pgbench completed. Medians")
print("over rounds. airlock - passthrough: what the policy adds (same build, same config).")
print("floor - passthrough: what the least a statement-judging inspector does costs.")
PY
if [[ ${CONCURRENT:-0} == 1 ]]; then
    echo "CONCURRENT=1: the targets ran at the same time, so each tps is a share of the machine,"
    echo "not the target's top speed; CPU per transaction and the paired differences compare"
    echo "targets that saw the same load at the same moment."
fi

echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (after the run)"
if [[ $(current_scale) != "$SCALE" ]]; then
    echo "WARNING: the pgbench tables in $DB are no longer at scale $SCALE: something else"
    echo "re-initialised them during the run; the figures above are not trustworthy."
    FAILED=1
fi
if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "raw results: $RESULTS"; fi
exit "$FAILED"
