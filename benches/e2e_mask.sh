#!/usr/bin/env bash
# End-to-end masking benchmark: one SELECT returning about 100 MB, read with psql directly
# from PostgreSQL, through Airlock as a user whose results are masked, and through Airlock as
# a user exempt from masking, interleaved round by round. Reports the median wall time per
# target, the ratios, and Airlock's CPU per run.
#
#   benches/e2e_mask.sh               # ROUNDS=5
#   ROUNDS=1 benches/e2e_mask.sh      # quick check
#
# Environment:
#   ROUNDS      rounds; each reads the table once per target (default 5)
#   ROWS        rows in the table (default 200000, about 100 MB of results)
#   SKIP_BUILD=1, KEEP_TMP=1 as in benches/e2e.sh
#
# Needs: cargo, psql, python3, PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth,
# database test). Makes the table airlock_mask_bench in test (re-made when ROWS changes).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
ROWS=${ROWS:-200000}
PG_PORT=5432
TABLE=airlock_mask_bench
PASS=bench-pass

cd "$(dirname "$0")/.."
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS
export PGSSLMODE=disable PGCONNECT_TIMEOUT=5

# shellcheck source=benches/lib.sh
source benches/lib.sh
build_binaries
require_tools psql python3
setup_tmp airlock-mask

direct() { psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test "$@"; }

# ---------------------------------------------------------------- the table
have=$(direct -Atc "select count(*) from $TABLE" 2>/dev/null || echo 0)
if [[ $have != "$ROWS" ]]; then
    log "making $TABLE ($ROWS rows)..."
    # Ordinary rows: prose, an email, a timestamp, a UUID, a small JSON document; one row in a
    # thousand carries a GitHub token in its note.
    direct <<SQL
drop table if exists $TABLE;
create table $TABLE (id int primary key, note text, email text, at timestamptz, ref uuid, doc jsonb);
insert into $TABLE
select i,
       case when i % 1000 = 0
            then 'rotated key ghp_' || substr(md5(i::text) || md5((i + 1)::text), 1, 36)
            else repeat('order ' || i || ' shipped to the customer and left at the door; ', 5)
       end,
       'user' || (i % 977) || '@example.com',
       timestamptz '2024-01-01' + i * interval '1 minute',
       md5(i::text)::uuid,
       jsonb_build_object('id', i, 'status', 'shipped', 'items', jsonb_build_array(i % 13, i % 29))
from generate_series(1, $ROWS) i;
analyze $TABLE;
SQL
fi
BYTES=$(direct -Atc "select sum(pg_column_size(t.*)) from $TABLE t")

# ---------------------------------------------------------------- Airlock
read -r PORT < <(free_ports 1)
VERIFIER=$(printf '%s' "$PASS" | "$AIRLOCK" passwd)
mkdir "$TMP/policy"
cat >"$TMP/policy/policy.toml" <<EOF
[defaults]
action = "allow"

[mask]
exempt_groups = ["unmasked"]
EOF
cat >"$TMP/airlock.toml" <<EOF
[server]
shutdown_grace_secs = 2

[policy]
dir = "$TMP/policy"

[postgres]
listen = "127.0.0.1:$PORT"

[postgres.upstream]
address = "127.0.0.1:$PG_PORT"
user = "postgres"
tls = "disable"

[[users]]
name = "masked"
scram_sha_256 = "$VERIFIER"

[[users]]
name = "unmasked"
scram_sha_256 = "$VERIFIER"
groups = ["unmasked"]
EOF
"$AIRLOCK" serve --config "$TMP/airlock.toml" >"$TMP/airlock.log" 2>&1 &
AIRLOCK_PID=$!
PIDS+=("$AIRLOCK_PID")
wait_for_login "$PORT" masked "$PASS" "$TMP/airlock.log"

# ---------------------------------------------------------------- runs
QUERY="select * from $TABLE"
run() { # target -> "seconds airlock_cpu_seconds"
    local start end t0 t1
    t0=$(cpu_ticks "$AIRLOCK_PID")
    start=$(date +%s.%N)
    case $1 in
        direct) direct -At -o /dev/null -c "$QUERY" ;;
        off) PGPASSWORD=$PASS psql -X -q -h 127.0.0.1 -p "$PORT" -U unmasked -d test -At -o /dev/null -c "$QUERY" ;;
        on) PGPASSWORD=$PASS psql -X -q -h 127.0.0.1 -p "$PORT" -U masked -d test -At -o /dev/null -c "$QUERY" ;;
    esac
    end=$(date +%s.%N)
    t1=$(cpu_ticks "$AIRLOCK_PID")
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f} {(int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5]):.3f}')" \
        "$start" "$end" "$t0" "$t1" "$(getconf CLK_TCK)"
}

# The masked read must show placeholders: check once before timing.
masked=$(PGPASSWORD=$PASS psql -X -h 127.0.0.1 -p "$PORT" -U masked -d test -Atc "select note from $TABLE where id = 1000")
[[ $masked == *"[masked:github_token]"* ]] || { log "masking is not on for user masked: $masked"; exit 1; }

for round in $(seq "$ROUNDS"); do
    for target in direct off on; do
        read -r secs cpu < <(run "$target")
        echo "$target $secs $cpu" >>"$TMP/results"
        log "round $round: $target ${secs}s (airlock cpu ${cpu}s)"
    done
done

python3 - "$TMP/results" "$BYTES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
mb = int(sys.argv[2]) / 1e6
med = {t: statistics.median(float(r[1]) for r in rows if r[0] == t) for t in ("direct", "off", "on")}
cpu = {t: statistics.median(float(r[2]) for r in rows if r[0] == t) for t in ("off", "on")}
print(f"table: {mb:.0f} MB of rows; median of {len(rows) // 3} interleaved rounds")
print(f"{'target':<8}{'wall s':>8}{'MB/s':>8}{'airlock cpu s':>15}")
for t in ("direct", "off", "on"):
    c = f"{cpu[t]:.2f}" if t in cpu else "-"
    print(f"{t:<8}{med[t]:>8.2f}{mb / med[t]:>8.0f}{c:>15}")
print(f"masking on / off: {med['on'] / med['off']:.2f}x wall, {cpu['on'] / cpu['off']:.2f}x Airlock CPU")
print(f"masking on / direct: {med['on'] / med['direct']:.2f}x wall")
PY
