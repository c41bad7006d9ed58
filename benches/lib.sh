# Pieces the end-to-end benchmarks use; sourced from the repository root by benches/e2e.sh,
# benches/e2e_mysql.sh and benches/guard_profile.sh (not run on its own).

log() { printf '%s\n' "$*" >&2; }

# Builds the release airlock binary, the plain TCP relay, the pass-through and the seam's
# floor (unless SKIP_BUILD=1) and sets AIRLOCK, RELAY, PASSTHROUGH and FLOOR_BIN to their
# paths. One build, so that they share their dependencies' features: examples bring in the
# dev-dependencies' (tokio's `process`, whose driver looks for orphaned children at every
# wake-up), which the airlock binary built on its own lacks. Airlock measured here carries
# that small cost too, and the pass-through compares like for like.
build_binaries() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "building (release)..."
        cargo build --release --quiet --bin airlock --example tcp_relay --example passthrough \
            --example seam_floor
    fi
    AIRLOCK=$PWD/target/release/airlock
    RELAY=$PWD/target/release/examples/tcp_relay
    PASSTHROUGH=$PWD/target/release/examples/passthrough
    FLOOR_BIN=$PWD/target/release/examples/seam_floor
    [[ -x $AIRLOCK && -x $RELAY && -x $PASSTHROUGH ]] || {
        log "missing $AIRLOCK, $RELAY or $PASSTHROUGH"
        exit 1
    }
}

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
    done
}

# Makes TMP (a temp dir named after $1, under $BENCH_TMP or /tmp: state directories live
# there, so BENCH_TMP=/dev/shm takes the disk out of a run) and arranges that every process
# in PIDS is stopped and TMP removed (unless KEEP_TMP=1) when the script exits.
setup_tmp() {
    TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}

# Prints $1 free loopback ports, held open together so they are distinct.
free_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))
' "$1"
}

# Waits (up to 10 s) until Airlock on port $1 lets user $2 (password $3) into database test;
# on failure prints the tail of log $4 and exits.
wait_for_login() {
    local _
    for _ in $(seq 100); do
        PGPASSWORD=$3 psql -X -h 127.0.0.1 -p "$1" -U "$2" -d test -Atc 'select 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "nothing lets $2 in on port $1:"
    tail -n 20 "$4" >&2
    exit 1
}

# Prints the config the PostgreSQL benchmarks run Airlock with: a listener on 127.0.0.1:$1
# in front of the PostgreSQL at $2 (host:port, as user postgres, no TLS), letting in user $3
# with SCRAM verifier $4. AIRLOCK_REUSE=false gives each client its own database session.
airlock_bench_config() {
    cat <<EOF
[server]
shutdown_grace_secs = 2

[postgres]
listen = "127.0.0.1:$1"
max_connections = 1000
# Like PgBouncer's session mode, which this is compared with: keep idle database sessions
# for the next client (AIRLOCK_REUSE=false to measure one database session per client).
reuse_server_sessions = ${AIRLOCK_REUSE:-true}

[postgres.upstream]
address = "$2"
user = "postgres"
tls = "disable"

[[users]]
name = "$3"
scram_sha_256 = "$4"
EOF
}

stat_ticks() { # utime + stime in a /proc stat file, in clock ticks
    local stat
    stat=$(<"$1")
    stat=${stat##*) } # drop "pid (comm) ", comm may hold spaces
    awk '{ print $12 + $13 }' <<<"$stat"
}

cpu_ticks() { # utime + stime of a process (all threads), in clock ticks
    stat_ticks "/proc/$1/stat"
}

cpu_ns() { # CPU time of a process's live threads so far, in nanoseconds (from schedstat)
    local task run _ total=0
    for task in /proc/"$1"/task/*; do
        read -r run _ <"$task/schedstat" || continue
        total=$((total + run))
    done
    echo "$total"
}

machine_ticks() { # busy and all clock ticks of the whole machine so far (from /proc/stat)
    local _cpu user nice system idle iowait irq softirq steal
    read -r _cpu user nice system idle iowait irq softirq steal _ </proc/stat
    local busy=$((user + nice + system + irq + softirq + steal))
    echo "$busy $((busy + idle + iowait))"
}

thread_ticks() { # utime + stime of a process's threads named $2, in clock ticks
    local task total=0
    for task in /proc/"$1"/task/*; do
        [[ $(<"$task/comm") == "$2" ]] || continue
        total=$((total + $(stat_ticks "$task/stat")))
    done
    echo "$total"
}
