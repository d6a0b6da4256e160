#!/usr/bin/env bash
# Flash and RAM that awaitmap costs a Cortex-M4F firmware, next to
# maitake-sync's WaitMap doing the same job. Builds the five images
# (bare, fixed without a heap; baseline, awaitmap, maitake with one) at
# opt-level "s" and 3 and prints their section sizes and the differences from
# their skeleton (`bare` for the heap-free images, `baseline` for the others),
# checks that the heap-free images link no allocator and that the awaitmap
# image links none of the producer side it does not use, shows where each map's
# extra flash goes and the size of each static map, then runs the `report`
# builds under QEMU for the heap the map uses at run time.
#
#   bash benches/size/run.sh
#
# Needs the thumbv7em-none-eabihf target (rustup target add
# thumbv7em-none-eabihf) and llvm-size/llvm-nm (Debian: apt-get install llvm;
# LLVM_SIZE and LLVM_NM override the names). The QEMU part needs
# qemu-system-arm (Debian: apt-get install qemu-system-arm); without it, or
# with QEMU=0, it is skipped.
set -euo pipefail
cd "$(dirname "$0")"

TARGET=thumbv7em-none-eabihf
LLVM_SIZE=${LLVM_SIZE:-llvm-size}
LLVM_NM=${LLVM_NM:-llvm-nm}
# Each image and the skeleton its differences are taken from.
IMAGES=(bare fixed baseline awaitmap maitake)
declare -A SKELETON=([bare]=bare [fixed]=bare [baseline]=baseline [awaitmap]=baseline [maitake]=baseline)
# The images built without feature `heap`: no global allocator, no `alloc`.
HEAP_FREE=(bare fixed)

for tool in cargo "$LLVM_SIZE" "$LLVM_NM"; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "target $TARGET missing: rustup target add $TARGET" >&2
    exit 1
fi

# "text data bss" of one image (Berkeley format: text holds the vector
# table, code and read-only data).
sizes() {
    "$LLVM_SIZE" -B "$1" | awk 'NR == 2 { print $1, $2, $3 }'
}

# Builds every image for one cargo profile, with FEATURES added: the
# heap-free ones without feature `heap`, the others with it.
build() {
    local profile=$1 features=${2:-} args=() img
    for img in "${HEAP_FREE[@]}"; do args+=(--bin "fw-$img"); done
    cargo build --profile "$profile" --quiet "${args[@]}" ${features:+--features "$features"}
    args=()
    for img in "${IMAGES[@]}"; do
        [[ " ${HEAP_FREE[*]} " == *" $img "* ]] || args+=(--bin "fw-$img")
    done
    cargo build --profile "$profile" --quiet "${args[@]}" --features "heap${features:+,$features}"
}

# The size table for one cargo profile.
table() {
    local profile=$1 label=$2 dir=target/$TARGET/$1
    build "$profile"
    echo "== $label (profile $profile): bytes; flash = text + data, static RAM = data + bss;"
    echo "   each Δ is from the image's skeleton: bare for the heap-free ones, baseline for the others"
    # Each Δ is two bytes in UTF-8, so its column is one wider in printf.
    printf '%-9s %7s %5s %6s | %-8s | %8s %7s %7s | %8s %8s\n' \
        image text data bss skeleton Δtext Δdata Δbss Δflash ΔRAM
    local img rows=""
    for img in "${IMAGES[@]}"; do
        rows+="$img $(sizes "$dir/fw-$img") ${SKELETON[$img]} $(sizes "$dir/fw-${SKELETON[$img]}")"$'\n'
    done
    printf '%s' "$rows" | awk '{ printf "%-9s %7d %5d %6d | %-8s | %+7d %+6d %+6d | %+7d %+7d\n",
        $1, $2, $3, $4, $5, $2 - $6, $3 - $7, $4 - $8,
        ($2 + $3) - ($6 + $7), ($3 + $4) - ($7 + $8) }'
    echo
}

# Fails if image $1's symbol table names anything that matches the extended
# regular expression $2 (case-insensitive), printing what it found as $3.
no_symbols() {
    local found
    found=$("$LLVM_NM" -C "target/$TARGET/release/fw-$1" | grep -Ei "$2" || true)
    if [ -n "$found" ]; then
        echo "fw-$1 links $3:" >&2
        echo "$found" >&2
        return 1
    fi
}

# Fails unless the heap-free images link no allocator: no allocator entry
# points, no allocator crate, nothing of `alloc`.
no_allocator() {
    local img
    for img in "${HEAP_FREE[@]}"; do
        no_symbols "$img" '__rust_alloc|__rust_dealloc|__rust_realloc|__rg_|__rdl_|GlobalAlloc|embedded_alloc| alloc::' \
            "allocator code" || return 1
    done
    echo "== no allocator in the heap-free images (${HEAP_FREE[*]}): checked in their symbol tables"
    echo
}

# Fails unless the awaitmap image, which never uses the producer side (and
# is built without awaitmap's feature `producer`), links none of it: no
# event-listener, no demand queue, no announcing, no limit's futures.
no_producer_side() {
    no_symbols awaitmap 'event_listener|vec_deque|announce|wanted|awaitmap::producer|InsertAsync|Demand|Drained|WaitClosed' \
        "producer-side code it never uses" || return 1
    echo "== no producer side in the awaitmap image: checked in its symbol table"
    echo
}

# Bytes of code and read-only data per crate, from the symbol table, for
# image $1. Code that the optimiser inlined is counted in its caller (the
# images' SysTick, main and block_on), so read this as a rough split.
by_crate() {
    "$LLVM_NM" -S -C --defined-only --radix=d "target/$TARGET/release/fw-$1" | awk -v img="$1" '
        NF >= 4 && $3 ~ /^[tTrR]$/ {
            name = $4
            for (i = 5; i <= NF; i++) name = name " " $i
            sub(/^_\$LT\$/, "", name); sub(/^</, "", name)
            if (name ~ /^(__aeabi|compiler_builtins)/) c = "compiler_builtins (mem*)"
            else if (name ~ /::/) { c = name; sub(/(::|\.\.).*/, "", c) }
            else c = "(vectors, handlers, entry)"
            if (c == "fw_" img || c == "awaitmap_size") c = "(the image and its skeleton)"
            bytes[c] += $2
        }
        END { for (c in bytes) print c "\t" bytes[c] }'
}

crate_split() {
    local img
    for img in fixed awaitmap; do
        echo "== where the $img image's extra flash goes (opt-level \"s\"; code and rodata by crate, minus ${SKELETON[$img]})"
        join -t $'\t' -a 1 -a 2 -e 0 -o 0,1.2,2.2 \
            <(by_crate "$img" | sort) <(by_crate "${SKELETON[$img]}" | sort) |
            awk -F'\t' '$2 != $3 { printf "%-30s %+7d\n", $1, $2 - $3 }' | sort -t$'\t' -k1,1
        echo
    done
    echo "== static maps (symbol sizes, opt-level \"s\"; the size_of each map type on this target)"
    local dir=target/$TARGET/release
    for img in fixed awaitmap maitake; do
        "$LLVM_NM" -S -C --radix=d "$dir/fw-$img" |
            awk -v img="$img" '$4 ~ ("^fw_" img "::MAP::") { printf "%-9s MAP: %d bytes in .%s\n",
                img, $2, ($3 ~ /[dD]/ ? "data" : "bss") }'
    done
    echo
}

qemu_report() {
    if [ "${QEMU:-1}" = 0 ]; then
        echo "== heap at run time: skipped (QEMU=0)"
        return
    fi
    if ! command -v qemu-system-arm >/dev/null; then
        # QEMU=1 asks for the runs: then a missing QEMU is a failure.
        if [ "${QEMU:-}" = 1 ]; then
            echo "QEMU=1 but qemu-system-arm not found (Debian: apt-get install qemu-system-arm)" >&2
            return 1
        fi
        echo "== heap at run time: skipped (qemu-system-arm not found; Debian: apt-get install qemu-system-arm)"
        return
    fi
    echo "== heap at run time and type sizes: the report builds under QEMU (mps2-an386, a Cortex-M4F)"
    build qemu-report report
    local img
    for img in fixed baseline awaitmap maitake; do
        # Each image prints over semihosting and exits QEMU with its status;
        # a hang (which would be a bug) ends at the time-out.
        timeout 60 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
            -monitor none -serial none -semihosting-config enable=on,target=native \
            -kernel "target/$TARGET/qemu-report/fw-$img" ||
            { echo "$img: the QEMU run failed (status $?)" >&2; return 1; }
    done
}

table release 'opt-level "s"'
table release-o3 'opt-level 3'
no_allocator
no_producer_side
crate_split
qemu_report
