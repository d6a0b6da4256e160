#!/usr/bin/env bash
# Instructions (and allocations) per operation for every (workload, peer)
# pair, counted by callgrind: each pair runs twice, for LO and HI operations
# after the same setup and warm-up, and the table shows
# (Ir(HI) - Ir(LO)) / (ops(HI) - ops(LO)), so setup, warm-up and process
# start-up cancel out. Retained bytes per operation come the same way from
# two native runs with byte tracking on.
#
#   bash benches/compare/callgrind.sh [FILTER]     # FILTER: part of a workload name
#
# Needs valgrind (Debian: apt-get install valgrind). LO, HI, JOBS (pairs run
# at once) and WAKER (`noop`, the default, or `arc`: the waker the futures
# are polled with) can be set in the environment. The binary is built into
# $CARGO_TARGET_DIR if it is set, else into target/ beside this script.
set -euo pipefail
cd "$(dirname "$0")"

LO=${LO:-4096}
HI=${HI:-12288}
JOBS=${JOBS:-2}
WAKER=${WAKER:-noop}
FILTER=${1:-}

command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/awaitmap-compare
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The value of field NAME in a line of NAME=VALUE fields.
field() {
    tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

# Prints "Ir ops allocs retained" for one run of one pair: Ir, ops and allocs
# from a run under callgrind, retained (bytes) from the same run done natively
# with byte tracking on, which would add instructions of its own.
run_once() {
    local err="$work/err.$BASHPID" out bytes ir
    out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$bin" one "$1" "$2" "$3" --waker "$WAKER" 2>"$err")
    # valgrind's summary line reads "==PID== Collected : 123456789".
    ir=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$err")
    [ -n "$ir" ] || { echo "no callgrind summary for $1 $2:" >&2; cat "$err" >&2; return 1; }
    bytes=$("$bin" one "$1" "$2" "$3" --bytes --waker "$WAKER")
    # The program prints "ops=N allocs=N ns_per_op=X", " retained=N" with
    # --bytes, then " waker=NAME".
    echo "$ir $(field "$out" ops) $(field "$out" allocs) $(field "$bytes" retained)"
}

# Writes "Ir/op allocs/op retained-B/op" for one pair to $work/res.$1.
measure_pair() {
    local lo hi
    lo=$(run_once "$2" "$3" "$LO")
    hi=$(run_once "$2" "$3" "$HI")
    echo "$lo $hi" | awk '{ d = $6 - $2
        printf "%.1f %.4f %.1f\n", ($5 - $1) / d, ($7 - $3) / d, ($8 - $4) / d }' \
        >"$work/res.$1"
}

start=$SECONDS
"$bin" list >"$work/pairs"
i=0
while IFS=$'\t' read -r workload peer status; do
    i=$((i + 1))
    [[ -z "$FILTER" || "$workload" == *"$FILTER"* ]] || continue
    if [ "$status" = run ]; then
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
        measure_pair "$i" "$workload" "$peer" &
    fi
done <"$work/pairs"
wait

echo "callgrind, ops $LO and $HI after the same warm-up, waker $WAKER; Ir/op = (Ir($HI) - Ir($LO)) / (ops($HI) - ops($LO)); ratio = this pair's Ir/op ÷ awaitmap's (> 1: awaitmap cheaper)"
echo
echo "| workload | peer | Ir/op | ÷ awaitmap | allocs/op | retained B/op |"
echo "|---|---|---:|---:|---:|---:|"
i=0
while IFS=$'\t' read -r workload peer status; do
    i=$((i + 1))
    [[ -z "$FILTER" || "$workload" == *"$FILTER"* ]] || continue
    if [ "$status" = run ]; then
        printf '%s\t%s\trun\t%s\n' "$workload" "$peer" "$(cat "$work/res.$i")"
    else
        printf '%s\t%s\t%s\n' "$workload" "$peer" "$status"
    fi
done <"$work/pairs" | awk -F'\t' '
    $3 == "run" {
        split($4, r, " ")
        if (!($1 in base)) base[$1] = r[1]
        ir[$1 "|" $2] = r[1]
        printf "| %s | %s | %s | %.2f | %s | %s |\n", $1, $2, r[1], r[1] / base[$1], r[2], r[3]
        next
    }
    { sub(/^time-only: /, "not measured: ", $3); printf "| %s | %s | %s | | | |\n", $1, $2, $3 }
    END {
        print ""
        for (w in base) if (w ~ /^hit-/ && (w "|floor") in ir)
            printf "- %s: awaitmap get ÷ floor = %.2f (target ≤ 1.2: %s)\n", w, ir[w "|awaitmap"] / ir[w "|floor"], (ir[w "|awaitmap"] <= 1.2 * ir[w "|floor"] ? "met" : "NOT met")
    }'
echo
"$bin" legend
echo >&2 "callgrind.sh took $((SECONDS - start)) s"
