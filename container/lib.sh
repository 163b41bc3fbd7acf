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

# Flags of `run` that this kind of host needs, for either engine: privileged (the
# lab makes namespaces, veths, netfilter rules, raw and packet sockets) and its own
# empty network namespace (the lab's nodes are namespaces inside it, and nothing
# reaches the host's networks).
run_flags() {
    printf '%s\n' --rm --privileged --network=none
}
