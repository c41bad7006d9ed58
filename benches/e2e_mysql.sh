#!/usr/bin/env bash
# End-to-end benchmark for the MySQL listener: sysbench against MariaDB directly, through a
# plain TCP relay (examples/tcp_relay.rs, the floor) and through Airlock (default policy),
# interleaved. Reports median queries per second and each proxy's CPU per query.
#
#   benches/e2e_mysql.sh                      # ROUNDS=3 DURATION=10
#   ROUNDS=1 DURATION=3 benches/e2e_mysql.sh  # quick check
#
# Environment: ROUNDS, DURATION (seconds per run), THREADS (sysbench threads, default 8),
# MYSQL_HOST/MYSQL_PORT (default 127.0.0.1:3306, user root without a password), SKIP_BUILD=1,
# KEEP_TMP=1. Needs sysbench, the mariadb client and python3. Target from the MySQL issue:
# Airlock's CPU per query within 1.3x of the relay's.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
THREADS=${THREADS:-8}
MY_HOST=${MYSQL_HOST:-127.0.0.1}
MY_PORT=${MYSQL_PORT:-3306}
DB=airlock_bench
PASS=bench-pass

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

build_binaries
require_tools sysbench mariadb python3
setup_tmp airlock-e2e-mysql
read -r AIRLOCK_PORT RELAY_PORT < <(free_ports 2)

VERIFIER=$(printf '%s' "$PASS" | "$AIRLOCK" passwd)
NATIVE=$(printf '%s' "$PASS" | "$AIRLOCK" passwd --mysql-native)
cat >"$TMP/airlock.toml" <<EOF
[server]
shutdown_grace_secs = 2

[mysql]
listen = "127.0.0.1:$AIRLOCK_PORT"

[mysql.upstream]
address = "$MY_HOST:$MY_PORT"
user = "root"
tls = "disable"

[[users]]
name = "bench"
scram_sha_256 = "$VERIFIER"
mysql_native_password = "$NATIVE"
EOF
"$AIRLOCK" serve --config "$TMP/airlock.toml" >"$TMP/airlock.log" 2>&1 &
AIRLOCK_PID=$!
PIDS+=("$AIRLOCK_PID")
"$RELAY" "127.0.0.1:$RELAY_PORT" "$MY_HOST:$MY_PORT" >"$TMP/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")

declare -A PORT=([direct]=$MY_PORT [relay]=$RELAY_PORT [airlock]=$AIRLOCK_PORT)
declare -A USER_OF=([direct]=root [relay]=root [airlock]=bench)
declare -A PASS_OF=([direct]="" [relay]="" [airlock]=$PASS)
declare -A PID_OF=([direct]="" [relay]=$RELAY_PID [airlock]=$AIRLOCK_PID)
TARGETS=(direct relay airlock)

sb() { # target workload phase [extra args]
    local t=$1 w=$2 phase=$3
    shift 3
    sysbench "$w" --db-driver=mysql --mysql-ssl=off --mysql-host=127.0.0.1 \
        --mysql-port="${PORT[$t]}" --mysql-user="${USER_OF[$t]}" --mysql-password="${PASS_OF[$t]}" \
        --mysql-db="$DB" --tables=4 --table-size=10000 "$@" "$phase"
}

mariadb -h "$MY_HOST" -P "$MY_PORT" -u root --protocol=tcp -e "drop database if exists $DB; create database $DB"
log "preparing sysbench tables in $DB..."
sb direct oltp_read_only prepare >"$TMP/prepare.log" 2>&1 || { cat "$TMP/prepare.log" >&2; exit 1; }
for _ in $(seq 50); do
    sb airlock oltp_point_select run --time=1 >/dev/null 2>&1 && break
    sleep 0.2
done

echo "== machine"
echo "cpus:      $(nproc)"
echo "cpu:       $(lscpu | grep 'Model name' | sed 's/Model name:[[:space:]]*//' | head -n1)"
echo "mariadb:   $(mariadb -h "$MY_HOST" -P "$MY_PORT" -u root --protocol=tcp -N -e 'select version()')"
echo "airlock:   $("$AIRLOCK" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo '?'); built-in default policy)"
echo "runs:      $ROUNDS rounds x ${DURATION}s, $THREADS threads, targets interleaved: ${TARGETS[*]}"
echo

WORKLOADS=(oltp_point_select oltp_read_only)
RESULTS=$TMP/results.tsv
: >"$RESULTS"
CLK_TCK=$(getconf CLK_TCK)
for ((round = 1; round <= ROUNDS; round++)); do
    for w in "${WORKLOADS[@]}"; do
        for t in "${TARGETS[@]}"; do
            log "round $round/$ROUNDS  $w  $t"
            pid=${PID_OF[$t]}
            before=0
            [[ -n $pid ]] && before=$(cpu_ticks "$pid")
            out=$TMP/run-$round-$w-$t.log
            sb "$t" "$w" run --threads="$THREADS" --time="$DURATION" >"$out" 2>&1 || {
                log "FAILED: $t $w"; cat "$out" >&2; exit 1
            }
            ticks=-1
            [[ -n $pid ]] && ticks=$(($(cpu_ticks "$pid") - before))
            queries=$(awk '/^ +total:/ { print $2; exit }' "$out")
            qps=$(awk '/^ +queries:/ { gsub(/[()]/, "", $3); print $3; exit }' "$out")
            errors=$(awk '/ignored errors:/ { print $3; exit }' "$out")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$w" "$t" "$qps" "$queries" "$ticks" "$errors" >>"$RESULTS"
        done
    done
done

python3 - "$RESULTS" "$CLK_TCK" "${WORKLOADS[@]}" <<'PY'
import statistics, sys
path, clk = sys.argv[1], int(sys.argv[2])
workloads = sys.argv[3:]
runs = {}
for line in open(path):
    _, w, t, qps, queries, ticks, errors = line.rstrip("\n").split("\t")
    runs.setdefault((w, t), []).append((float(qps), int(queries), int(ticks), int(errors or 0)))
for w in workloads:
    print(f"== {w}")
    print(f"{'target':<8} {'median qps':>11} {'vs direct':>9} {'CPU us/query':>12} {'errors':>6}")
    cpu = {}
    for t in ["direct", "relay", "airlock"]:
        r = runs.get((w, t), [])
        qps = statistics.median(x[0] for x in r)
        direct = statistics.median(x[0] for x in runs[(w, "direct")])
        c = None if t == "direct" else statistics.median(x[2] / clk * 1e6 / x[1] for x in r if x[1] > 0)
        cpu[t] = c
        print(f"{t:<8} {qps:>11.0f} {qps / direct:>9.3f} {('-' if c is None else f'{c:.2f}'):>12} {sum(x[3] for x in r):>6}")
    ratio = cpu["airlock"] / cpu["relay"]
    print(f"airlock/relay CPU per query: {ratio:.2f}x  (target <= 1.30x: {'met' if ratio <= 1.3 else 'NOT met'})")
    print()
print("qps and queries: sysbench's figures; CPU us/query: user+system CPU of the proxy process over")
print("the run, from /proc/PID/stat, divided by the queries sysbench completed. Medians over rounds.")
PY
