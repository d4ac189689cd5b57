#!/usr/bin/env bash
# Installs what Airlock needs on Debian bookworm, idempotently. Run as root.
set -euo pipefail

packages=(bubblewrap runc crun mmdebstrap nftables iproute2 util-linux libseccomp2 e2fsprogs procps ca-certificates clang zlib1g-dev python3 curl qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static tini kmod)
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# microVMs attach to a tap device; make sure the tun driver is there.
[ -e /dev/net/tun ] || modprobe tun 2>/dev/null || true

if ! command -v dotnet >/dev/null 2>&1; then
  echo "error: the .NET 10 SDK (dotnet) is required and is not on PATH" >&2
  exit 1
fi
