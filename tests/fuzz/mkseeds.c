/*
 * mkseeds: writes the seeds of the snapshot, checkpoint and embfile fuzz
 * targets with the project's own writers (snapshot_write, state_save, the
 * checkpoint writer, embfile_write), plus near-misses of them, into
 * CORPUS/snapshot/, CORPUS/checkpoint/ and CORPUS/embfile/. The output is
 * the same on every run (fixed times), so the committed seeds change only
 * when the formats do.
 *   build/fuzz-mkseeds tests/fuzz/corpus        (make fuzz-seeds)
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/staging.h"
#include "daemon/state.h"
#include "io/buf.h"
#include "io/checkpoint.h"
#include "io/crc32c.h"
#include "io/embfile.h"
#include "io/fsutil.h"
#include "io/snapshot.h"

#define MKSEEDS_TIME 1700000000000ull

static const char *mkseeds_corpus;
static char mkseeds_tmp[] = "/tmp/derrd-mkseeds-XXXXXX";

static void mkseeds_die(const char *what, const char *why)
{
    fprintf(stderr, "mkseeds: %s: %s\n", what, why);
    exit(1);
}

static void mkseeds_put(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s/%s", mkseeds_corpus, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        mkseeds_die(path, strerror(errno));
    printf("%s (%zu bytes)\n", path, len);
}

static unsigned char *mkseeds_read(const char *path, size_t *len)
{
    unsigned char *data;
    char err[512];
    if (fsutil_read_all(path, 1 << 24, &data, len, err, sizeof(err)) < 0)
        mkseeds_die(path, err);
    return data;
}

/* A file and two near-misses: cut short, and one bit flipped at flip. */
static void mkseeds_put_family(const char *target, const char *name, const unsigned char *f,
                               size_t len, size_t flip)
{
    char n[256];
    mkseeds_put(target, name, f, len);
    snprintf(n, sizeof(n), "bad-truncated-%s", name);
    mkseeds_put(target, n, f, len - 7);
    unsigned char *b = malloc(len);
    if (!b)
        mkseeds_die("flip", "out of memory");
    memcpy(b, f, len);
    b[flip] ^= 0x10;
    snprintf(n, sizeof(n), "bad-bitflip-%s", name);
    mkseeds_put(target, n, b, len);
    free(b);
}

/* ---- snapshots --------------------------------------------------------------- */

/* The fuzz_snapshot recipe of a snapshot file: its section table and its
 * payload (see tests/fuzz/fuzz_snapshot.c). */
static void mkseeds_recipe(const char *name, const unsigned char *f, const char *path)
{
    snapshot_t *s;
    char err[512];
    if (snapshot_open(path, &s, err, sizeof(err)) < 0)
        mkseeds_die(path, err);
    size_t plen;
    const unsigned char *p = snapshot__payload(s, &plen);
    uint32_t nsec = buf_load_u32(f + 20);
    buf_t b;
    buf_init(&b);
    unsigned char n = (unsigned char)(nsec - 1);
    buf_put(&b, &n, 1);
    uint64_t end = 0;
    for (uint32_t k = 0; k < nsec; k++) {
        const unsigned char *e = f + 64 + 24 * k;
        uint64_t off = buf_load_u64(e + 8), len = buf_load_u64(e + 16);
        unsigned char pad = (unsigned char)(off - end);
        if (pad && off % 64 == 0)
            pad = 0x40;
        buf_put_u32(&b, buf_load_u32(e));
        buf_put_u32(&b, (uint32_t)len);
        buf_put(&b, &pad, 1);
        end = off + len;
    }
    for (uint32_t k = 0; k < nsec; k++) {
        const unsigned char *e = f + 64 + 24 * k;
        buf_put(&b, p + buf_load_u64(e + 8), buf_load_u64(e + 16));
    }
    if (b.err)
        mkseeds_die(name, "out of memory");
    mkseeds_put("snapshot", name, b.data, b.len);
    buf_close(&b);
    snapshot_free(s);
}

/* The file, its near-misses and, when recipe is set, its recipe form. */
static void mkseeds_snapshot(const char *name, const snapshot_desc_t *d, int recipe)
{
    char path[4096], err[512], rname[256];
    snprintf(path, sizeof(path), "%s/%s", mkseeds_tmp, name);
    if (snapshot_write(path, d, 3, err, sizeof(err)) < 0)
        mkseeds_die(path, err);
    size_t len;
    unsigned char *f = mkseeds_read(path, &len);
    mkseeds_put_family("snapshot", name, f, len, len - 5);
    snprintf(rname, sizeof(rname), "recipe-%.*s", (int)(strlen(name) - 6), name);
    if (recipe)
        mkseeds_recipe(rname, f, path);
    free(f);
    unlink(path);
}

static void mkseeds_snapshots(void)
{
    /* 3 users (one erased), 5 items, dim 4: the usual shape, small. */
    float ue[3 * 4], ie[5 * 4];
    for (int k = 0; k < 12; k++)
        ue[k] = 0.25f * (float)(k % 5) - 0.5f;
    for (int k = 0; k < 20; k++)
        ie[k] = 0.125f * (float)(k % 7) - 0.375f;
    const char *uid[3] = { "u1", "", "user-three" };
    const uint16_t ulen[3] = { 2, 0, 10 };
    const char *iid[5] = { "i1", "i2", "item-3", "i4", "i5" };
    const uint16_t ilen[5] = { 2, 2, 6, 2, 2 };
    const snapshot_pos_t pos[2] = { { 0, 1234 }, { 3, 99 } };
    snapshot_desc_t d = {
        .version = 7, .created_ms = MKSEEDS_TIME, .teacher_version = 2, .round = 7, .dim = 4,
        .n_users = 3, .n_items = 5, .user_emb = ue, .item_emb = ie, .user_ids = uid,
        .user_id_len = ulen, .item_ids = iid, .item_id_len = ilen, .topic = "events",
        .pos = pos, .n_pos = 2,
        .quality = { 0.5, 0.25, 0.625, 0.3125, 100 },
    };
    mkseeds_snapshot("small.dsnap", &d, 1);

    /* dim 9 (a tail past the 8-wide sums), UTF-8 ids, no offsets. */
    float ue9[2 * 9], ie9[3 * 9];
    for (int k = 0; k < 18; k++)
        ue9[k] = (float)(k % 3) - 1.0f;
    for (int k = 0; k < 27; k++)
        ie9[k] = 0.5f * (float)(k % 4);
    const char *uid9[2] = { "ユーザー", "u2" };
    const uint16_t ulen9[2] = { 12, 2 };
    const char *iid9[3] = { "élément", "€", "i3" };
    const uint16_t ilen9[3] = { 8, 3, 2 };
    snapshot_desc_t d9 = {
        .version = 8, .created_ms = MKSEEDS_TIME + 1, .dim = 9, .n_users = 2, .n_items = 3,
        .user_emb = ue9, .item_emb = ie9, .user_ids = uid9, .user_id_len = ulen9,
        .item_ids = iid9, .item_id_len = ilen9, .topic = "t",
        .quality = { NAN, NAN, NAN, NAN, 0 },
    };
    mkseeds_snapshot("dim9.dsnap", &d9, 1);

    /* A payload over 16 times its frame and over 1 MiB (dim 4096, zeros):
     * the reader's output buffer must grow while it inflates. */
    static float zeros[101 * 4096];
    const char *zid[101];
    uint16_t zlen[101];
    static char znames[101][16];
    for (int k = 0; k < 101; k++) {
        snprintf(znames[k], sizeof(znames[k]), "z%d", k);
        zid[k] = znames[k];
        zlen[k] = (uint16_t)strlen(znames[k]);
    }
    snapshot_desc_t dz = {
        .version = 9, .created_ms = MKSEEDS_TIME, .dim = 4096, .n_users = 1, .n_items = 100,
        .user_emb = zeros, .item_emb = zeros + 4096, .user_ids = zid, .user_id_len = zlen,
        .item_ids = zid + 1, .item_id_len = zlen + 1, .topic = "events",
        .quality = { NAN, NAN, NAN, NAN, 0 },
    };
    mkseeds_snapshot("compressible.dsnap", &dz, 0); /* its recipe: 1.6 MB */

    /* No users, no items, no topic. */
    snapshot_desc_t d0 = { .version = 1, .created_ms = MKSEEDS_TIME, .dim = 20,
                           .quality = { NAN, NAN, NAN, NAN, 0 } };
    mkseeds_snapshot("empty.dsnap", &d0, 1);
}

/* ---- checkpoints ----------------------------------------------------------- */

/* Fixes the creation time of a checkpoint file (state_save uses the clock)
 * and its header CRC. */
static void mkseeds_ckpt_fix_time(unsigned char *f)
{
    uint32_t n = buf_load_u32(f + 12);
    size_t hlen = 32 + 24 * (size_t)n + 4;
    buf_store_u64(f + 24, MKSEEDS_TIME);
    buf_store_u32(f + hlen - 4, crc32c_update(0, f, hlen - 4));
}

static int mkseeds_model_section(void *ud, checkpoint_writer_t *w)
{
    (void)ud;
    buf_t *b = checkpoint_writer_section(w, CKPT_MODELS);
    if (!b)
        return -EINVAL;
    for (uint32_t k = 0; k < 16; k++)
        buf_put_u32(b, k * 0x01010101u);
    return 0;
}

static void mkseeds_add(staging_batch_t *b, staged_op_t op, int32_t part, int64_t off,
                        const char *u, const char *i)
{
    if (staging_batch_add(b, op, part, off, u, u ? strlen(u) : 0, i, i ? strlen(i) : 0))
        mkseeds_die("staging", "out of memory");
}

static void mkseeds_checkpoints(void)
{
    char err[512], path[4096];
    size_t len;

    /* A daemon's state: adds, a duplicate, a skipped event, a forget, three
     * partitions, and one model section. */
    state_t st;
    if (state_init(&st, "events") < 0)
        mkseeds_die("state", "out of memory");
    staging_batch_t *b = staging_batch_new();
    if (!b)
        mkseeds_die("staging", "out of memory");
    mkseeds_add(b, STAGED_ADD, 0, 10, "u1", "i1");
    mkseeds_add(b, STAGED_ADD, 0, 11, "u1", "i2");
    mkseeds_add(b, STAGED_ADD, 1, 5, "u2", "i1");
    mkseeds_add(b, STAGED_ADD, 0, 12, "u1", "i1");
    mkseeds_add(b, STAGED_SKIP, 2, 7, NULL, NULL);
    mkseeds_add(b, STAGED_ADD, 1, 6, "alice", "i3");
    mkseeds_add(b, STAGED_FORGET, 1, 7, "alice", NULL);
    mkseeds_add(b, STAGED_ADD, 2, 8, "ユーザー", "élément");
    if (state_apply(&st, b) < 0)
        mkseeds_die("state_apply", "failed");
    staging_batch_free(b);
    if (state_save(&st, mkseeds_tmp, 1, mkseeds_model_section, NULL, err, sizeof(err)) < 0)
        mkseeds_die("state_save", err);
    checkpoint_path(mkseeds_tmp, st.seq, path, sizeof(path));
    state_close(&st);
    unsigned char *f = mkseeds_read(path, &len);
    mkseeds_ckpt_fix_time(f);
    mkseeds_put_family("checkpoint", "state.dckpt", f, len, len - 3);
    free(f);
    unlink(path);

    /* No sections; a zero-length section beside one no reader knows. */
    for (int k = 0; k < 2; k++) {
        checkpoint_writer_t *w = checkpoint_writer_new();
        if (!w)
            mkseeds_die("checkpoint", "out of memory");
        if (k == 1) {
            if (!checkpoint_writer_section(w, CKPT_META))
                mkseeds_die("checkpoint", "section");
            buf_t *s = checkpoint_writer_section(w, 77);
            if (!s)
                mkseeds_die("checkpoint", "section");
            buf_put(s, "unknown section", 15);
        }
        if (checkpoint_writer_commit(w, mkseeds_tmp, 5, MKSEEDS_TIME, 0, err, sizeof(err)) < 0)
            mkseeds_die("checkpoint_writer_commit", err);
        checkpoint_writer_free(w);
        checkpoint_path(mkseeds_tmp, 5, path, sizeof(path));
        f = mkseeds_read(path, &len);
        mkseeds_put("checkpoint", k ? "unknown-section.dckpt" : "empty.dckpt", f, len);
        free(f);
        unlink(path);
    }
}

/* ---- embedding files ---------------------------------------------------------- */

/* Writes a table with embfile_write and returns the file (malloc'd). */
static unsigned char *mkseeds_emb_file(uint32_t dim, uint32_t nu, uint32_t ni, const float *rows,
                                       size_t *len)
{
    char path[4096], err[512];
    snprintf(path, sizeof(path), "%s/t.emb", mkseeds_tmp);
    if (embfile_write(path, dim, nu, ni, rows, err, sizeof(err)) < 0)
        mkseeds_die(path, err);
    unsigned char *f = mkseeds_read(path, len);
    unlink(path);
    return f;
}

/* A writer's file changed at one spot, checksums made right again: gets a
 * near-miss past both CRCs to the rule it breaks. */
static void mkseeds_emb_put_fixed(const char *name, unsigned char *f, size_t len)
{
    buf_store_u32(f + 32, crc32c_update(0, f + 40, len - 40));
    buf_store_u32(f + 36, crc32c_update(0, f, 36));
    mkseeds_put("embfile", name, f, len);
}

static void mkseeds_embfiles(void)
{
    /* 3 users, 5 items, dim 4: the usual shape, small. */
    float rows[8 * 4];
    for (int k = 0; k < 32; k++)
        rows[k] = 0.25f * (float)(k % 5) - 0.5f;
    size_t len;
    unsigned char *f = mkseeds_emb_file(4, 3, 5, rows, &len);
    mkseeds_put_family("embfile", "small.emb", f, len, len - 5);

    /* Near-misses with valid checksums: a NaN, an infinity, a version 2,
     * a byte after the payload, sizes that disagree. */
    buf_store_u32(f + 40 + 4 * 13, 0x7fc00000u);
    mkseeds_emb_put_fixed("bad-nan.emb", f, len);
    buf_store_u32(f + 40 + 4 * 13, 0xff800000u);
    mkseeds_emb_put_fixed("bad-inf.emb", f, len);
    buf_store_u32(f + 40 + 4 * 13, 0);
    buf_store_u32(f + 8, 2);
    mkseeds_emb_put_fixed("bad-version.emb", f, len);
    buf_store_u32(f + 8, 1);
    buf_store_u32(f + 20, 4);
    mkseeds_emb_put_fixed("bad-sizes.emb", f, len);
    free(f);
    f = mkseeds_emb_file(4, 3, 5, rows, &len);
    unsigned char *longer = malloc(len + 1);
    if (!longer)
        mkseeds_die("embfile", "out of memory");
    memcpy(longer, f, len);
    longer[len] = 0;
    mkseeds_emb_put_fixed("bad-trailing-byte.emb", longer, len + 1);
    free(longer);
    free(f);

    /* docs/EMBFILE.md's example: dim 2, user [1, -2], item [0.5, 3]. */
    const float ex[4] = { 1.0f, -2.0f, 0.5f, 3.0f };
    f = mkseeds_emb_file(2, 1, 1, ex, &len);
    mkseeds_put("embfile", "doc-example.emb", f, len);
    free(f);

    /* Edge values: -0, subnormals, the largest finite floats; dim 1, no
     * items. */
    const float edge[6] = { -0.0f, 1e-45f, -1e-40f, 3.4028235e38f, -3.4028235e38f, 1.0f };
    f = mkseeds_emb_file(1, 6, 0, edge, &len);
    mkseeds_put("embfile", "edge-values.emb", f, len);
    free(f);

    /* No rows at all (a header alone); and dim 65536, the largest. */
    f = mkseeds_emb_file(65536, 0, 0, rows, &len);
    mkseeds_put("embfile", "no-rows-dim-max.emb", f, len);
    free(f);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-mkseeds CORPUS_DIR\n");
        return 2;
    }
    mkseeds_corpus = argv[1];
    if (!mkdtemp(mkseeds_tmp))
        mkseeds_die(mkseeds_tmp, strerror(errno));
    mkseeds_snapshots();
    mkseeds_checkpoints();
    mkseeds_embfiles();
    rmdir(mkseeds_tmp);
    return 0;
}
