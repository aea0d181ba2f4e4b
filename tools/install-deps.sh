#!/usr/bin/env bash
# Installs the Debian packages that derrd's build and tests need.
#   tools/install-deps.sh               install (apt-get, as root or via sudo)
#   tools/install-deps.sh --if-missing  do nothing when every header is there
set -euo pipefail

# systemd: for systemd-analyze (tests/systemd.sh checks the unit offline);
# in a container it installs without becoming init (that is systemd-sysv).
packages=(build-essential pkg-config curl libopenblas-dev libzstd-dev librdkafka-dev
          libuv1-dev libjansson-dev libmicrohttpd-dev systemd)
# header -> package, for the quick check
headers=(/usr/include/x86_64-linux-gnu/cblas.h /usr/include/zstd.h
         /usr/include/librdkafka/rdkafka.h /usr/include/uv.h /usr/include/jansson.h
         /usr/include/microhttpd.h)

missing() {
    for h in "${headers[@]}"; do
        # cblas.h moves between multiarch dirs; accept it anywhere in /usr/include
        case "$h" in
        */cblas.h) compgen -G "/usr/include/*/cblas.h" >/dev/null ||
                   [ -e /usr/include/cblas.h ] || return 0 ;;
        *) [ -e "$h" ] || return 0 ;;
        esac
    done
    command -v cc >/dev/null || return 0
    command -v curl >/dev/null || return 0
    command -v systemd-analyze >/dev/null || return 0
    return 1
}

if [ "${1:-}" = "--if-missing" ] && ! missing; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo for apt-get" >&2; exit 1; }
    SUDO=sudo
fi
echo "install-deps: installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-upgrade: what is installed stays as it is (on a host booted with
# systemd, upgrading systemd would re-execute the running manager).
$SUDO apt-get install -y -qq --no-install-recommends --no-upgrade "${packages[@]}" >/dev/null
