# shellcheck shell=bash
# Sourced by the container scripts: the repository, the container engine and its
# flags, the image's tag. Nothing here changes the machine.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
container_dir=$repo/container

say() { echo "container: $*" >&2; }
die() { say "$*"; exit 1; }

# The image's tag: the hash of the package list, so a changed list builds a new
# image and an unchanged one is reused.
image_tag() {
    local hash
    hash=$(grep -v '^\s*#' "$container_dir/packages.txt" | sed '/^\s*$/d' | sha256sum | cut -c1-12)
    echo "localhost/sustain-lab:$hash"
}

# The packages, one a line, without comments.
image_packages() {
    grep -v '^\s*#' "$container_dir/packages.txt" | sed '/^\s*$/d'
}

# Picks the engine: $SUSTAIN_CONTAINER_ENGINE, else podman, else docker with a
# running daemon. Sets `engine` (the command, an array) and `engine_name`; on
# failure returns 1 with the reason in `engine_missing`, and `engine_broken=1` when
# the chosen engine is installed but does not answer (a docker client without a
# daemon, as some machines ship, counts as no engine).
# shellcheck disable=SC2034 # the variables are read by the scripts that source this
pick_engine() {
    engine=() engine_name="" engine_missing="" engine_broken=""
    local wanted=${SUSTAIN_CONTAINER_ENGINE:-}
    case $wanted in
    "" | podman | docker) ;;
    *) engine_missing="SUSTAIN_CONTAINER_ENGINE=$wanted: use podman or docker"; return 1 ;;
    esac
    if [ "$wanted" != docker ] && command -v podman >/dev/null 2>&1; then
        # runc, cgroupfs, no default ulimits: container/containers.conf says why.
        export CONTAINERS_CONF=${CONTAINERS_CONF:-$container_dir/containers.conf}
        engine=(podman) engine_name=podman
        return 0
    fi
    if [ "$wanted" != podman ] && command -v docker >/dev/null 2>&1; then
        if docker info >/dev/null 2>&1; then
            engine=(docker) engine_name=docker
            return 0
        fi
        engine_missing="docker is installed but its daemon does not answer (docker info failed)"
        [ "$wanted" = docker ] && engine_broken=1
        [ -z "$wanted" ] && engine_missing="podman is not installed and $engine_missing"
        return 1
    fi
    if [ -n "$wanted" ]; then
        engine_missing="$wanted is not installed"
    else
        engine_missing="neither podman nor docker is installed (apt-get install podman runc)"
    fi
    return 1
}

# Flags of `run` that this kind of host needs, for either engine: its own empty
# network namespace (the lab's nodes are namespaces inside it, and nothing reaches
# the host's networks); the privileges come from privilege_flags.
run_flags() {
    printf '%s\n' --rm --network=none
}

# The capabilities (as `run --cap-drop` names them) that the kernel has and this
# process's bounding set lacks: a sandbox can withhold some from everything in it,
# a daemon started there included (this project's machine lacks SYS_RESOURCE).
missing_caps() {
    local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID
        SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW
        IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT
        SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
        AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM
        BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
    local bounding last bit
    bounding=$((16#$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)))
    last=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)
    [ "$last" -lt ${#names[@]} ] || last=$((${#names[@]} - 1))
    for bit in $(seq 0 "$last"); do
        if [ $(((bounding >> bit) & 1)) -eq 0 ]; then echo "${names[$bit]}"; fi
    done
}

# Sets `privilege` (an array of `run` flags) for IMAGE: --privileged (the lab makes
# namespaces, veths, netfilter rules, raw and packet sockets and sets /proc/sys).
#
# A privileged docker container gets every capability the kernel knows; a daemon
# older than moby 23 (Debian bookworm's docker.io 20.10) asks for them even when its
# own bounding set lacks some, and runc then refuses to start any privileged
# container ("unable to apply caps: operation not permitted"). There, and only after
# a privileged `true` failed that way, the container gets what --privileged gives
# the lab without those capabilities: every other capability, no seccomp or
# AppArmor profile, an unmasked writable /proc (its sysctls). What it then lacks
# against --privileged: the host's devices and a writable /sys, which the lab does
# not use. Podman gives a privileged container its own bounding set: no such case.
privilege_flags() {
    local tag=$1 err cap
    privilege=(--privileged)
    [ "$engine_name" = docker ] || return 0
    if err=$("${engine[@]}" run --rm --privileged --network=none --label "sustain-lab.pid=$$" \
        "$tag" true 2>&1); then
        return 0
    fi
    if ! grep -q "apply caps" <<<"$err"; then
        # Another failure: the real run reports it.
        return 0
    fi
    privilege=(--cap-add=ALL)
    for cap in $(missing_caps); do privilege+=("--cap-drop=$cap"); done
    privilege+=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined
        --security-opt systempaths=unconfined)
    say "docker cannot start a --privileged container here (its daemon lacks capabilities:" \
        "$(missing_caps | paste -sd' ' -)); using ${privilege[*]}"
}
