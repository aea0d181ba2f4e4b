#!/usr/bin/env bash
# rounds.sh: distillation rounds, snapshot publishing and the HTTP pull,
# against a real broker.
#
#   tests/kafka/rounds.sh BOOTSTRAP
#
# derrd A (built-in teacher, small and quick rounds) on a new 4-partition
# topic holding a first wave of 20,000 synthetic events. Once its first
# snapshot is published, a second wave of 300 users that are all new
# ("new-0" .. "new-299", 4 known items each) is produced while rounds run.
# Then, exactly:
#   1. a published snapshot covers the topic's end offsets (META offsets =
#      high watermarks) within 120 s, and `derrd-snap recommend` finds a row
#      for every one of the 300 new users (the missing ones are listed);
#   2. 200 consecutive GETs of /v1/snapshot during the second wave,
#      alternating plain GETs and GETs with If-None-Match set to the last
#      ETag: every 200 body passes `derrd-snap verify` and its version equals
#      its ETag and X-Derrd-Snapshot-Version, versions never go back, a
#      conditional 200 carries a tag other than the one sent; every 304 has
#      no body and the tag sent (the latest); both 200s and 304s are seen;
#      GET /v1/snapshot/<version> of the current version returns its bytes;
#   3. a published snapshot with one byte flipped in its middle is refused
#      by `derrd-snap verify` (exit 1) with a reason;
#   5. SIGTERM stops derrd A with exit 0 within 30 s, and its stored set
#      (--dump-state) equals the union of the pairs of both waves.
# And derrd B, on a topic of its own, with --teacher-file (check 4): a
# teacher trained by `derrd-train --method teacher` on a small generated
# dataset (integer ids, the shared format) whose train.tsv is what B reads.
# B's log shows the teacher loaded and a snapshot is published; then the
# file is overwritten with garbage and a few new pairs of known users and
# items are produced: the log shows the refusal with its reason, a newer
# snapshot covering the new events is published, and its teacher version
# is the one before (the old teacher stays). B stops with exit 0, its stored
# set equal to what it was sent.
# Needs build/derrd, build/derrd-snap, build/derrd-replay, build/derrd-train,
# build/kcheck (BUILD= to change) and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
B=${1:?usage: rounds.sh BOOTSTRAP}
BUILD=${BUILD:-build}
PULLS=${PULLS:-200}
work=$(mktemp -d /tmp/derrd-rounds.XXXXXX)
run=$(date +%s%N)
topic=rounds-$run group=rounds-$run
topic_b=rounds-teacher-$run group_b=rounds-teacher-$run
pid= pid_b= pull_pid= keep=${KEEP:-0}
t_start=$(date +%s)
say() { echo "rounds: $*" >&2; }
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    [ -n "$pid_b" ] && kill -9 "$pid_b" 2>/dev/null || true
    [ -n "$pull_pid" ] && kill "$pull_pid" 2>/dev/null || true
    if [ "$keep" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { say "FAIL: $*"; keep=1; exit 1; }
snap() { "$BUILD/derrd-snap" "$@"; }
# A numeric field of `derrd-snap info --json` of snapshot $1 ("version", "round",
# "teacher_version", ...).
snap_field() {
    snap info "$1" --json | grep -o "\"$2\": *[0-9]*" | head -1 | grep -o '[0-9]*$'
}
snap_version() { snap_field "$1" version; }
# partition<TAB>high watermark of topic $1 (group $2) into file $3.
watermarks() {
    "$BUILD/kcheck" lag -b "$B" -t "$1" -g "$2" | awk '$1 ~ /^[0-9]+$/ { print $1 "\t" $3 }' >"$3"
}
# Whether the offsets of snapshot $1 equal the watermarks in file $2.
covers() {
    snap info "$1" --json 2>/dev/null |
        grep -o '"partition": *[0-9]*, *"offset": *[0-9]*' | tr -c '0-9\n' ' ' |
        awk 'NR == FNR { off[$1] = $2; next }
             { n++; if ((($1 in off) ? off[$1] : 0) != $2) bad = 1 }
             END { exit n > 0 && !bad ? 0 : 1 }' - "$2"
}
# Stops derrd $1 with SIGTERM; it must exit 0 within 30 s. Log $2.
stop_derrd() {
    local p=$1 log=$2 t0 rc=0
    t0=$(date +%s%N)
    kill -TERM "$p"
    for _ in $(seq 1 300); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && fail "derrd still running 30 s after SIGTERM: $(tail -5 "$log")"
    wait "$p" || rc=$?
    [ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM: $(tail -5 "$log")"
    stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
nrounds() { grep -cE " round [0-9]+: " "$1" || true; }

"$BUILD/kcheck" create-topic -b "$B" -t "$topic" -p 4 >/dev/null
"$BUILD/kcheck" create-topic -b "$B" -t "$topic_b" -p 4 >/dev/null

# ---- data --------------------------------------------------------------------
# Wave 1: 20,000 synthetic events (decimal ids), produced before derrd starts.
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic 20000 --users 1500 \
    --items 3000 --seed 1 --format text --expect-out "$work/wave1.tsv" \
    >/dev/null 2>"$work/replay1.log" || fail "derrd-replay wave 1: $(cat "$work/replay1.log")"
# Wave 2: users new-0 .. new-299, 4 items each, all items of wave 1.
cut -f2 "$work/wave1.tsv" | LC_ALL=C sort -u >"$work/items1.txt"
awk '{ item[n++] = $1 }
     END { for (k = 0; k < 300; k++) for (j = 0; j < 4; j++)
               printf "new-%d\t%s\n", k, item[(k * 37 + j * 101) % n] }' \
    "$work/items1.txt" >"$work/wave2.tsv"
# The teacher's dataset: 200 users, 400 items, 15 train + 1 valid + 1 test
# items per user, 99 candidates; and 40 new pairs of known users and items.
mkdir -p "$work/data"
awk -v d="$work/data" -v extra="$work/extra.tsv" 'BEGIN {
    srand(7); U = 200; I = 400
    for (u = 0; u < U; u++) {
        n = 0
        while (n < 17) { # skewed popularity: low ids are popular
            i = int(I * rand() * rand())
            if (!((u, i) in seen)) { seen[u, i] = 1; it[n++] = i }
        }
        for (k = 0; k < 15; k++) print u "\t" it[k] >(d "/train.tsv")
        print u "\t" it[15] >(d "/valid.tsv")
        print u "\t" it[16] >(d "/test.tsv")
        line = u; split("", cand); n = 0
        while (n < 99) {
            i = int(I * rand())
            if (!((u, i) in seen) && !(i in cand)) { cand[i] = 1; line = line "\t" i; n++ }
        }
        print line >(d "/candidates.tsv")
        for (k = 0; k < 15; k++) known[it[k]] = 1
    }
    for (u = 0; u < 40; u++) # a new pair of a known user and a known item each
        for (;;) {
            i = int(I * rand())
            if ((i in known) && !((u, i) in seen)) { print u "\t" i >extra; break }
        }
}'
"$BUILD/derrd-train" --data "$work/data" --method teacher --max-epochs 3 --threads 2 --quiet \
    --save "$work/teacher.emb" >"$work/train.log" 2>&1 || fail "derrd-train: $(tail -5 "$work/train.log")"
[ -s "$work/teacher.emb" ] || fail "derrd-train wrote no teacher file"

# ---- derrd A: built-in teacher, HTTP --------------------------------------------
# Both daemons run with the quality gate off (--gate-margin 1): the gate is
# not under test here (tests/test_rounds.c has it), and on a held-out sample
# of a few dozen users HR@10 moves by 0.02 or more from one user to the
# next, so a gated round would withhold the snapshot these checks wait for.
"$BUILD/derrd" --brokers "$B" --topic "$topic" --group "$group" --state-dir "$work/state" \
    --http-port 0 --round-min-events 2000 --round-interval-ms 1000 \
    --min-interactions 1000 --student-epochs 1 --teacher-epochs 2 --threads 2 \
    --gate-margin 1 --checkpoint-interval-ms 500 --stats-interval-ms 0 \
    >"$work/derrd.log" 2>&1 &
pid=$!
port=$(derrd_port "$work/derrd.log" "$pid") ||
    fail "derrd logged no HTTP port: $(tail -5 "$work/derrd.log")"
url=http://127.0.0.1:$port

# The first snapshot.
code=
for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")): $(tail -5 "$work/derrd.log")"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/snapshot") || true
    [ "$code" = 200 ] && break
    sleep 0.1
done
[ "$code" = 200 ] || fail "no snapshot on $url/v1/snapshot after 60 s (last status $code)"
first=$(snap_version "$work/state/snapshots")
say "derrd A on $url: first snapshot $first after $(( $(date +%s) - t_start )) s"

# ---- check 2: publish and pull ----------------------------------------------------
# $PULLS GETs of /v1/snapshot; runs in the background while wave 2 arrives.
pull_loop() {
    local etag= last=0 n200=0 n304=0 nver=0 i sent code tag xver out v inm
    for i in $(seq 1 "$PULLS"); do
        inm=()
        sent=
        if [ $((i % 2)) = 0 ] && [ -n "$etag" ]; then
            sent=$etag
            inm=(-H "If-None-Match: \"$sent\"")
        fi
        rm -f "$work/pull.body"
        code=$(curl -s -D "$work/pull.hdr" -o "$work/pull.body" -w '%{http_code}' "${inm[@]}" \
            "$url/v1/snapshot") || { echo "GET $i: curl failed"; return 1; }
        tag=$(tr -d '\r' <"$work/pull.hdr" | sed -n 's/^[Ee][Tt][Aa][Gg]: *"\([0-9]*\)"$/\1/p')
        xver=$(tr -d '\r' <"$work/pull.hdr" | sed -n 's/^[Xx]-[Dd]errd-[Ss]napshot-[Vv]ersion: *//p')
        [ -n "$tag" ] || { echo "GET $i ($code): no ETag: $(cat "$work/pull.hdr")"; return 1; }
        [ "$xver" = "$tag" ] || { echo "GET $i: X-Derrd-Snapshot-Version $xver, ETag \"$tag\""; return 1; }
        case $code in
        200)
            out=$(snap verify "$work/pull.body" 2>&1) || { echo "GET $i: body does not verify: $out"; return 1; }
            v=$(snap_version "$work/pull.body")
            [ "$v" = "$tag" ] || { echo "GET $i: body version $v, ETag \"$tag\""; return 1; }
            [ -z "$sent" ] || [ "$tag" != "$sent" ] ||
                { echo "GET $i: 200 to If-None-Match \"$sent\", the same tag"; return 1; }
            n200=$((n200 + 1)) ;;
        304)
            [ -n "$sent" ] || { echo "GET $i: 304 without If-None-Match"; return 1; }
            [ ! -s "$work/pull.body" ] || { echo "GET $i: 304 with a body"; return 1; }
            [ "$tag" = "$sent" ] || { echo "GET $i: 304 for \"$sent\" while the latest is \"$tag\""; return 1; }
            n304=$((n304 + 1)) ;;
        *) echo "GET $i: status $code"; return 1 ;;
        esac
        [ "$tag" -ge "$last" ] || { echo "GET $i: version $tag after $last"; return 1; }
        [ "$tag" = "$last" ] || nver=$((nver + 1))
        last=$tag
        etag=$tag
    done
    [ "$n200" -gt 0 ] && [ "$n304" -gt 0 ] || { echo "$n200 x 200, $n304 x 304; want both"; return 1; }
    echo "$n200 x 200 (all verify, version = ETag), $n304 x 304 (no body, tag = latest), $nver versions seen"
}

# Wave 2 (new users) while rounds run, the pull loop meanwhile. At 150/s it
# lasts 8 s: long enough for a round to end within it even under ASan on a
# slow machine, where round 2 (20,000 interactions) has taken 4.8 s.
rounds_before=$(nrounds "$work/derrd.log")
pull_loop >"$work/pull.out" 2>&1 &
pull_pid=$!
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --data "$work/wave2.tsv" --rate 150 \
    --expect-out "$work/wave2.expect" >/dev/null 2>"$work/replay2.log" ||
    fail "derrd-replay wave 2: $(cat "$work/replay2.log")"
rounds_during=$(( $(nrounds "$work/derrd.log") - rounds_before ))
wait "$pull_pid" || { pull_pid=; fail "pulls: $(cat "$work/pull.out")"; }
pull_pid=
[ "$rounds_during" -ge 1 ] || fail "no round ended while wave 2 arrived"
# The current version by its URL: the same bytes as /v1/snapshot.
curl -s -D "$work/cur.hdr" -o "$work/cur.body" "$url/v1/snapshot" || fail "GET latest failed"
cur=$(tr -d '\r' <"$work/cur.hdr" | sed -n 's/^[Ee][Tt][Aa][Gg]: *"\([0-9]*\)"$/\1/p')
code=$(curl -s -o "$work/byver.body" -w '%{http_code}' "$url/v1/snapshot/$cur") || true
[ "$code" = 200 ] || fail "GET /v1/snapshot/$cur: status $code"
cmp -s "$work/cur.body" "$work/byver.body" || fail "GET /v1/snapshot/$cur differs from /v1/snapshot"
say "check 2 ok: $PULLS GETs: $(cat "$work/pull.out"); /v1/snapshot/$cur = /v1/snapshot"

# ---- check 1: every new user is in a snapshot covering the end offsets ------------
watermarks "$topic" "$group" "$work/hw.txt"
covered=
for _ in $(seq 1 240); do
    kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")): $(tail -5 "$work/derrd.log")"
    if cp "$work/state/snapshots/latest" "$work/covering.dsnap" 2>/dev/null &&
        covers "$work/covering.dsnap" "$work/hw.txt"; then
        covered=1
        break
    fi
    sleep 0.5
done
[ -n "$covered" ] || fail "no snapshot covers the end offsets $(tr '\n' ' ' <"$work/hw.txt") after 120 s; latest: $(snap info "$work/state/snapshots" 2>&1 | grep offsets)"
missing=
for k in $(seq 0 299); do
    snap recommend "$work/covering.dsnap" --user "new-$k" -k 5 >/dev/null 2>&1 || missing="$missing new-$k"
done
[ -z "$missing" ] || fail "snapshot $(snap_version "$work/covering.dsnap") covers every offset but has no row for:$missing"
say "check 1 ok: $rounds_during rounds while wave 2 arrived; snapshot $(snap_version "$work/covering.dsnap") (round $(snap_field "$work/covering.dsnap" round)) covers the end offsets and has all 300 new users"

# ---- check 3: a corrupt snapshot is refused -----------------------------------------
cp "$work/covering.dsnap" "$work/corrupt.dsnap"
size=$(stat -c %s "$work/corrupt.dsnap")
at=$((size / 2))
byte=$(od -An -tu1 -j "$at" -N1 "$work/corrupt.dsnap" | tr -d ' ')
printf "\\$(printf '%03o' $((byte ^ 0xff)))" |
    dd of="$work/corrupt.dsnap" bs=1 seek="$at" count=1 conv=notrunc status=none
cmp -s "$work/covering.dsnap" "$work/corrupt.dsnap" && fail "the byte flip did not change the file"
rc=0
out=$(snap verify "$work/corrupt.dsnap" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "derrd-snap verify of a corrupt snapshot exited $rc: $out"
grep -q "checksum mismatch" <<<"$out" || fail "derrd-snap verify gives no checksum reason: $out"
snap verify "$work/covering.dsnap" >/dev/null || fail "the uncorrupted copy does not verify"
say "check 3 ok: byte $at of $size flipped, verify exit 1: $out"

# ---- check 5 (A): clean shutdown, the stored set is both waves ---------------------
stop_derrd "$pid" "$work/derrd.log"
pid=
LC_ALL=C sort -u "$work/wave1.tsv" "$work/wave2.expect" >"$work/expect.tsv"
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
if ! cmp -s "$work/expect.tsv" "$work/got.tsv"; then
    diff "$work/expect.tsv" "$work/got.tsv" | head -10 >&2
    fail "derrd A's stored pairs differ from the union of both waves"
fi
say "check 5 ok: SIGTERM -> exit 0 in $stop_ms ms; stored set = both waves ($(wc -l <"$work/got.tsv") pairs); $(nrounds "$work/derrd.log") rounds"

# ---- check 4: the teacher from a file -------------------------------------------------
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic_b" --data "$work/data/train.tsv" \
    --expect-out "$work/train.expect" >/dev/null 2>"$work/replay3.log" ||
    fail "derrd-replay teacher data: $(cat "$work/replay3.log")"
snaps_b=$work/state-b/snapshots
"$BUILD/derrd" --brokers "$B" --topic "$topic_b" --group "$group_b" --state-dir "$work/state-b" \
    --http false --teacher-file "$work/teacher.emb" --round-min-events 2000 \
    --round-interval-ms 1000 --min-interactions 1000 --student-epochs 1 --threads 2 \
    --gate-margin 1 --checkpoint-interval-ms 500 --stats-interval-ms 0 >"$work/derrd-b.log" 2>&1 &
pid_b=$!
for _ in $(seq 1 600); do
    kill -0 "$pid_b" 2>/dev/null || fail "derrd B exited: $(tail -5 "$work/derrd-b.log")"
    [ -e "$snaps_b/latest" ] && break
    sleep 0.1
done
[ -e "$snaps_b/latest" ] || fail "derrd B published no snapshot in 60 s: $(tail -5 "$work/derrd-b.log")"
loaded=$(grep -m1 "teacher loaded from $work/teacher.emb" "$work/derrd-b.log") ||
    fail "derrd B's log does not say the teacher was loaded: $(head -20 "$work/derrd-b.log")"
say "derrd B: ${loaded#*notice: }"
# Wait until B has read everything, so the teacher version is settled.
watermarks "$topic_b" "$group_b" "$work/hw-b.txt"
for _ in $(seq 1 240); do
    covers "$snaps_b" "$work/hw-b.txt" && break
    sleep 0.25
done
covers "$snaps_b" "$work/hw-b.txt" || fail "derrd B: no snapshot covers the teacher data"
before=$(snap_version "$snaps_b")
tv_before=$(snap_field "$snaps_b" teacher_version)
# Garbage in place of the teacher, and new pairs of known ids to start a round.
printf 'not a teacher file\n%.0s' {1..50} >"$work/teacher.emb"
touch "$work/teacher.emb"
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic_b" --data "$work/extra.tsv" \
    --expect-out "$work/extra.expect" >/dev/null 2>"$work/replay4.log" ||
    fail "derrd-replay extra events: $(cat "$work/replay4.log")"
watermarks "$topic_b" "$group_b" "$work/hw-b.txt"
covered=
for _ in $(seq 1 240); do
    kill -0 "$pid_b" 2>/dev/null || fail "derrd B exited: $(tail -5 "$work/derrd-b.log")"
    if cp "$snaps_b/latest" "$work/after.dsnap" 2>/dev/null &&
        covers "$work/after.dsnap" "$work/hw-b.txt"; then
        covered=1
        break
    fi
    sleep 0.25
done
[ -n "$covered" ] || fail "derrd B: no snapshot covers the extra events after the bad teacher file: $(grep -E "round|teacher" "$work/derrd-b.log" | tail -5)"
refused=$(grep -m1 "rounds: $work/teacher.emb: [a-z].*; keeping the teacher loaded before" \
    "$work/derrd-b.log") || fail "derrd B's log does not show the refusal: $(tail -5 "$work/derrd-b.log")"
after=$(snap_version "$work/after.dsnap")
tv_after=$(snap_field "$work/after.dsnap" teacher_version)
[ "$after" -gt "$before" ] || fail "derrd B: snapshot $after is not newer than $before"
[ "$tv_after" = "$tv_before" ] || fail "derrd B: teacher version $tv_before became $tv_after after a bad file"
grep -q " round [0-9]* failed" "$work/derrd-b.log" &&
    fail "derrd B: a round failed: $(grep -m1 " round [0-9]* failed" "$work/derrd-b.log")"
stop_derrd "$pid_b" "$work/derrd-b.log"
pid_b=
LC_ALL=C sort -u "$work/train.expect" "$work/extra.expect" >"$work/expect-b.tsv"
"$BUILD/derrd" --dump-state --state-dir "$work/state-b" --topic "$topic_b" 2>/dev/null |
    LC_ALL=C sort >"$work/got-b.tsv"
cmp -s "$work/expect-b.tsv" "$work/got-b.tsv" || fail "derrd B's stored pairs differ from what it was sent"
say "check 4 ok: refused: ${refused#*error: }; snapshot $before -> $after, teacher version $tv_before kept; B stopped with exit 0 in $stop_ms ms"

say "ok ($(( $(date +%s) - t_start )) s)"
