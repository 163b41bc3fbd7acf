#!/usr/bin/env bash
# container/image.sh: makes sure the lab's image exists and prints its tag.
#
# The image holds what the lab and the tests need at run time (container/packages.txt)
# and nothing of the project: binaries, scenarios and the toolchain are mounted.
# It is tagged with a hash of the package list and reused while the list is unchanged.
#
# How it is built ($SUSTAIN_IMAGE_FROM):
#   debootstrap    (default where debootstrap is installed and we are root) a minbase
#                  Debian bookworm with the packages, from the host's Debian mirror,
#                  imported as an image: no image registry is needed.
#   containerfile  `build` of container/Containerfile (FROM debian:bookworm), for
#                  hosts that can pull images.
set -euo pipefail
# shellcheck source=container/lib.sh
source "$(dirname "$0")/lib.sh"

pick_engine || die "$engine_missing"
tag=$(image_tag)

if "${engine[@]}" image inspect "$tag" >/dev/null 2>&1; then
    say "reusing image $tag"
    echo "$tag"
    exit 0
fi

from=${SUSTAIN_IMAGE_FROM:-}
if [ -z "$from" ]; then
    if command -v debootstrap >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        from=debootstrap
    else
        from=containerfile
    fi
fi

# The host's Debian mirror (the first deb line for bookworm), else deb.debian.org.
debian_mirror() {
    if [ -n "${SUSTAIN_DEBIAN_MIRROR:-}" ]; then echo "$SUSTAIN_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^deb / && $3 ~ /^bookworm$/ { print $2; exit } /^URIs:/ && $2 !~ /security/ { print $2; exit }')
    echo "${uri:-http://deb.debian.org/debian}"
}

rootfs=""
cleanup() {
    [ -n "$rootfs" ] && [ -d "$rootfs" ] || return 0
    # debootstrap mounts /proc and /sys inside the tree: unmount before removing.
    local mounts
    mounts=$(findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r || true)
    for mnt in $mounts; do
        umount -l "$mnt" || say "could not unmount $mnt"
    done
    if mountpoint -q "$rootfs"; then
        umount -l "$rootfs" || say "could not unmount $rootfs"
    fi
    rm -rf --one-file-system "$rootfs" "$rootfs.log"
}

start=$(date +%s)
case $from in
debootstrap)
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
    mirror=$(debian_mirror)
    rootfs=$(mktemp -d /var/tmp/sustain-rootfs.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    # In memory where it can be (about 600 MB): faster to write, and gone with one
    # unmount instead of a long rm.
    mount -t tmpfs -o size=2g,mode=0755 sustain-rootfs "$rootfs" 2>/dev/null ||
        say "no tmpfs for the tree; building it in $rootfs on disk"
    say "building $tag with debootstrap from $mirror (a few minutes)"
    debootstrap --variant=minbase --include="$(image_packages | paste -sd, -)" \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
        tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    if ! tar -C "$rootfs" --numeric-owner -c . |
        "${engine[@]}" import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null; then
        "${engine[@]}" rmi "$tag" >/dev/null 2>&1 || true
        die "importing the tree as $tag failed"
    fi
    ;;
containerfile)
    say "building $tag from container/Containerfile"
    "${engine[@]}" build -t "$tag" -f "$container_dir/Containerfile" "$container_dir" >&2
    ;;
*)
    die "SUSTAIN_IMAGE_FROM=$from: use debootstrap or containerfile"
    ;;
esac
say "built $tag in $(( $(date +%s) - start )) s ($from)"

# Older images of the lab (other package lists) only take disk space.
"${engine[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep -E '(^|/)sustain-lab:' |
    grep -vxF "$tag" | while read -r old; do
        "${engine[@]}" rmi "$old" >/dev/null 2>&1 && say "removed old image $old"
    done || true
echo "$tag"
