#!/usr/bin/env bash
# bench-serving.sh: what serving pays for the student snapshot (dim 20)
# against a teacher-sized snapshot (dim 200) of the same data, in the same run.
#
#   tools/bench-serving.sh            (make bench-serving)
#   DATA=DIR ROUNDS=N USERS=N BUILD=DIR tools/bench-serving.sh
#
# On DATA (default ../shared/data/citeulike), trains a student
# (derrd-train --method student --max-epochs 30) and a teacher
# (--method teacher --max-epochs 10, dim 200), each saved with --save.
# Few epochs on purpose: the timings depend on the shapes (users, items,
# dim), not on how well the models rank, so a short run gives the same
# serving cost as a model trained to early stopping. (The compressed sizes
# may move a little with training: how far zstd shrinks float32 values
# depends somewhat on their distribution.)
#
# Then ROUNDS (default 2) times, one after the other:
#   derrd-snap from-emb, both models, zstd level 3: raw and file bytes and
#       the write rate (compression, write, fsyncs);
#   derrd-snap bench on both snapshots in one process: open+verify (best of
#       5) and recommend top-10 over all items for the same USERS (default
#       2000) users (best of 3 passes, one thread), and the teacher-sized
#       one's cost relative to the student's.
# then once at zstd levels 1 and 19 (from-emb, and bench for 500 users), for
# the sizes, write rates and open+verify rates at those levels.
# Everything printed also goes to bench/out/serving.txt.
set -euo pipefail
if [ -n "${DATA:-}" ]; then
    DATA=$(cd "$DATA" && pwd)      # relative to the caller's directory
fi
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DATA=${DATA:-../shared/data/citeulike}
ROUNDS=${ROUNDS:-2}
USERS=${USERS:-2000}
train="$(cd "$BUILD" && pwd)/derrd-train"
snap="$(cd "$BUILD" && pwd)/derrd-snap"
dir=$(mktemp -d /tmp/derrd-bench-serving.XXXXXX)
cleanup() { rm -rf "$dir"; }
trap cleanup EXIT
mkdir -p bench/out
out=$PWD/bench/out/serving.txt
: >"$out"
say() { echo "$@" | tee -a "$out"; }

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
say "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores ($cpu)"
say "# data: $DATA; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
"$train" --data "$DATA" --method student --max-epochs 30 --seed 0 --quiet --json \
    --save "$dir/student.emb" >"$dir/student.json"
"$train" --data "$DATA" --method teacher --max-epochs 10 --seed 0 --quiet --json \
    --save "$dir/teacher.emb" >"$dir/teacher.json"
for m in student teacher; do
    j=$(tail -1 "$dir/$m.json")
    shape=$(echo "$j" | grep -o '"dim": [0-9]*, "seed": .*, "epochs": [0-9]*')
    hr=$(echo "$j" | grep -o '"test": {"HR@5": [0-9.]*' | sed 's/"test": {//')
    say "# trained $m: $shape, test $hr"
done

# Relative names, so the tables show student.dsnap and teacher.dsnap.
cd "$dir"
for r in $(seq 1 "$ROUNDS"); do
    say ""
    say "## round $r (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    for m in student teacher; do
        "$snap" from-emb "$m.emb" "$m.dsnap" --level 3 | tee -a "$out"
    done
    "$snap" bench student.dsnap teacher.dsnap --users "$USERS" -k 10 --seed 0 | tee -a "$out"
done
for l in 1 19; do
    say ""
    say "## zstd level $l (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    for m in student teacher; do
        "$snap" from-emb "$m.emb" "$m-l$l.dsnap" --level "$l" | tee -a "$out"
    done
    "$snap" bench "student-l$l.dsnap" "teacher-l$l.dsnap" --users 500 -k 10 --seed 0 |
        tee -a "$out"
done
