#!/usr/bin/env bash
# The one-way layer rules (README.md, "Layout"), checked by grep.
# Exits 1 and names each violation.
set -u
cd "$(dirname "$0")/.."
fail=0
bad() { echo "check-layers: $*" >&2; fail=1; }

# grep_files PATTERN FILES... -> prints matches
hits() { local pat=$1; shift; [ $# -gt 0 ] && grep -nE "$pat" "$@" 2>/dev/null; }

shopt -s nullglob
model=(model/*.c model/*.h)
io=(io/*.c io/*.h)
tools=(tools/*.c tools/*.h)
all=(model/*.[ch] io/*.[ch] daemon/*.[ch] tools/*.[ch] tests/*.[ch])

# model/: libc, libm, OpenBLAS, pthreads only; no printing, no exit, no files.
out=$(hits '#include *[<"](librdkafka/|rdkafka|uv\.h|zstd|io/|daemon/)' "${model[@]}") &&
    bad "model/ includes a forbidden header:"$'\n'"$out"
out=$(hits '\b(printf|fprintf|puts|perror|fopen|open|exit|abort)\s*\(' "${model[@]}" |
      grep -vE '^\S+:[0-9]+:\s*(/\*|\*)') &&
    bad "model/ prints, exits or opens files:"$'\n'"$out"
# io/: no libuv, no model types.
out=$(hits '#include *[<"](uv\.h|model/|daemon/)' "${io[@]}") &&
    bad "io/ includes libuv, model/ or daemon/:"$'\n'"$out"
# tools/: never daemon/ or libuv.
out=$(hits '#include *[<"](uv\.h|daemon/)' "${tools[@]}") &&
    bad "tools/ includes libuv or daemon/:"$'\n'"$out"
# Each third-party header in one place.
only_in() { # header-regex allowed-file-regex
    local out
    out=$(hits "#include *[<\"]($1)" "${all[@]}" | grep -vE "^($2):") &&
        bad "$1 included outside $2:"$'\n'"$out"
}
only_in 'cblas\.h|openblas' 'model/gemm\.c'
only_in 'zstd' 'io/snapshot\.c'
only_in 'jansson' 'io/event\.c|io/kafka\.c'
only_in 'librdkafka/|rdkafka' 'io/kafka[a-z_]*\.c|tests/[a-z_]*kafka[a-z_]*\.c'
only_in 'uv\.h' 'daemon/[a-z_]*\.c'
only_in 'microhttpd' 'daemon/http\.c'

[ $fail -eq 0 ] && echo "check-layers: ok"
exit $fail
