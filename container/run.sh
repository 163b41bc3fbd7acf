#!/usr/bin/env bash
# container/run.sh: the lab and the tests inside a privileged container, as CI
# systems run them (own network namespace, the host's kernel, iptables-nft).
#
#   container/run.sh lab [SCENARIO…]   `sustain-lab suite` inside; outputs in target/lab/
#   container/run.sh test              `./justw test` inside, with the host's toolchain
#   container/run.sh smoke [SCENARIO…] what `just test` runs: a few scenarios inside,
#                                      or a SKIPPED line where no engine can run (under
#                                      CI=true an engine that is there but broken fails)
#
# The image (container/image.sh) has only Debian packages; the repository, the
# release binaries and (for `test`) the toolchain are mounted at the same paths as on
# the host, so outputs land in the host's target/ and cargo reuses the host's builds.
# Every container is removed when the script ends, however it ends; one left by a
# killed script is removed by the next run (label sustain-lab.pid).
#
# The engine: podman if installed, else docker with a running daemon;
# SUSTAIN_CONTAINER_ENGINE=podman|docker chooses (container/lib.sh, pick_engine).
# Run on this project's machine: `lab`, `smoke` and `test` with podman 4.3 (runc,
# cgroupfs); `lab` and `smoke` with Debian's docker.io 20.10 daemon, which could not
# start --privileged containers there (privilege_flags in lib.sh); never docker with
# --privileged itself, nor `test` with docker (README, "In a container").
set -euo pipefail
# shellcheck source=container/lib.sh
source "$(dirname "$0")/lib.sh"

# The scenarios `just test` runs in a container: a NAPT router (MASQUERADE), 20 ms
# delay lines (NFQUEUE) and captures (AF_PACKET), a move into the NAPT, the mobility
# server, and the proxy splicing a relayed connection.
SMOKE_SCENARIOS=(sustain-move-into-napt-20ms proxy-both-behind-napt)

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
mode=$1
shift

target_dir=${CARGO_TARGET_DIR:-$repo/target}
case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac
bin_dir=$target_dir/release

# --- the container's life ----------------------------------------------------

name=""
cgroups_before="" cgroups_taken=""
cleanup() {
    if [ -n "$name" ]; then
        # SIGTERM first (the lab tears down), SIGKILL 5 s later; then gone.
        "${engine[@]}" stop -t 5 "$name" >/dev/null 2>&1 || true
        "${engine[@]}" rm -f "$name" >/dev/null 2>&1 || true
    fi
    # podman (cgroupfs) leaves empty `conmon` and `libpod_parent` cgroups behind:
    # remove those this script made (rmdir refuses a cgroup still in use, as for a
    # moment after a container ends while its conmon exits: so up to 5 s of tries).
    [ "$engine_name" = podman ] || return 0
    local dir left
    for _ in $(seq 25); do
        left=0
        for dir in $(podman_cgroups); do
            case " $cgroups_before " in *" $dir "*) continue ;; esac
            rmdir "$dir" 2>/dev/null || left=1
        done
        [ "$left" -eq 0 ] && break
        sleep 0.2
    done
}

# podman's own cgroups (deepest first).
podman_cgroups() {
    local dir
    for dir in /sys/fs/cgroup/*/conmon /sys/fs/cgroup/*/libpod_parent/conmon \
        /sys/fs/cgroup/*/libpod_parent; do
        if [ -d "$dir" ]; then echo "$dir"; fi
    done | sort -r
}

# Whether process PID runs (a zombie, killed but not yet reaped, does not).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    case $state in Z*) return 1 ;; esac
}

# Removes containers whose script is gone (killed before its trap ran); prints
# their ids.
remove_stale() {
    local line id pid
    "${engine[@]}" ps -a --filter label=sustain-lab.pid --format '{{.ID}} {{.Labels}}' 2>/dev/null |
        while read -r line; do
            id=${line%% *}
            pid=$(sed -n 's/.*sustain-lab.pid[:=]\([0-9]*\).*/\1/p' <<<"$line")
            if [ -n "$pid" ] && ! alive "$pid"; then
                "${engine[@]}" rm -f "$id" >/dev/null 2>&1 && say "removed stale container $id" && echo "$id"
            fi
        done || true
}

# Flags this kind of host needs to give the lab's delay lines real-time priority:
# with cgroup v1 and RT_GROUP_SCHED a new cgroup has no real-time budget, so the
# container's cgroup hangs off the root, which has one, and gets most of what the
# root's other cgroups leave: the kernel refuses children whose budgets add up to
# more than the root's, so a second container running at the same time (another
# run, one whose script was killed) gets a share of the rest instead of failing to
# start; with nothing left it runs without (the lab then warns of late releases).
# (cgroupfs only: under the systemd driver a parent is a slice.)
realtime_flags() {
    [ -e /sys/fs/cgroup/cpu/cpu.rt_runtime_us ] || return 0
    if [ "$engine_name" = docker ] &&
        [ "$("${engine[@]}" info --format '{{.CgroupDriver}}' 2>/dev/null)" != cgroupfs ]; then
        return 0
    fi
    local root free file taken
    root=$(cat /sys/fs/cgroup/cpu/cpu.rt_runtime_us)
    [ "$root" -gt 0 ] 2>/dev/null || return 0
    free=$root
    for file in /sys/fs/cgroup/cpu/*/cpu.rt_runtime_us; do
        [ -e "$file" ] || continue
        taken=$(cat "$file" 2>/dev/null) || continue
        if [ "$taken" -gt 0 ] 2>/dev/null; then free=$((free - taken)); fi
    done
    # Below 1% of the period a budget would only throttle the delay lines.
    if [ $((free * 9 / 10)) -lt $(($(cat /sys/fs/cgroup/cpu/cpu.rt_period_us) / 100)) ]; then
        say "no real-time budget left in the root cgroup (other containers hold it)"
        return 0
    fi
    echo "--cgroup-parent=/"
    echo "--cpu-rt-runtime=$((free * 9 / 10))"
}

# run_container IMAGE [ENGINE FLAGS…] -- COMMAND…
run_container() {
    local tag=$1
    shift
    local flags=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    name=sustain-lab-$$-$RANDOM
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    local stale
    stale=$(remove_stale)
    # podman's cgroups that existed before this script's first container are left
    # alone, unless they were those of containers of killed scripts just removed.
    if [ -z "$cgroups_taken" ] && [ -z "$stale" ]; then
        cgroups_before=$(podman_cgroups | tr "\n" " ")
    fi
    cgroups_taken=1
    if [ -z "${privilege_chosen:-}" ]; then
        privilege_flags "$tag"
        privilege_chosen=1
    fi
    local common
    mapfile -t common < <(run_flags; realtime_flags)
    common+=("${privilege[@]}")
    # In the background with `wait`, so that a signal to this script runs its trap
    # at once (bash defers traps while a foreground child runs): the trap removes
    # the container, whose lab tears down on SIGTERM.
    local status=0 child
    "${engine[@]}" run "${common[@]}" --name "$name" --label "sustain-lab.pid=$$" \
        -e CI -e RUST_BACKTRACE -e SUSTAIN_LAB_KEEP_LOGS \
        -v "$repo:$repo:${repo_mode:-ro}" -w "$repo" \
        "${flags[@]}" "$tag" "$@" </dev/null &
    child=$!
    wait "$child" || status=$?
    return "$status"
}

ensure_root() {
    [ "$(id -u)" -eq 0 ] || die "a privileged container needs root: run this with sudo"
}

# --- lab ----------------------------------------------------------------------

lab() {
    ensure_root
    pick_engine || die "$engine_missing"
    [ -x "$bin_dir/sustain-lab" ] || die "no $bin_dir/sustain-lab: cargo build --release -p sustain -p sustain-lab"
    local tag out
    tag=$("$container_dir/image.sh")
    out=$target_dir/lab
    mkdir -p "$out"
    say "running sustain-lab suite ${*:-(every scenario)} in $engine_name ($tag); outputs in $out"
    local mounts=(-v "$out:$out")
    case $bin_dir/ in "$repo"/*) ;; *) mounts+=(-v "$bin_dir:$bin_dir:ro") ;; esac
    run_container "$tag" "${mounts[@]}" -e "SUSTAIN_BIN_DIR=$bin_dir" -- \
        "$bin_dir/sustain-lab" suite --out "$out" "$@"
}

# --- test ---------------------------------------------------------------------

# The `just` program itself (a pyenv or pip shim is a script that needs its
# interpreter, which the image does not have).
just_binary() {
    local candidate
    for candidate in "$(command -v just 2>/dev/null)" "$(pyenv which just 2>/dev/null)" \
        "${CARGO_HOME:-$HOME/.cargo}/bin/just"; do
        if [ -z "$candidate" ] || [ ! -f "$candidate" ]; then continue; fi
        candidate=$(readlink -f "$candidate")
        if [ "$(head -c 4 "$candidate" | tr -d '\0' | cut -c2-4)" = ELF ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

test_inside() {
    ensure_root
    pick_engine || die "$engine_missing"
    local rustup_home=${RUSTUP_HOME:-$HOME/.rustup} cargo_home=${CARGO_HOME:-$HOME/.cargo} just
    if [ ! -d "$rustup_home" ] || [ ! -d "$cargo_home" ]; then
        die "no Rust toolchain in $rustup_home and $cargo_home to mount"
    fi
    just=$(just_binary) || die "no just program to mount (./justw installs it)"
    # The container has no network: every crate must be in the host's cache first.
    (cd "$repo" && cargo fetch --locked -q)
    local tag
    tag=$("$container_dir/image.sh")
    local mounts=(
        -v "$rustup_home:$rustup_home:ro" -v "$cargo_home:$cargo_home"
        -v "$just:/usr/local/bin/just:ro"
        -e "RUSTUP_HOME=$rustup_home" -e "CARGO_HOME=$cargo_home" -e CARGO_NET_OFFLINE=true
        -e "PATH=$cargo_home/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    case $target_dir/ in
    "$repo"/*) ;;
    *) mounts+=(-v "$target_dir:$target_dir" -e "CARGO_TARGET_DIR=$target_dir") ;;
    esac
    say "running ./justw test in $engine_name ($tag)"
    repo_mode=rw run_container "$tag" "${mounts[@]}" -- ./justw test
}

# --- smoke (part of `just test`) ----------------------------------------------

skip() {
    echo "container smoke: SKIPPED: $*"
    # Counted by `just test` with the tests that skipped themselves.
    if [ -n "${SUSTAIN_SKIP_LOG:-}" ]; then
        echo "container smoke: $*" >>"$SUSTAIN_SKIP_LOG" || true
    fi
    exit 0
}

# Where an engine is there but does not work: under CI that is a failure.
broken() {
    if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
        echo "container smoke: FAILED: $* (CI is set, so this is not skipped)" >&2
        exit 1
    fi
    skip "$*"
}

smoke() {
    [ "$(id -u)" -eq 0 ] || skip "not root (a privileged container needs root)"
    if ! pick_engine; then
        [ -n "$engine_broken" ] && broken "$engine_missing"
        skip "$engine_missing"
    fi
    if ! "${engine[@]}" info >/dev/null 2>&1; then
        broken "$engine_name info fails: $("${engine[@]}" info 2>&1 | tail -1)"
    fi
    # `just test` passes the sustain-lab that `cargo test` built (test profile,
    # optimised) instead of building a release one for this.
    local lab_bin=${SUSTAIN_LAB_BIN:-$bin_dir/sustain-lab}
    [ -x "$lab_bin" ] || die "no $lab_bin: cargo build --release -p sustain -p sustain-lab"
    [ -x "$bin_dir/sustain-host" ] || die "no $bin_dir/sustain-host: cargo build --release -p sustain"
    local tag status=0
    tag=$("$container_dir/image.sh") || broken "the image could not be built with $engine_name"
    # A trivial run first: an engine that cannot start a privileged container is
    # broken, not a failing scenario.
    if ! run_container "$tag" -- true; then
        broken "$engine_name cannot run a privileged container from $tag"
    fi
    # A kernel without a feature the lab needs: AF_PACKET refused by seccomp (podman
    # honours a profile given with --privileged; docker ignores it there, and honours
    # it, the last seccomp option, where it runs without --privileged). The lab must
    # stop at once, exit 2 and name the feature and its module.
    if [ "$engine_name" = podman ] || [ "${privilege[0]}" != --privileged ]; then
        local refused
        refused=$(run_container "$tag" --security-opt "seccomp=$container_dir/no-af-packet.json" \
            -v "$lab_bin:/usr/local/bin/sustain-lab:ro" -- \
            sustain-lab run --quiet --out /tmp/refused sustain-move 2>&1) && status=0 || status=$?
        if [ "$status" -ne 2 ] || ! grep -q "AF_PACKET (module af_packet)" <<<"$refused"; then
            echo "$refused" | tail -5 >&2
            echo "container smoke: FAILED: without AF_PACKET the lab did not stop naming it (exit $status)" >&2
            exit 1
        fi
        echo "container smoke: without AF_PACKET the lab stops naming it and its module: ok"
    fi
    local names=("$@")
    [ ${#names[@]} -gt 0 ] || names=("${SMOKE_SCENARIOS[@]}")
    local out=$target_dir/container-smoke start
    rm -rf "$out"
    mkdir -p "$out"
    start=$(date +%s)
    local mounts=(-v "$out:$out") dir
    for dir in "$bin_dir" "$(dirname "$lab_bin")"; do
        case $dir/ in "$repo"/*) ;; *) mounts+=(-v "$dir:$dir:ro") ;; esac
    done
    # One rerun when an expectation failed (exit 1), as the conformance suite allows
    # every scenario (conformance/tests/scenarios.rs, ATTEMPTS): a VM that stalls
    # for a moment can push a reconnect past its budget. The first attempt's table
    # is printed either way; a lab that could not run (exit 2) is not rerun.
    local attempt
    for attempt in 1 2; do
        status=0
        run_container "$tag" "${mounts[@]}" -e "SUSTAIN_BIN_DIR=$bin_dir" -- \
            "$lab_bin" suite --quiet --out "$out" "${names[@]}" >"$out/suite.log" 2>&1 || status=$?
        # The suite's table: its header and one row per scenario.
        sed -n '/^scenario  /,$p' "$out/suite.log"
        if [ "$status" -ne 1 ] || [ "$attempt" -eq 2 ]; then
            break
        fi
        grep '^  failed' "$out/suite.log" >&2 || true
        echo "container smoke: attempt 1 of 2 failed (above); running the scenarios again" >&2
        cp "$out/suite.log" "$out/suite-attempt1.log"
    done
    if [ "$status" -ne 0 ]; then
        tail -20 "$out/suite.log" >&2
        echo "container smoke: FAILED: ${names[*]} in $engine_name (exit $status; $out/suite.log)" >&2
        exit 1
    fi
    # The captures (hundreds of MB) are kept only when something failed.
    find "$out" -name '*.pcap' -delete
    echo "container smoke: PASS: ${#names[@]} scenarios in a privileged $engine_name container ($(( $(date +%s) - start )) s)"
}

case $mode in
lab) lab "$@" ;;
test) test_inside "$@" ;;
smoke) smoke "$@" ;;
*) usage ;;
esac
