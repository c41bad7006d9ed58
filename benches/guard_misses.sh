#!/usr/bin/env bash
# Counts the cache misses of the guard's work per pgbench TPC-B-like transaction: the work of
# criterion's `tpcb_simple_cold` (eight sessions in turn, 4 MiB written between two
# statements) run under valgrind's cachegrind, with a 32 KiB L1 and a 1 MiB last level.
# A count, not a timing: it compares two builds on a machine whose timings drift more than
# the change being measured. The misses a statement takes in the running proxy cost what a
# trip to L3 or memory costs there; this says how many there are and where.
#
#   benches/guard_misses.sh                 # 200 transactions
#   TXNS=500 WARM_STACK=1 benches/guard_misses.sh
#
# Environment:
#   TXNS        transactions counted (default 200), after 16 that warm every session
#   CLUTTER_KIB KiB written between two statements (default 4096: every line the guard
#               touches misses), each time other lines. With 256, a line touched by every
#               statement (code tables, what all sessions share) stays in the 1 MiB last
#               level while a line of one session's own (touched every eighth statement,
#               2 MiB later) does not, as in the proxy
#   WARM_STACK  1: bring the stack back into the cache after each disturbance (the proxy's
#               thread runs every session on one stack, which may stay cached)
#   RUNS        runs to take the median of (default 5): where the heap's blocks and the hash
#               tables' buckets land differs from run to run (address randomisation, random
#               hash seeds), and with it which lines conflict, by some 15% per run
#   TOP         functions listed (default 12), with their mean over the runs
#
# Needs valgrind (installed with apt-get when missing; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
TXNS=${TXNS:-200}
if ! command -v valgrind >/dev/null; then
    echo "valgrind not found; installing it from Debian..." >&2
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
BUILD=$(cargo bench --bench guard --no-run 2>&1) || { echo "$BUILD" >&2; exit 1; }
BIN=$(grep -o 'target/release/deps/guard-[0-9a-f]*' <<<"$BUILD" | tail -1)
[[ -x $BIN ]] || { echo "could not find the guard bench in cargo's output" >&2; exit 1; }
TMP=$(mktemp -d /tmp/guard-misses.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
warm=()
[[ ${WARM_STACK:-0} == 1 ]] && warm=(GUARD_WARM_STACK=1)
[[ -n ${CLUTTER_KIB:-} ]] && warm+=(GUARD_CLUTTER_KIB="$CLUTTER_KIB")
RUNS=${RUNS:-5}
# Each run is two, of 0 and TXNS transactions: their difference is the transactions' alone.
for run in $(seq "$RUNS"); do
    for n in 0 "$TXNS"; do
        env "${warm[@]}" GUARD_COLD_TXNS="$n" valgrind --tool=cachegrind --cache-sim=yes \
            --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64 \
            --cachegrind-out-file="$TMP/$run.$n.out" "$BIN" >/dev/null 2>"$TMP/log" || {
            cat "$TMP/log" >&2
            exit 1
        }
    done
done
python3 - "$TMP" "$RUNS" "$TXNS" "${TOP:-12}" <<'PY'
import collections, sys

def per_function(path):
    """Event counts (Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw) by function."""
    counts = collections.defaultdict(lambda: [0] * 9)
    fn = None
    for line in open(path):
        if line.startswith("fn="):
            fn = line[3:].strip()
        elif line[:1].isdigit() and fn:
            values = [int(v) for v in line.split()[1:]]
            for i, v in enumerate(values):
                counts[fn][i] += v
    return counts

tmp, runs, txns, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The bench's own work: the disturbance, the stack warming, the copy of each statement.
harness = ("guard::disturb", "guard::warm_stack", "guard::touch", "guard::Cold::txn", "guard::main")
# And the clock read around each statement (criterion times them; this run does not need to).
clock = ("clock_gettime", "__vdso_clock_gettime", "<std::sys::pal::unix::time::Timespec>::now")
totals, means = [], collections.defaultdict(float)
for run in range(1, runs + 1):
    before = per_function(f"{tmp}/{run}.0.out")
    after = per_function(f"{tmp}/{run}.{txns}.out")
    total = [0.0] * 4
    for fn in set(before) | set(after):
        if fn.startswith(harness) or fn.startswith(clock):
            continue
        d = [(after[fn][i] - before[fn][i]) / txns for i in range(9)]
        for i, v in enumerate((d[5] + d[8], d[5], d[8], d[0])):
            total[i] += v
        means[fn] += (d[5] + d[8]) / runs
    totals.append(total)
totals.sort()
median = totals[len(totals) // 2]
print("per transaction (7 statements), the guard and what it calls, median of "
      f"{runs} runs:")
print(f"  last-level misses {median[0]:.0f} (reads {median[1]:.0f}, writes {median[2]:.0f}; "
      f"runs {', '.join(f'{t[0]:.0f}' for t in totals)}); instructions {median[3]:.0f}")
for fn, misses in sorted(means.items(), key=lambda kv: -kv[1])[:top]:
    print(f"  {misses:6.1f}  {fn[:100]}")
PY
