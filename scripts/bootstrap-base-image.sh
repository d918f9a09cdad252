#!/usr/bin/env bash
# Builds scriptbox's base image where the engine can pull nothing from a
# registry: a minimal Debian root filesystem with python3, made by
# debootstrap and imported into the engine as `scriptbox/python:3.11` —
# the image `images/python/Dockerfile` makes from a registry base.
#
#   scripts/bootstrap-base-image.sh [--force]
#
# Idempotent: an existing image with the same recipe digest is kept. The
# Debian mirror is the one this machine's apt uses (DEBIAN_MIRROR overrides
# it). Needs root (debootstrap and chroot) and a running engine
# (scripts/docker-up).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${SCRIPTBOX_BASE_IMAGE:-scriptbox/python:3.11}
suite=bookworm   # its python3 is 3.11, the policies' target
uid=10001        # the unprivileged user scripts run as (images/python/Dockerfile)
recipe=$(sha256sum "$0" | cut -c1-16)

if [ "${1:-}" != "--force" ] && \
   [ "$(docker image inspect --format '{{index .Config.Labels "io.scriptbox.recipe"}}' "$tag" 2>/dev/null)" = "$recipe" ]; then
    echo "bootstrap-base-image: $tag is up to date (recipe $recipe)"
    exit 0
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "bootstrap-base-image: installing debootstrap"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The first non-security Debian archive this machine's apt is configured with.
apt_mirror() {
    { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
      grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null || true; } |
        awk '{print $2}' | grep -v -- '-security' | head -n1 || true
}
mirror=${DEBIAN_MIRROR:-$(apt_mirror)}

root=$(mktemp -d /var/tmp/scriptbox-rootfs.XXXXXX)
trap 'as_root rm -rf "$root"' EXIT
echo "bootstrap-base-image: debootstrap $suite into $root"
as_root debootstrap --variant=minbase --include=python3 "$suite" "$root" ${mirror:+"$mirror"} \
    >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"

# The unprivileged user, written directly (minbase has no useradd guarantee).
echo "sandbox:x:$uid:$uid:scriptbox sandbox:/nonexistent:/usr/sbin/nologin" | as_root tee -a "$root/etc/passwd" >/dev/null
echo "sandbox:x:$uid:" | as_root tee -a "$root/etc/group" >/dev/null
# Only what running Python needs: no package caches, documentation or locales.
as_root rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale
as_root mkdir -p "$root/opt/scriptbox"

python_version=$(as_root chroot "$root" python3 -c 'import platform; print(platform.python_version())')
glibc=$(as_root chroot "$root" python3 -c 'import platform; print(platform.libc_ver()[1])')
site=$(as_root chroot "$root" python3 -c 'import site; print(site.getsitepackages()[0])')
echo "bootstrap-base-image: python $python_version, glibc $glibc, site-packages $site"

as_root tar -C "$root" --numeric-owner -c . | docker import \
    --change "LABEL io.scriptbox.image=python" \
    --change "LABEL io.scriptbox.recipe=$recipe" \
    --change "LABEL io.scriptbox.python=$python_version" \
    --change "LABEL io.scriptbox.glibc=$glibc" \
    --change "LABEL io.scriptbox.site-packages=$site" \
    --change "USER $uid:$uid" \
    --change "WORKDIR /tmp" \
    --change "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1" \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "bootstrap-base-image: $tag $(docker image inspect --format '{{.Id}} {{.Size}}' "$tag")"
