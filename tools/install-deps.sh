#!/usr/bin/env bash
# Installs the Debian packages that derrd's build and tests need.
#   tools/install-deps.sh               install (apt-get, as root or via sudo)
#   tools/install-deps.sh --if-missing  do nothing when every header is there
#   tools/install-deps.sh --if-missing-tests  the same, counting what the tests
#                                       need too (chromium, python3, Java,
#                                       Maven, promtool)
#   tools/install-deps.sh --if-missing-fuzz   the same, counting what make fuzz
#                                       needs too (clang, libFuzzer)
set -euo pipefail

# systemd: for systemd-analyze (tests/systemd.sh checks the unit offline);
# in a container it installs without becoming init (that is systemd-sysv).
packages=(build-essential pkg-config curl libopenblas-dev libzstd-dev librdkafka-dev
          libuv1-dev libjansson-dev libmicrohttpd-dev systemd)
# The tests: chromium loads the status page (tests/service.sh), python3 runs
# small test helpers (a notify socket, JSON checks), Java 17 runs the Kafka
# broker whose jars Maven fetches (tests/kafka/broker.sh).
packages+=(chromium python3 openjdk-17-jre-headless maven)
# make fuzz (tests/fuzz/): clang, and libFuzzer's runtime for it
# (libclang_rt.fuzzer-x86_64.a), which Debian 12 ships in libclang-rt-14-dev.
packages+=(clang libclang-rt-14-dev)
# promtool (`promtool check metrics` in tests/service.sh) is taken out of
# Debian's prometheus package into build/tools/ without installing the
# package, which would start a Prometheus server on a host booted with systemd.
tools_dir="$(cd "$(dirname "$0")/.." && pwd)/build/tools"
promtool="$tools_dir/promtool"
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
missing_tests() {
    missing && return 0
    command -v chromium >/dev/null || return 0
    command -v python3 >/dev/null || return 0
    command -v java >/dev/null || return 0
    command -v mvn >/dev/null || return 0
    [ -x "$promtool" ] || return 0
    return 1
}

missing_fuzz() {
    missing && return 0
    command -v clang >/dev/null || return 0
    [ -e "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)" ] || return 0
    return 1
}

if [ "${1:-}" = "--if-missing" ] && ! missing; then
    exit 0
fi
if [ "${1:-}" = "--if-missing-tests" ] && ! missing_tests; then
    exit 0
fi
if [ "${1:-}" = "--if-missing-fuzz" ] && ! missing_fuzz; then
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
if [ ! -x "$promtool" ]; then
    tmp=$(mktemp -d)
    chmod 755 "$tmp" # apt-get download fetches as the _apt user
    (cd "$tmp" && apt-get download prometheus >/dev/null) &&
        dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" &&
        mkdir -p "$tools_dir" && install -m 0755 "$tmp/x/usr/bin/promtool" "$promtool" ||
        { rm -rf "$tmp"; echo "install-deps: could not fetch promtool" >&2; exit 1; }
    rm -rf "$tmp"
fi
