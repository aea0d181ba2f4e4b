/*
 * Tests of the daemon's id structures in model/: idmap (external id to dense
 * row, with holes for erased ids) and iset (the interaction set).
 *
 * Besides the hand-written cases, each structure is driven by long seeded
 * random operation sequences and compared after every step with a naive
 * reference model, since both use open addressing with backward-shift
 * deletion, whose bugs show only in particular probe-chain layouts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/idmap.h"
#include "model/iset.h"
#include "model/rng.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------- */

/* A key found in m at row, with the bytes key[0..len). */
static int idmap_test_key_is(const idmap_t *m, int64_t row, const void *key, size_t len)
{
    size_t got_len = 12345;
    const char *got = idmap_key(m, row, &got_len);
    return got && got_len == len && memcmp(got, key, len) == 0;
}

/* A hole at row: no key, length 0. */
static int idmap_test_is_hole(const idmap_t *m, int64_t row)
{
    size_t len = 12345;
    return idmap_key(m, row, &len) == NULL && len == 0;
}

/*
 * The key of universe index x into buf (at least 32 bytes): 2 to 28 bytes,
 * binary, NULs included. The first 1-3 bytes spell x in base 256, the last
 * byte says how many did, and the bytes between are a function of x; so two
 * indices never share a key, while short keys and keys crossing the hash's
 * 8-byte words both occur.
 */
static size_t idmap_test_key_of(uint32_t x, unsigned char *buf)
{
    uint64_t h = (uint64_t)x * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    size_t prefix = x < 256 ? 1 : x < 65536 ? 2 : 3;
    size_t len = prefix + (size_t)(h % 25);
    for (size_t k = 0; k < prefix; k++)
        buf[k] = (unsigned char)(x >> (8 * k));
    for (size_t k = prefix; k < len; k++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        buf[k] = (unsigned char)(h >> 56);
    }
    buf[len] = (unsigned char)prefix;
    return len + 1;
}

/* ---- idmap: hand-written cases ------------------------------------------- */

TEST(idmap_intern_find_basic)
{
    idmap_t *m = idmap_new(1);
    REQUIRE(m);
    CHECK_EQ_INT(idmap_rows(m), 0);
    CHECK_EQ_INT(idmap_count(m), 0);
    CHECK_EQ_INT(idmap_find(m, "alice", 5), -1);

    int added = -1;
    CHECK_EQ_INT(idmap_intern(m, "alice", 5, &added), 0);
    CHECK_EQ_INT(added, 1);
    CHECK_EQ_INT(idmap_intern(m, "bob", 3, &added), 1);
    CHECK_EQ_INT(added, 1);
    CHECK_EQ_INT(idmap_intern(m, "alice", 5, &added), 0);
    CHECK_EQ_INT(added, 0);
    CHECK_EQ_INT(idmap_intern(m, "carol", 5, NULL), 2); /* added may be NULL */
    CHECK_EQ_INT(idmap_intern(m, "carol", 5, NULL), 2);

    CHECK_EQ_INT(idmap_find(m, "alice", 5), 0);
    CHECK_EQ_INT(idmap_find(m, "bob", 3), 1);
    CHECK_EQ_INT(idmap_find(m, "carol", 5), 2);
    CHECK_EQ_INT(idmap_find(m, "dave", 4), -1);
    /* A prefix or an extension of a key is another key. */
    CHECK_EQ_INT(idmap_find(m, "alic", 4), -1);
    CHECK_EQ_INT(idmap_find(m, "alicea", 6), -1);
    CHECK_EQ_INT(idmap_find(m, "alice", 0), -1);

    CHECK_EQ_INT(idmap_rows(m), 3);
    CHECK_EQ_INT(idmap_count(m), 3);
    CHECK(idmap_test_key_is(m, 0, "alice", 5));
    CHECK(idmap_test_key_is(m, 1, "bob", 3));
    CHECK(idmap_test_key_is(m, 2, "carol", 5));
    idmap_free(m);
    idmap_free(NULL);
}

TEST(idmap_erase_leaves_hole_and_new_row_on_return)
{
    idmap_t *m = idmap_new(7);
    REQUIRE(m);
    const char *keys[] = { "a", "b", "c", "d" };
    for (int k = 0; k < 4; k++)
        CHECK_EQ_INT(idmap_intern(m, keys[k], 1, NULL), k);

    CHECK_EQ_INT(idmap_erase(m, "b", 1), 1);
    CHECK_EQ_INT(idmap_find(m, "b", 1), -1);
    CHECK(idmap_test_is_hole(m, 1));
    CHECK_EQ_INT(idmap_rows(m), 4);  /* rows never shrink */
    CHECK_EQ_INT(idmap_count(m), 3);
    CHECK_EQ_INT(idmap_find(m, "a", 1), 0);
    CHECK_EQ_INT(idmap_find(m, "c", 1), 2);
    CHECK_EQ_INT(idmap_find(m, "d", 1), 3);
    CHECK(idmap_test_key_is(m, 2, "c", 1));

    /* Erasing again, an absent key or an invalid one: -1, nothing changes. */
    CHECK_EQ_INT(idmap_erase(m, "b", 1), -1);
    CHECK_EQ_INT(idmap_erase(m, "zz", 2), -1);
    CHECK_EQ_INT(idmap_erase(m, "a", 0), -1);
    CHECK_EQ_INT(idmap_count(m), 3);

    /* A returning id gets a new row; its old row stays a hole. */
    int added = 0;
    CHECK_EQ_INT(idmap_intern(m, "b", 1, &added), 4);
    CHECK_EQ_INT(added, 1);
    CHECK(idmap_test_is_hole(m, 1));
    CHECK(idmap_test_key_is(m, 4, "b", 1));
    CHECK_EQ_INT(idmap_find(m, "b", 1), 4);
    CHECK_EQ_INT(idmap_rows(m), 5);
    CHECK_EQ_INT(idmap_count(m), 4);

    /* Erase everything, then the map is empty but keeps its rows. */
    for (int k = 0; k < 4; k++)
        CHECK(idmap_erase(m, keys[k], 1) >= 0);
    CHECK_EQ_INT(idmap_count(m), 0);
    CHECK_EQ_INT(idmap_rows(m), 5);
    for (int64_t r = 0; r < 5; r++)
        CHECK(idmap_test_is_hole(m, r));
    CHECK_EQ_INT(idmap_intern(m, "a", 1, NULL), 5);
    idmap_free(m);
}

TEST(idmap_rejects_empty_and_oversized_keys)
{
    idmap_t *m = idmap_new(3);
    REQUIRE(m);
    enum { MAX = 65535 };
    char *big = malloc(MAX + 2);
    REQUIRE(big);
    memset(big, 'k', MAX + 2);

    int added = 99;
    CHECK_EQ_INT(idmap_intern(m, "x", 0, &added), -EINVAL);
    CHECK_EQ_INT(added, 0);
    added = 99;
    CHECK_EQ_INT(idmap_intern(m, big, MAX + 1, &added), -EINVAL);
    CHECK_EQ_INT(added, 0);
    CHECK_EQ_INT(idmap_intern(m, big, (size_t)1 << 40, &added), -EINVAL);
    CHECK_EQ_INT(idmap_rows(m), 0);
    CHECK_EQ_INT(idmap_count(m), 0);
    CHECK_EQ_INT(idmap_find(m, big, MAX + 1), -1);

    /* Exactly 65535 bytes is fine, and distinct from its 65534-byte prefix. */
    CHECK_EQ_INT(idmap_intern(m, big, MAX, &added), 0);
    CHECK_EQ_INT(added, 1);
    CHECK_EQ_INT(idmap_find(m, big, MAX), 0);
    CHECK_EQ_INT(idmap_find(m, big, MAX - 1), -1);
    CHECK_EQ_INT(idmap_intern(m, big, MAX - 1, &added), 1);
    CHECK(idmap_test_key_is(m, 0, big, MAX));
    CHECK(idmap_test_key_is(m, 1, big, MAX - 1));
    CHECK_EQ_INT(idmap_erase(m, big, MAX), 0);
    CHECK_EQ_INT(idmap_find(m, big, MAX - 1), 1);
    free(big);
    idmap_free(m);
}

TEST(idmap_binary_keys_and_embedded_nul)
{
    idmap_t *m = idmap_new(0xdeadbeef);
    REQUIRE(m);
    /* Keys a C string would confuse: all distinct. */
    static const struct {
        const char *s;
        size_t len;
    } tricky[] = {
        { "a", 1 }, { "a\0", 2 }, { "a\0b", 3 }, { "a\0c", 3 }, { "\0", 1 }, { "\0\0", 2 },
        { "\0a", 2 }, { "abcdefgh", 8 }, { "abcdefgh\0", 9 }, { "abcdefg\0", 8 },
        { "abcdefghabcdefgh", 16 }, { "abcdefghabcdefgh\0", 17 },
    };
    int n_tricky = (int)(sizeof(tricky) / sizeof(tricky[0]));
    for (int k = 0; k < n_tricky; k++) {
        int added = 0;
        CHECK_EQ_INT(idmap_intern(m, tricky[k].s, tricky[k].len, &added), k);
        CHECK_EQ_INT(added, 1);
    }
    /* Every single-byte key 0..255. */
    int64_t base = idmap_rows(m);
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        int64_t want = idmap_find(m, &c, 1);
        int64_t row = idmap_intern(m, &c, 1, NULL);
        /* "a" and "\0" are already in from the tricky list. */
        if (b == 'a' || b == 0)
            CHECK_EQ_INT(row, want);
        else
            CHECK(row >= base);
    }
    /* Keys of every length 2..40 that differ only in their last byte, so
     * each word boundary of the hash is crossed. */
    unsigned char buf[40];
    memset(buf, 0x5a, sizeof(buf));
    for (size_t len = 2; len <= 40; len++)
        for (int last = 0; last < 3; last++) {
            buf[len - 1] = (unsigned char)(0xfd + last);
            int added = 0;
            CHECK(idmap_intern(m, buf, len, &added) >= 0);
            CHECK_EQ_INT(added, 1);
            buf[len - 1] = 0x5a;
        }
    CHECK_EQ_INT(idmap_count(m), idmap_rows(m));
    CHECK_EQ_INT(idmap_count(m), n_tricky + 254 + 39 * 3);

    for (int k = 0; k < n_tricky; k++) {
        CHECK_EQ_INT(idmap_find(m, tricky[k].s, tricky[k].len), k);
        CHECK(idmap_test_key_is(m, k, tricky[k].s, tricky[k].len));
    }
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        int64_t row = idmap_find(m, &c, 1);
        CHECK(row >= 0);
        if (row >= 0)
            CHECK(idmap_test_key_is(m, row, &c, 1));
    }
    /* Erasing "a\0b" leaves "a\0c", "a" and "a\0" alone. */
    CHECK_EQ_INT(idmap_erase(m, "a\0b", 3), 2);
    CHECK_EQ_INT(idmap_find(m, "a\0b", 3), -1);
    CHECK_EQ_INT(idmap_find(m, "a\0c", 3), 3);
    CHECK_EQ_INT(idmap_find(m, "a", 1), 0);
    CHECK_EQ_INT(idmap_find(m, "a\0", 2), 1);
    idmap_free(m);
}

TEST(idmap_add_hole)
{
    idmap_t *m = idmap_new(5);
    REQUIRE(m);
    CHECK_EQ_INT(idmap_add_hole(m), 0);
    CHECK_EQ_INT(idmap_intern(m, "x", 1, NULL), 1);
    CHECK_EQ_INT(idmap_add_hole(m), 2);
    CHECK_EQ_INT(idmap_add_hole(m), 3);
    CHECK_EQ_INT(idmap_intern(m, "y", 1, NULL), 4);
    CHECK_EQ_INT(idmap_rows(m), 5);
    CHECK_EQ_INT(idmap_count(m), 2);
    CHECK(idmap_test_is_hole(m, 0));
    CHECK(idmap_test_is_hole(m, 2));
    CHECK(idmap_test_is_hole(m, 3));
    CHECK(idmap_test_key_is(m, 1, "x", 1));
    CHECK(idmap_test_key_is(m, 4, "y", 1));
    CHECK_EQ_INT(idmap_find(m, "x", 1), 1);
    CHECK_EQ_INT(idmap_find(m, "y", 1), 4);
    /* Many holes (past the row table's first growth) then a key. */
    for (int k = 0; k < 1000; k++)
        CHECK_EQ_INT(idmap_add_hole(m), 5 + k);
    CHECK_EQ_INT(idmap_intern(m, "z", 1, NULL), 1005);
    CHECK_EQ_INT(idmap_count(m), 3);
    CHECK_EQ_INT(idmap_find(m, "x", 1), 1);
    idmap_free(m);
}

/* The seed changes the hash, not the behaviour. */
TEST(idmap_seed_does_not_change_rows)
{
    uint64_t seeds[] = { 0, 1, 0xffffffffffffffffull, 0x64657272645f6964ull };
    unsigned char key[32];
    for (int s = 0; s < 4; s++) {
        idmap_t *m = idmap_new(seeds[s]);
        REQUIRE(m);
        for (uint32_t x = 0; x < 5000; x++) {
            size_t len = idmap_test_key_of(x, key);
            CHECK_EQ_INT(idmap_intern(m, key, len, NULL), x);
        }
        for (uint32_t x = 0; x < 5000; x++) {
            size_t len = idmap_test_key_of(x, key);
            CHECK_EQ_INT(idmap_find(m, key, len), x);
        }
        idmap_free(m);
    }
}

TEST(idmap_growth_one_million_keys)
{
    enum { N = 1000000 };
    idmap_t *m = idmap_new(42);
    REQUIRE(m);
    size_t mem0 = idmap_memory(m), mem_prev = mem0;
    CHECK(mem0 > 0);
    char key[32];
    for (int k = 0; k < N; k++) {
        int len = snprintf(key, sizeof(key), "user-%d", k);
        int added = 0;
        int64_t row = idmap_intern(m, key, (size_t)len, &added);
        if (row != k || !added) {
            test_fail(__FILE__, __LINE__, "intern %s: row %lld added %d", key,
                      (long long)row, added);
            break;
        }
        if ((k & (k + 1)) == 0) { /* k = 2^j - 1: memory never shrinks */
            size_t mem = idmap_memory(m);
            CHECK(mem >= mem_prev);
            mem_prev = mem;
        }
    }
    CHECK_EQ_INT(idmap_rows(m), N);
    CHECK_EQ_INT(idmap_count(m), N);
    size_t mem = idmap_memory(m);
    /* At least a 4-byte slot, a row and the key bytes per key. */
    CHECK(mem > (size_t)N * (4 + 8 + 6));
    CHECK(mem > mem0 * 1000);
    int bad_find = 0, bad_key = 0, bad_absent = 0;
    for (int k = 0; k < N; k++) {
        int len = snprintf(key, sizeof(key), "user-%d", k);
        bad_find += idmap_find(m, key, (size_t)len) != k;
        bad_key += !idmap_test_key_is(m, k, key, (size_t)len);
    }
    for (int k = 0; k < N; k += 4) {
        int len = snprintf(key, sizeof(key), "absent-%d", k);
        bad_absent += idmap_find(m, key, (size_t)len) != -1;
    }
    CHECK_EQ_INT(bad_find, 0);
    CHECK_EQ_INT(bad_key, 0);
    CHECK_EQ_INT(bad_absent, 0);
    /* Interning again adds nothing. */
    int added = 1;
    CHECK_EQ_INT(idmap_intern(m, "user-123456", 11, &added), 123456);
    CHECK_EQ_INT(added, 0);
    CHECK_EQ_INT(idmap_memory(m), mem);
    idmap_free(m);
}

/* ---- idmap: against a reference ------------------------------------------ */

/*
 * Keys erased in random order from maps of up to 46 keys in the initial
 * 64-slot table, over many seeds: every layout of wrapped probe chains
 * gets exercised, and after each erase every key is looked up.
 */
TEST(idmap_backward_shift_small_tables)
{
    enum { SEEDS = 1500, K = 46 };
    rng_t rng;
    rng_init_stream(&rng, 1, RNG_TEST, 0x1d, 0);
    int32_t order[K];
    int bad = 0;
    for (int s = 0; s < SEEDS && !bad; s++) {
        idmap_t *m = idmap_new(rng_next(&rng));
        REQUIRE(m);
        int n = 8 + (int)rng_below(&rng, K - 8 + 1); /* 8..46 keys: the table stays 64 */
        char key[16];
        for (int k = 0; k < n; k++) {
            int len = snprintf(key, sizeof(key), "k%d", k);
            bad += idmap_intern(m, key, (size_t)len, NULL) != k;
            order[k] = k;
        }
        rng_shuffle_i32(&rng, order, n);
        int alive[K];
        for (int k = 0; k < n; k++)
            alive[k] = 1;
        for (int e = 0; e < n; e++) {
            int len = snprintf(key, sizeof(key), "k%d", order[e]);
            bad += idmap_erase(m, key, (size_t)len) != order[e];
            alive[order[e]] = 0;
            for (int k = 0; k < n; k++) {
                len = snprintf(key, sizeof(key), "k%d", k);
                bad += idmap_find(m, key, (size_t)len) != (alive[k] ? k : -1);
            }
            bad += idmap_count(m) != n - e - 1;
        }
        idmap_free(m);
    }
    CHECK_EQ_INT(bad, 0);
}

/* Interns 50000 keys, erases them all in random order; every 2500 erases
 * every key (erased or not) is looked up. */
TEST(idmap_erase_all_in_random_order)
{
    enum { N = 50000 };
    rng_t rng;
    rng_init_stream(&rng, 2, RNG_TEST, 0x1d, 1);
    idmap_t *m = idmap_new(rng_next(&rng));
    REQUIRE(m);
    int32_t *order = malloc(N * sizeof(*order));
    char *alive = malloc(N);
    REQUIRE(order && alive);
    unsigned char key[32];
    for (int k = 0; k < N; k++) {
        size_t len = idmap_test_key_of((uint32_t)k, key);
        CHECK_EQ_INT(idmap_intern(m, key, len, NULL), k);
        order[k] = k;
        alive[k] = 1;
    }
    rng_shuffle_i32(&rng, order, N);
    int bad = 0;
    for (int e = 0; e < N; e++) {
        size_t len = idmap_test_key_of((uint32_t)order[e], key);
        bad += idmap_erase(m, key, len) != order[e];
        bad += idmap_find(m, key, len) != -1;
        alive[order[e]] = 0;
        if (e % 2500 == 0 || e == N - 1)
            for (int k = 0; k < N; k++) {
                len = idmap_test_key_of((uint32_t)k, key);
                bad += idmap_find(m, key, len) != (alive[k] ? k : -1);
                bad += alive[k] ? !idmap_test_key_is(m, k, key, len) : !idmap_test_is_hole(m, k);
            }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(idmap_count(m), 0);
    CHECK_EQ_INT(idmap_rows(m), N);
    free(order);
    free(alive);
    idmap_free(m);
}

/*
 * 200000 seeded random interns, erases and finds over a universe of 20000
 * keys, against a reference (universe index -> row, row -> index). After
 * each operation its result, rows and count are compared; every 4000
 * operations every key of the universe is looked up and every row's key is
 * read back (which also checks the key bytes survive the buffer's
 * compaction of erased keys).
 */
TEST(idmap_random_ops_against_reference)
{
    enum { U = 20000, OPS = 200000, MAXROWS = OPS + 1 };
    rng_t rng;
    rng_init_stream(&rng, 3, RNG_TEST, 0x1d, 2);
    idmap_t *m = idmap_new(rng_next(&rng));
    int64_t *row_of = malloc(U * sizeof(*row_of));     /* -1 = absent */
    int32_t *index_of = malloc(MAXROWS * sizeof(*index_of)); /* -1 = hole */
    REQUIRE(m && row_of && index_of);
    for (int x = 0; x < U; x++)
        row_of[x] = -1;
    int64_t rows = 0, count = 0;
    unsigned char key[32];
    int bad = 0;
    for (int op = 0; op < OPS && bad < 20; op++) {
        uint32_t x = rng_below(&rng, U);
        size_t len = idmap_test_key_of(x, key);
        uint32_t what = rng_below(&rng, 100);
        /* Phases: mostly interning, then mostly erasing, and so on, so the
         * map both fills (resizes) and drains. */
        int erase_pct = (op / 25000) % 2 ? 60 : 25;
        if (what < (uint32_t)erase_pct) {
            int64_t got = idmap_erase(m, key, len);
            if (got != row_of[x]) {
                test_fail(__FILE__, __LINE__, "op %d: erase %u: %lld, want %lld", op, x,
                          (long long)got, (long long)row_of[x]);
                bad++;
            }
            if (row_of[x] >= 0) {
                index_of[row_of[x]] = -1;
                row_of[x] = -1;
                count--;
            }
        } else if (what < 90) {
            int added = -1;
            int64_t got = idmap_intern(m, key, len, &added);
            int64_t want = row_of[x] >= 0 ? row_of[x] : rows;
            if (got != want || added != (row_of[x] < 0)) {
                test_fail(__FILE__, __LINE__, "op %d: intern %u: %lld added %d, want %lld",
                          op, x, (long long)got, added, (long long)want);
                bad++;
            }
            if (row_of[x] < 0) {
                row_of[x] = rows;
                index_of[rows++] = (int32_t)x;
                count++;
            }
        } else if (what < 95) {
            int64_t got = idmap_add_hole(m);
            bad += got != rows;
            index_of[rows++] = -1;
        } else {
            int64_t got = idmap_find(m, key, len);
            if (got != row_of[x]) {
                test_fail(__FILE__, __LINE__, "op %d: find %u: %lld, want %lld", op, x,
                          (long long)got, (long long)row_of[x]);
                bad++;
            }
        }
        bad += idmap_rows(m) != rows;
        bad += idmap_count(m) != count;
        if (op % 4000 == 3999 || op == OPS - 1) {
            for (uint32_t y = 0; y < U; y++) {
                len = idmap_test_key_of(y, key);
                bad += idmap_find(m, key, len) != row_of[y];
            }
            for (int64_t r = 0; r < rows; r++) {
                if (index_of[r] < 0) {
                    bad += !idmap_test_is_hole(m, r);
                } else {
                    len = idmap_test_key_of((uint32_t)index_of[r], key);
                    bad += !idmap_test_key_is(m, r, key, len);
                }
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
    free(row_of);
    free(index_of);
    idmap_free(m);
}

/*
 * Steady churn at a full key buffer: erase one id, intern a new one, over
 * and over (users forgotten while new ones arrive). Each step must stay
 * O(1) amortized; compacting the whole key buffer to reclaim one erased
 * key per step makes it O(n) per step. Measured as the key bytes the map
 * copies, not as time: amortized growth copies a few times the bytes ever
 * interned; per-step compaction copies the whole 4 MiB buffer again and
 * again (gigabytes over these steps).
 */
TEST(idmap_churn_at_full_buffer_is_amortized)
{
    enum { N = 1 << 18, CHURN = 20000 };
    idmap_t *m = idmap_new(9);
    REQUIRE(m);
    char key[17];
    /* 16-byte keys: the buffer's power-of-two capacity is exactly full. */
    for (int k = 0; k < N; k++) {
        snprintf(key, sizeof(key), "old-%012d", k);
        CHECK_EQ_INT(idmap_intern(m, key, 16, NULL), k);
    }
    for (int k = 0; k < CHURN; k++) {
        snprintf(key, sizeof(key), "old-%012d", k);
        CHECK_EQ_INT(idmap_erase(m, key, 16), k);
        snprintf(key, sizeof(key), "new-%012d", k);
        CHECK_EQ_INT(idmap_intern(m, key, 16, NULL), N + k);
    }
    uint64_t interned = (uint64_t)(N + CHURN) * 16, moved = idmap_bytes_moved(m);
    if (moved > 4 * interned)
        test_fail(__FILE__, __LINE__, "%d churn steps: %llu key bytes copied for %llu interned",
                  CHURN, (unsigned long long)moved, (unsigned long long)interned);
    CHECK_EQ_INT(idmap_count(m), N);
    int bad = 0;
    for (int k = 0; k < N; k += 7) {
        snprintf(key, sizeof(key), "old-%012d", k);
        bad += idmap_find(m, key, 16) != (k < CHURN ? -1 : k);
    }
    for (int k = 0; k < CHURN; k++) {
        snprintf(key, sizeof(key), "new-%012d", k);
        bad += idmap_find(m, key, 16) != N + k;
        bad += !idmap_test_key_is(m, N + k, key, 16);
    }
    CHECK_EQ_INT(bad, 0);
    idmap_free(m);
}

TEST(idmap_memory_grows_with_keys)
{
    idmap_t *m = idmap_new(11);
    REQUIRE(m);
    size_t m0 = idmap_memory(m);
    char *big = malloc(60000);
    REQUIRE(big);
    memset(big, 'q', 60000);
    CHECK_EQ_INT(idmap_intern(m, big, 60000, NULL), 0);
    size_t m1 = idmap_memory(m);
    CHECK(m1 >= m0 + 60000);
    char key[16];
    for (int k = 0; k < 10000; k++) {
        int len = snprintf(key, sizeof(key), "%d", k);
        idmap_intern(m, key, (size_t)len, NULL);
    }
    size_t m2 = idmap_memory(m);
    CHECK(m2 > m1 + 10000 * 4); /* at least a slot per key */
    free(big);
    idmap_free(m);
}

/* ---- iset ---------------------------------------------------------------- */

TEST(iset_add_has_and_duplicates)
{
    iset_t *s = iset_new(0x5eed);
    REQUIRE(s);
    CHECK_EQ_INT(iset_count(s), 0);
    CHECK_EQ_INT(iset_users(s), 0);
    CHECK_EQ_INT(iset_has(s, 0, 0), 0);
    CHECK_EQ_INT(iset_add(s, 0, 0), 1);
    CHECK_EQ_INT(iset_add(s, 0, 0), 0);
    CHECK_EQ_INT(iset_has(s, 0, 0), 1);
    CHECK_EQ_INT(iset_has(s, 0, 1), 0);
    CHECK_EQ_INT(iset_has(s, 1, 0), 0);
    CHECK_EQ_INT(iset_add(s, 2, 7), 1);
    CHECK_EQ_INT(iset_add(s, 7, 2), 1); /* the transposed pair is another pair */
    CHECK_EQ_INT(iset_add(s, 2, 7), 0);
    CHECK_EQ_INT(iset_has(s, 2, 7), 1);
    CHECK_EQ_INT(iset_has(s, 7, 2), 1);
    CHECK_EQ_INT(iset_has(s, 2, 2), 0);
    CHECK_EQ_INT(iset_count(s), 3);
    CHECK_EQ_INT(iset_users(s), 8);
    /* The largest valid rows. */
    CHECK_EQ_INT(iset_add(s, 3, INT32_MAX - 1), 1);
    CHECK_EQ_INT(iset_has(s, 3, INT32_MAX - 1), 1);
    CHECK_EQ_INT(iset_add(s, 3, INT32_MAX - 1), 0);
    CHECK_EQ_INT(iset_count(s), 4);
    iset_free(s);
    iset_free(NULL);
}

TEST(iset_items_in_arrival_order)
{
    iset_t *s = iset_new(0x5eed);
    REQUIRE(s);
    const int64_t seq[] = { 5, 1, 9, 1, 7, 5, 0, 100000 };
    const int32_t want[] = { 5, 1, 9, 7, 0, 100000 };
    for (size_t k = 0; k < sizeof(seq) / sizeof(seq[0]); k++)
        iset_add(s, 3, seq[k]);
    int32_t n = -1;
    const int32_t *items = iset_items(s, 3, &n);
    REQUIRE(items);
    CHECK_EQ_INT(n, 6);
    for (int k = 0; k < 6 && k < n; k++)
        CHECK_EQ_INT(items[k], want[k]);
    /* Users without interactions, below, beyond and negative. */
    n = -1;
    CHECK(iset_items(s, 0, &n) == NULL);
    CHECK_EQ_INT(n, 0);
    n = -1;
    CHECK(iset_items(s, 4, &n) == NULL);
    CHECK_EQ_INT(n, 0);
    n = -1;
    CHECK(iset_items(s, 1000000, &n) == NULL);
    CHECK_EQ_INT(n, 0);
    n = -1;
    CHECK(iset_items(s, -1, &n) == NULL);
    CHECK_EQ_INT(n, 0);
    /* One user with many items keeps their order across its growth. */
    for (int k = 0; k < 100000; k++)
        CHECK_EQ_INT(iset_add(s, 1, (k * 7919) % 100000), 1);
    items = iset_items(s, 1, &n);
    REQUIRE(items);
    CHECK_EQ_INT(n, 100000);
    int bad = 0;
    for (int k = 0; k < n; k++)
        bad += items[k] != (k * 7919) % 100000;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(iset_count(s), 100006);
    iset_free(s);
}

TEST(iset_forget_user_removes_only_that_user)
{
    iset_t *s = iset_new(0x5eed);
    REQUIRE(s);
    for (int u = 0; u < 10; u++)
        for (int i = 0; i < 20; i++)
            CHECK_EQ_INT(iset_add(s, u, i * 3 + u), 1);
    CHECK_EQ_INT(iset_count(s), 200);
    CHECK_EQ_INT(iset_forget_user(s, 3), 20);
    CHECK_EQ_INT(iset_count(s), 180);
    int32_t n = -1;
    CHECK(iset_items(s, 3, &n) == NULL);
    CHECK_EQ_INT(n, 0);
    int bad = 0;
    for (int u = 0; u < 10; u++)
        for (int i = 0; i < 20; i++)
            bad += iset_has(s, u, i * 3 + u) != (u != 3);
    CHECK_EQ_INT(bad, 0);
    for (int u = 0; u < 10; u++) {
        if (u == 3)
            continue;
        const int32_t *items = iset_items(s, u, &n);
        CHECK_EQ_INT(n, 20);
        for (int k = 0; items && k < n; k++)
            bad += items[k] != k * 3 + u;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(iset_users(s), 10); /* rows never shrink */

    /* Forgetting again, an unknown, a negative and a far user: nothing. */
    CHECK_EQ_INT(iset_forget_user(s, 3), 0);
    CHECK_EQ_INT(iset_forget_user(s, 10), 0);
    CHECK_EQ_INT(iset_forget_user(s, 1 << 30), 0);
    CHECK_EQ_INT(iset_forget_user(s, -1), 0);
    CHECK_EQ_INT(iset_count(s), 180);

    /* Re-adding after a forget starts a fresh list. */
    CHECK_EQ_INT(iset_add(s, 3, 12), 1);
    CHECK_EQ_INT(iset_add(s, 3, 9), 1); /* was 3's item 2 before the forget */
    CHECK_EQ_INT(iset_add(s, 3, 12), 0);
    const int32_t *items = iset_items(s, 3, &n);
    CHECK_EQ_INT(n, 2);
    if (items && n == 2) {
        CHECK_EQ_INT(items[0], 12);
        CHECK_EQ_INT(items[1], 9);
    }
    CHECK_EQ_INT(iset_count(s), 182);

    /* Forget everyone. */
    for (int u = 0; u < 10; u++)
        iset_forget_user(s, u);
    CHECK_EQ_INT(iset_count(s), 0);
    for (int u = 0; u < 10; u++)
        for (int i = 0; i < 70; i++)
            bad += iset_has(s, u, i);
    CHECK_EQ_INT(bad, 0);
    iset_free(s);
}

TEST(iset_rejects_invalid_rows)
{
    iset_t *s = iset_new(0x5eed);
    REQUIRE(s);
    const int64_t badv[] = { -1, INT32_MIN, INT32_MAX, (int64_t)INT32_MAX + 1,
                             (int64_t)UINT32_MAX, INT64_MAX, INT64_MIN };
    int n = (int)(sizeof(badv) / sizeof(badv[0]));
    for (int k = 0; k < n; k++) {
        CHECK_EQ_INT(iset_add(s, badv[k], 0), -EINVAL);
        CHECK_EQ_INT(iset_add(s, 0, badv[k]), -EINVAL);
        CHECK_EQ_INT(iset_add(s, badv[k], badv[k]), -EINVAL);
        CHECK_EQ_INT(iset_has(s, badv[k], 0), 0);
        CHECK_EQ_INT(iset_has(s, 0, badv[k]), 0);
    }
    CHECK_EQ_INT(iset_count(s), 0);
    CHECK_EQ_INT(iset_users(s), 0);
    /* An invalid item does not alias a valid pair: (0, 2^32 + 5) is not
     * (1, 5) once packed into 64 bits. */
    CHECK_EQ_INT(iset_add(s, 1, 5), 1);
    CHECK_EQ_INT(iset_has(s, 0, ((int64_t)1 << 32) + 5), 0);
    CHECK_EQ_INT(iset_add(s, 0, ((int64_t)1 << 32) + 5), -EINVAL);
    CHECK_EQ_INT(iset_count(s), 1);
    iset_free(s);
}

/*
 * 300000 seeded random adds, membership tests and forgets over 2000 users
 * x 5000 items, against a reference (a bitmap for membership and per-user
 * arrays for order). Each result and the count are compared as they come;
 * every 50000 operations every user's list is compared in full.
 */
TEST(iset_random_ops_against_reference)
{
    enum { U = 2000, I = 5000, OPS = 300000 };
    rng_t rng;
    rng_init_stream(&rng, 4, RNG_TEST, 0x15e7, 0);
    iset_t *s = iset_new(0x5eed);
    unsigned char *bits = calloc((size_t)U * I / 8 + 1, 1);
    int32_t **list = calloc(U, sizeof(*list));
    int32_t *len = calloc(U, sizeof(*len)), *cap = calloc(U, sizeof(*cap));
    REQUIRE(s && bits && list && len && cap);
    int64_t count = 0, users = 0;
    int bad = 0;
    size_t mem_prev = iset_memory(s);
    for (int op = 0; op < OPS && bad < 20; op++) {
        /* Skewed users (a few heavy ones), uniform items. */
        uint32_t u = rng_below(&rng, 2) ? rng_below(&rng, 50) : rng_below(&rng, U);
        uint32_t i = rng_below(&rng, I);
        size_t bit = (size_t)u * I + i;
        int in = bits[bit / 8] >> (bit % 8) & 1;
        uint32_t what = rng_below(&rng, 1000);
        if (what < 700) {
            int got = iset_add(s, u, i);
            if (got != !in) {
                test_fail(__FILE__, __LINE__, "op %d: add (%u, %u): %d", op, u, i, got);
                bad++;
            }
            if (!in) {
                bits[bit / 8] |= (unsigned char)(1u << (bit % 8));
                if (len[u] == cap[u]) {
                    cap[u] = cap[u] ? 2 * cap[u] : 8;
                    list[u] = realloc(list[u], (size_t)cap[u] * sizeof(**list));
                    REQUIRE(list[u]);
                }
                list[u][len[u]++] = (int32_t)i;
                count++;
                if (u + 1 > users)
                    users = u + 1;
            }
        } else if (what < 995) {
            int got = iset_has(s, u, i);
            if (got != in) {
                test_fail(__FILE__, __LINE__, "op %d: has (%u, %u): %d", op, u, i, got);
                bad++;
            }
        } else {
            int64_t got = iset_forget_user(s, u);
            if (got != len[u]) {
                test_fail(__FILE__, __LINE__, "op %d: forget %u: %lld, want %d", op, u,
                          (long long)got, len[u]);
                bad++;
            }
            for (int k = 0; k < len[u]; k++) {
                size_t b = (size_t)u * I + (size_t)list[u][k];
                bits[b / 8] &= (unsigned char)~(1u << (b % 8));
            }
            count -= len[u];
            len[u] = 0;
        }
        bad += iset_count(s) != count;
        bad += iset_users(s) != users;
        if (op % 50000 == 49999) {
            for (uint32_t v = 0; v < U; v++) {
                int32_t n = -1;
                const int32_t *items = iset_items(s, v, &n);
                bad += n != len[v] || (n > 0) != (items != NULL);
                for (int k = 0; items && k < n && k < len[v]; k++)
                    bad += items[k] != list[v][k];
            }
            size_t mem = iset_memory(s);
            CHECK(mem > 0);
            mem_prev = mem;
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(mem_prev > (size_t)count * 8); /* at least a key slot per pair */
    /* A full membership sweep at the end. */
    int64_t seen = 0;
    for (uint32_t v = 0; v < U; v++)
        for (uint32_t i = 0; i < I; i++) {
            size_t bit = (size_t)v * I + i;
            int in = bits[bit / 8] >> (bit % 8) & 1;
            bad += iset_has(s, v, i) != in;
            seen += in;
        }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(seen, iset_count(s));
    for (int v = 0; v < U; v++)
        free(list[v]);
    free(list);
    free(len);
    free(cap);
    free(bits);
    iset_free(s);
}

TEST(iset_memory_grows)
{
    iset_t *s = iset_new(0x5eed);
    REQUIRE(s);
    size_t m0 = iset_memory(s);
    CHECK(m0 > 0);
    for (int u = 0; u < 100; u++)
        for (int i = 0; i < 1000; i++)
            iset_add(s, u, i);
    size_t m1 = iset_memory(s);
    CHECK(m1 >= m0 + 100000 * (8 + 4)); /* a slot and an item per pair */
    /* Forgetting frees the user's item arrays. */
    for (int u = 0; u < 100; u++)
        iset_forget_user(s, u);
    CHECK(iset_memory(s) < m1);
    iset_free(s);
}
