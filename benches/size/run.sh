#!/usr/bin/env bash
# Flash and RAM that awaitmap costs a Cortex-M4F firmware, next to
# maitake-sync's WaitMap doing the same job. Builds the four images
# (bare, baseline, awaitmap, maitake) at opt-level "s" and 3 and prints their
# section sizes and the differences from `baseline`, where the awaitmap
# image's extra flash goes, the size of each static map, then runs the
# `report` builds under QEMU for the heap the map uses at run time.
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
IMAGES=(bare baseline awaitmap maitake)

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

# The size table for one cargo profile.
table() {
    local profile=$1 label=$2 dir=target/$TARGET/$1
    cargo build --profile "$profile" --bins --quiet
    echo "== $label (profile $profile): bytes; flash = text + data, static RAM = data + bss"
    local base
    base=$(sizes "$dir/fw-baseline")
    # Each Δ is two bytes in UTF-8, so its column is one wider in printf.
    printf '%-9s %7s %5s %6s | %8s %7s %7s | %8s %8s\n' \
        image text data bss Δtext Δdata Δbss Δflash ΔRAM
    local img row rows=""
    for img in "${IMAGES[@]}"; do
        row=$(sizes "$dir/fw-$img")
        rows+="$img $row $base"$'\n'
    done
    printf '%s' "$rows" | awk '{ printf "%-9s %7d %5d %6d | %+7d %+6d %+6d | %+7d %+7d\n",
        $1, $2, $3, $4, $2 - $5, $3 - $6, $4 - $7,
        ($2 + $3) - ($5 + $6), ($3 + $4) - ($6 + $7) }'
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
    local dir=target/$TARGET/release
    echo "== where awaitmap's extra flash goes (opt-level \"s\"; code and rodata by crate, awaitmap image minus baseline)"
    join -t $'\t' -a 1 -a 2 -e 0 -o 0,1.2,2.2 \
        <(by_crate awaitmap | sort) <(by_crate baseline | sort) |
        awk -F'\t' '$2 != $3 { printf "%-30s %+7d\n", $1, $2 - $3 }' | sort -t$'\t' -k1,1
    echo
    echo "== static maps (symbol sizes, opt-level \"s\"; the size_of each map type on this target)"
    for img in awaitmap maitake; do
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
        echo "== heap at run time: skipped (qemu-system-arm not found; Debian: apt-get install qemu-system-arm)"
        return
    fi
    echo "== heap at run time and type sizes: the report builds under QEMU (mps2-an386, a Cortex-M4F)"
    cargo build --profile qemu-report --features report --bins --quiet
    local img
    for img in baseline awaitmap maitake; do
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
crate_split
qemu_report
