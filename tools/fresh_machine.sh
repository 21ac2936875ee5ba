#!/usr/bin/env bash
# Try the README's promise on a fresh Debian 12: a minbase chroot with only python3 and make, a
# clean copy of HEAD, then `make demo` (and, with --test, `make test`) as root. Needs root and
# debootstrap (apt-get install debootstrap). The host's package-manager settings (apt sources,
# pip.conf, the CA bundle, ~/.npmrc) are carried in, so mirrors and proxies work as on the host.
# Mounts live in a private mount namespace: they vanish with the script. ~1 min to build the
# chroot, ~1 min for make demo, ~2 more for make test.
#   tools/fresh_machine.sh [--test] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(demo) keep=""
while [ $# -gt 0 ]; do
  case $1 in
    --test) targets=(demo test) ;;
    --keep) keep=$2; shift ;;
    *) echo "usage: $0 [--test] [--keep DIR]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (chroot, mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "apt-get install debootstrap" >&2; exit 2; }

root=${keep:-$(mktemp -d /var/tmp/godwit-fresh.XXXXXX)}
[ -n "$keep" ] || trap 'rm -rf --one-file-system "$root"' EXIT
chmod 755 "$root"  # mktemp's 0700 would be the chroot's /: other users could not reach /usr
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -x "$root/usr/bin/apt-get" ] || debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null

# The host's settings for apt, pip and npm (mirrors, CA bundle), never the project's own files.
for f in /etc/apt/sources.list.d/debian.sources /etc/resolv.conf /etc/pip.conf /root/.npmrc; do
  [ -e "$f" ] && mkdir -p "$root$(dirname "$f")" && cp -L "$f" "$root$f"
done
# Apart from Debian's bundle, which installing ca-certificates in the chroot rewrites.
ca=/etc/ssl/certs/ca-certificates.crt
cp -L "$ca" "$root/root/host-ca.crt"
[ -d /etc/xdg/pip ] && mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/"
[ -e "$root/etc/apt/sources.list.d/debian.sources" ] && rm -f "$root/etc/apt/sources.list"
rm -rf "$root/root/godwit" && mkdir -p "$root/root/godwit"
git archive HEAD | tar -x -C "$root/root/godwit"

binds=()
for d in /opt/pypi /opt/pypi-more /opt/wheels; do [ -d "$d" ] && binds+=("$d"); done
unshare -m --propagation private bash -euo pipefail -c '
  root=$1; shift; targets=$1; shift
  mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount -t tmpfs tmpfs "$root/tmp"
  for d in "$@"; do mkdir -p "$root$d"; mount --bind -o ro "$d" "$root$d"; done
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    PIP_CERT=/root/host-ca.crt NODE_EXTRA_CA_CERTS=/root/host-ca.crt npm_config_cafile=/root/host-ca.crt \
    SSL_CERT_FILE=/root/host-ca.crt DEBIAN_FRONTEND=noninteractive /bin/bash -euc "
      apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 make >/dev/null
      cd /root/godwit
      for t in $targets; do echo \"::: make \$t\"; make \$t; done
      .venv/bin/godwit doctor"
' _ "$root" "${targets[*]}" "${binds[@]}"
echo "::: fresh machine: make ${targets[*]} passed"
