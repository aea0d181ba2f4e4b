#!/usr/bin/env bash
# Selects DE-RRD settings on the valid split, over several seeds, the way
# bench/RESULTS.md ("Tuning from the teacher's fit") did by hand.
#
#   tools/bench-select.sh TEACHER_EMB [DATA_DIR]     default ../shared/data/citeulike
#
# Every setting below trains once per seed (one thread a run, JOBS runs at a
# time) and writes its JSON line to bench/out/select/. The setting with the
# highest mean valid HR@5 over the seeds is selected by this script, before
# any test figure is printed; then the table shows valid and test for all.
# Env: SEEDS (default "0 1 2"), JOBS (default: CPUs), METHOD (default derrd),
# SETTINGS: a file of settings, one per line ("-" for the defaults; lines
# starting with # are skipped) instead of the grid below; its runs go to
# bench/out/select-<file name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=${1:?usage: tools/bench-select.sh TEACHER_EMB [DATA_DIR]}
data=${2:-../shared/data/citeulike}
seeds=${SEEDS:-0 1 2}
jobs=${JOBS:-$(nproc)}
method=${METHOD:-derrd}
out=bench/out/select
[ -z "${SETTINGS:-}" ] || out=bench/out/select-$(basename "$SETTINGS" .txt)
train=build/derrd-train
[ -x "$train" ] || make "$train"
[ -f "$data/train.tsv" ] || { echo "bench-select: no dataset at $data" >&2; exit 2; }
[ -f "$teacher" ] || { echo "bench-select: no teacher file $teacher" >&2; exit 2; }
mkdir -p "$out"

# The grid of bench/RESULTS.md's first selection (2026-11-27), unchanged.
settings=(
    ""
    "--lambda-rrd 0.0005"
    "--lambda-de 0.02"
    "--lambda-de 0.02 --lambda-rrd 0.00035"
    "--lambda-de 0.02 --lambda-rrd 0.0005"
    "--lambda-de 0.03 --lambda-rrd 0.0005"
    "--lambda-de 0.04 --lambda-rrd 0.0005"
    "--lambda-de 0.02 --lambda-rrd 0.0005 --rrd-sample 1"
    "--de-max-experts 1"
)
if [ -n "${SETTINGS:-}" ]; then
    [ -f "$SETTINGS" ] || { echo "bench-select: no settings file $SETTINGS" >&2; exit 2; }
    settings=()
    while IFS= read -r line || [ -n "$line" ]; do # a last line without a newline too
        case $line in '#'*|'') continue ;; -) line= ;; esac
        settings+=("$line")
    done < "$SETTINGS"
    [ "${#settings[@]}" -gt 0 ] || { echo "bench-select: no settings in $SETTINGS" >&2; exit 2; }
fi

list=$out/runs.tsv
: > "$list"
for i in "${!settings[@]}"; do
    for s in $seeds; do
        printf '%s\t%s\t%s\n' "$i" "$s" "${settings[$i]}" >> "$list"
    done
done

one() { # index seed args
    local f="$out/$1-s$2.json"
    # shellcheck disable=SC2086 # the settings are word lists
    "$train" --data "$data" --method "$method" --teacher "$teacher" --seed "$2" \
        --threads 1 --quiet --json $3 | tail -n 1 > "$f.part"
    mv "$f.part" "$f"
    echo "bench-select: done: seed $2 ${3:-(defaults)}" >&2
}
started=$(date +%s)
running=0
while IFS=$'\t' read -r i s a; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || { echo "bench-select: a run failed" >&2; exit 1; }
        running=$((running - 1))
    fi
    one "$i" "$s" "$a" &
    running=$((running + 1))
done < "$list"
while [ "$running" -gt 0 ]; do
    wait -n || { echo "bench-select: a run failed" >&2; exit 1; }
    running=$((running - 1))
done
echo "bench-select: $(( $(date +%s) - started )) s for $(wc -l < "$list") runs" >&2

python3 - "$out" "$list" <<'PY'
import json, sys, collections
out, listing = sys.argv[1], sys.argv[2]
rows = collections.OrderedDict()
for line in open(listing):
    i, s, args = line.rstrip("\n").split("\t")
    d = json.load(open("%s/%s-s%s.json" % (out, i, s)))
    rows.setdefault((int(i), args or "(defaults)"), []).append((int(s), d))
mean = lambda xs: sum(xs) / len(xs)
valid = {k: mean([d["valid"]["HR@5"] for _, d in v]) for k, v in rows.items()}
best = max(valid, key=lambda k: (valid[k], -k[0]))
print("selected on mean valid HR@5: %s (%.4f)\n" % (best[1], valid[best]))
seeds = [s for s, _ in next(iter(rows.values()))]
print("| ARGS | mean valid HR@5 | " + " | ".join("seed %d: test (valid)" % s for s in seeds)
      + " | mean test HR@5 | epochs (last improvement) |")
print("|---|---|" + "---|" * len(seeds) + "---|---|")
for k, v in rows.items():
    name = ("**`%s`**" if k == best else "`%s`") % k[1]
    print("| %s | %.4f | %s | %.4f | %s |" % (
        name, valid[k],
        " | ".join("%.4f (%.4f)" % (d["test"]["HR@5"], d["valid"]["HR@5"]) for _, d in v),
        mean([d["test"]["HR@5"] for _, d in v]),
        ", ".join("%d (%d)" % (d["epochs"], d["best_epoch"]) for _, d in v)))
PY
