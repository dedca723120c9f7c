#!/usr/bin/env bash
# Install the Debian 12 packages feedguard needs to build, test, demo,
# benchmark and package (systemd-analyze checks the unit, promtool the
# metrics, debhelper and lintian the .deb), skipping those already present.  Uses sudo when not root.
# Usage: contrib/install-deps.sh
set -euo pipefail

packages=(
	build-essential autoconf automake libtool pkg-config
	libevent-dev libnghttp2-dev libyaml-dev zlib1g-dev libssl-dev
	libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler
	libhiredis-dev libcmocka-dev libisal-dev libjemalloc-dev
	redis-server python3-grpcio python3-h2 python3-pytest python3-yaml python3-protobuf python3-matplotlib
	nghttp2-client nghttp2-proxy valgrind clang tzdata
	systemd prometheus debhelper dpkg-dev fakeroot lintian groff-base man-db
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs the @grpc/grpc-js interop client.  A machine may already
# carry a Node.js with its own npm (not Debian's); only install Debian's
# when there is none, since the two conflict.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	missing+=(nodejs npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
