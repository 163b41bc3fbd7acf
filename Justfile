# sustain: TCP that survives address changes, and the namespace lab that proves it.
# Recipes that need root (namespaces, raw sockets) use sudo only when not root.

set shell := ["bash", "-euo", "pipefail", "-c"]

sudo := if `id -u` == "0" { "" } else { "sudo -E" }

# List the recipes.
default:
    @just --list

# Every test: format, lints, unit, simulator and real-kernel namespace tests, then
# a few lab scenarios in a privileged container (container/run.sh smoke; SKIPPED
# where no container engine can run, FAILED under CI where one is there but broken),
# then every fuzz target for 15 s (`just fuzz-check`; about 2 minutes with its build).
# The lab's scenarios run the release binaries (SUSTAIN_BIN_DIR), as `just lab`
# does: their reconnect budgets are the protocol's limit + 5 ms, and a debug
# build's per-packet cost (HMACs, the proxy's splice) is not the protocol's.
# The tests run through cargo-insta (--check: a differing snapshot fails the test
# and nothing is written; --unreferenced=reject: a snapshot no test produced fails
# the run). clippy's --locked has already refused a stale Cargo.lock.
test:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo build --release --locked -p sustain
    rm -f "${CARGO_TARGET_DIR:-target}/skipped.log"
    {{sudo}} env "PATH=$PATH" "SUSTAIN_BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/release" "SUSTAIN_SKIP_LOG=${CARGO_TARGET_DIR:-$PWD/target}/skipped.log" cargo insta test --workspace --check --unreferenced=reject --test-runner cargo-test --no-quiet 2>&1 | tee "${CARGO_TARGET_DIR:-target}/test.log"
    {{sudo}} env "PATH=$PATH" "SUSTAIN_LAB_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/sustain-lab" "SUSTAIN_SKIP_LOG=${CARGO_TARGET_DIR:-$PWD/target}/skipped.log" container/run.sh smoke 2>&1 | tee -a "${CARGO_TARGET_DIR:-target}/test.log"
    {{just_executable()}} fuzz-check 15
    @# cargo counts a test that skipped itself (no root, a tool missing; a failure
    @# under CI) as passed: those are in skipped.log, one line each.
    @awk -v s="$(cat "${CARGO_TARGET_DIR:-target}/skipped.log" 2>/dev/null | wc -l)" '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "total: %d passed, %d failed, %d skipped, %d ignored (#[ignore]: figures and helper processes)\n", p - s, f, s, i }' "${CARGO_TARGET_DIR:-target}/test.log"

# NAPTs, moves mid-transfer, pcaps, timelines and report.json per scenario in
# target/lab/<name>/; `just lab sustain-move` runs just one.
# The main job: run the reference scenarios in namespaces and print a table.
lab *NAMES:
    cargo build --release --locked -p sustain -p sustain-lab
    {{sudo}} ./target/release/sustain-lab suite --out target/lab {{NAMES}}

# `sustain-lab suite` in its own network namespace on an image of Debian packages
# only (container/: made with debootstrap, or the Containerfile), with the release
# binaries, scenarios and golden captures mounted. Podman if installed, else docker
# (SUSTAIN_CONTAINER_ENGINE=docker or podman chooses).
# The lab in a privileged container, as CI runs it; outputs come back to target/lab/.
container-lab *NAMES:
    cargo build --release --locked -p sustain -p sustain-lab
    {{sudo}} env "PATH=$PATH" container/run.sh lab {{NAMES}}

# The container has no network: the host's Rust toolchain, cargo cache and `just`
# are mounted.
# `./justw test` inside a privileged container.
container-test:
    {{sudo}} env "PATH=$PATH" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" container/run.sh test

# Re-record the conformance snapshots and golden captures (pcaps/<scenario>/) from
# one run of each scenario, on purpose: review `git diff` afterwards. `just bless
# sustain-move` re-records one scenario. A run of every scenario also deletes the
# snapshots none of them produced (cargo-insta's --unreferenced=delete).
bless *NAMES:
    cargo build --release --locked -p sustain
    {{sudo}} env "PATH=$PATH" "SUSTAIN_BIN_DIR=$PWD/target/release" SUSTAIN_BLESS=1 \
        {{ if NAMES == "" { "" } else { "'INSTA_GLOB_FILTER=" + replace(NAMES, " ", ".toml;") + ".toml'" } }} \
        cargo insta test --accept --unreferenced={{ if NAMES == "" { "delete" } else { "ignore" } }} --test-runner cargo-test --no-quiet \
        -p sustain-conformance --test scenarios -- --nocapture

# sustain-host against Linux's own TCP on a plain A - R - B path: [MiB] [loss-percent]
demo *ARGS:
    cargo build --release --locked -p sustain -p sustain-lab
    {{sudo}} env "PATH=$PATH" cargo run --release --locked -p sustain --example interop_demo -- {{ARGS}}

# Throughput of sustain-host vs Linux TCP over the same veth path; forward's
# throughput, added latency and 100 concurrent connections; goodput of each
# congestion controller vs Linux CUBIC and BBR under loss, delay and a rate
# limit (about 16 minutes; SUSTAIN_BENCH_CELLS=loss3-delay20 runs a part); the
# moves table (reconnect latency of sustain, Linux MPTCP and an application
# that reconnects, p50/p99 over SUSTAIN_BENCH_MOVES moves, about 4 minutes);
# relayed vs direct throughput through sustain-proxy (about 1 minute).
# The benches run the default datapath (GSO transmit; SUSTAIN_GSO=off for the
# raw socket alone, README "Datapath").
bench:
    cargo build --release --locked -p sustain -p sustain-lab
    {{sudo}} env "PATH=$PATH" cargo bench --locked -p sustain --bench throughput
    {{sudo}} env "PATH=$PATH" cargo bench --locked -p sustain --bench forward
    {{sudo}} env "PATH=$PATH" cargo bench --locked -p sustain --bench goodput
    {{sudo}} env "PATH=$PATH" cargo bench --locked -p sustain --bench moves
    {{sudo}} env "PATH=$PATH" cargo bench --locked -p sustain --bench relay

# Fuzz every target for SECONDS each (cargo fuzz, nightly toolchain): the wire
# parsers, a live endpoint under fuzzed segments and moves, both control
# protocols and the capture normalizer. Starts from fuzz/seeds/<target>; a crash
# stops with its input in fuzz/artifacts/<target>/. Builds in target/fuzz (the
# instrumented build never touches the workspace's), without AddressSanitizer
# (`-s none`): the core and the normalizer forbid unsafe code, so ASan would only
# halve the executions and lengthen the build.
fuzz SECONDS="60":
    cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    cd fuzz && for t in wire endpoint control normalizer; do \
        mkdir -p corpus/$t && \
        cargo +nightly fuzz run -O -s none --target-dir "${CARGO_TARGET_DIR:-$PWD/../target}/fuzz" $t corpus/$t seeds/$t -- -max_total_time={{SECONDS}} -print_final_stats=1 2>&1 \
            | grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)' ; \
        test "${PIPESTATUS[0]}" = 0 || exit 1; \
    done

# `just test`'s fuzzing: every target for SECONDS from its checked-in seeds (new
# inputs go to target/fuzz/corpus, never into the repository), failing on a crash
# (input in fuzz/artifacts/<target>/, libFuzzer's report printed). Without a nightly
# toolchain and cargo-fuzz: SKIPPED, or FAILED under CI.
fuzz-check SECONDS="20":
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        why="cargo-fuzz on a nightly toolchain is missing (rustup toolchain install nightly; cargo install cargo-fuzz --locked)"
        if [ -n "${CI:-}" ] && [ "${CI}" != "false" ]; then
            echo "FAILED fuzz: $why; CI must fuzz" >&2
            exit 1
        fi
        echo "SKIPPED fuzz: $why"
        exit 0
    fi
    target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
    targets="wire endpoint control normalizer"
    start=$(date +%s)
    mkdir -p "$target_dir"
    cd fuzz
    if ! cargo +nightly fuzz build -O -s none --target-dir "$target_dir" >"$target_dir/build.log" 2>&1; then
        tail -n 60 "$target_dir/build.log" >&2
        echo "FAILED fuzz: building the targets (log $target_dir/build.log)" >&2
        exit 1
    fi
    built=$(($(date +%s) - start))
    for t in $targets; do
        corpus="$target_dir/corpus/$t"
        log="$target_dir/$t.log"
        mkdir -p "$corpus"
        if cargo +nightly fuzz run -O -s none --target-dir "$target_dir" "$t" "$corpus" "seeds/$t" --             -max_total_time={{SECONDS}} -print_final_stats=1 >"$log" 2>&1; then
            execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
            echo "fuzz $t: ${execs:-?} executions in {{SECONDS}} s, no crash"
        else
            tail -n 60 "$log" >&2
            echo "FAILED fuzz $t: a crash (input in fuzz/artifacts/$t/; log $log)" >&2
            exit 1
        fi
    done
    echo "fuzz: $(echo $targets | wc -w) targets, {{SECONDS}} s each, built in ${built} s, $(($(date +%s) - start)) s in all"

# Install the Wireshark dissector (sustain's options, the control protocol) into
# the personal plugin folder; restart Wireshark to load it.
wireshark:
    mkdir -p "$HOME/.local/lib/wireshark/plugins"
    cp wireshark/sustain.lua "$HOME/.local/lib/wireshark/plugins/sustain.lua"
    @echo "installed $HOME/.local/lib/wireshark/plugins/sustain.lua (Wireshark: Help > About > Plugins; tshark loads it too)"

# Remove namespaces (and what is in them) left behind by a killed lab run.
clean:
    cargo build --release --locked -p sustain-lab
    {{sudo}} ./target/release/sustain-lab clean
