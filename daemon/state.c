/*
 * The daemon's durable state and its checkpoint sections. Section layouts
 * (all little-endian; docs/CHECKPOINT.md):
 *
 *   META          u64 applied, duplicates, forgotten, skipped
 *   USERS, ITEMS  u64 rows, then per row a u16 length and the id bytes
 *                 (length 0 = a row whose id was erased)
 *   INTERACTIONS  u64 user rows, u64 total, then per user row a u32 count
 *                 and that many u32 item rows, in order of arrival
 *   OFFSETS       u16 topic length, topic, u32 n, n x (u32 partition,
 *                 u64 next offset)
 */
#include "daemon/state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "io/checkpoint.h"
#include "io/event.h"
#include "io/log.h"
#include "model/rng.h"

/* Hash seeds unknown outside this process, so that ids and pairs sent as
 * events cannot be crafted to share probe chains (rows, and everything
 * derrd writes, do not depend on them). */
static void state__seeds(uint64_t seeds[3])
{
    if (getrandom(seeds, 3 * sizeof(uint64_t), GRND_NONBLOCK) == (ssize_t)(3 * sizeof(uint64_t)))
        return;
    /* No entropy yet (early boot): the clock and an address, mixed by the
     * model's generator, better than a constant. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    rng_t g;
    rng_init(&g, (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)(uintptr_t)seeds);
    for (int k = 0; k < 3; k++)
        seeds[k] = rng_next(&g);
}

int state_init(state_t *st, const char *topic)
{
    *st = (state_t){ 0 };
    uint64_t seeds[3];
    state__seeds(seeds);
    st->users = idmap_new(seeds[0]);
    st->items = idmap_new(seeds[1]);
    st->inter = iset_new(seeds[2]);
    st->topic = strdup(topic);
    if (!st->users || !st->items || !st->inter || !st->topic) {
        state_close(st);
        return -ENOMEM;
    }
    return 0;
}

void state_close(state_t *st)
{
    idmap_free(st->users);
    idmap_free(st->items);
    iset_free(st->inter);
    free(st->topic);
    free(st->pos);
    *st = (state_t){ 0 };
}

static kafka_pos_t *state__pos_find(const state_t *st, int32_t partition)
{
    int lo = 0, hi = st->n_pos;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (st->pos[mid].partition < partition)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->n_pos && st->pos[lo].partition == partition ? &st->pos[lo] : NULL;
}

int64_t state_position(const state_t *st, int32_t partition)
{
    const kafka_pos_t *p = state__pos_find(st, partition);
    return p ? p->offset : -1;
}

static int state__pos_advance(state_t *st, int32_t partition, int64_t next)
{
    kafka_pos_t *p = state__pos_find(st, partition);
    if (p) {
        if (next > p->offset)
            p->offset = next;
        return 0;
    }
    if (st->n_pos == st->pos_cap) {
        int cap = st->pos_cap ? st->pos_cap * 2 : 16;
        kafka_pos_t *pos = realloc(st->pos, (size_t)cap * sizeof(*pos));
        if (!pos)
            return -ENOMEM;
        st->pos = pos;
        st->pos_cap = cap;
    }
    int k = st->n_pos++;
    while (k > 0 && st->pos[k - 1].partition > partition) {
        st->pos[k] = st->pos[k - 1];
        k--;
    }
    st->pos[k] = (kafka_pos_t){ partition, next };
    return 0;
}

int state_apply(state_t *st, const staging_batch_t *b)
{
    for (uint32_t k = 0; k < b->n; k++) {
        const staged_event_t *e = &b->ev[k];
        const char *user = staging_event_user(b, e), *item = staging_event_item(b, e);
        if (e->op == STAGED_ADD) {
            int64_t u = idmap_intern(st->users, user, e->user_len, NULL);
            int64_t i = u < 0 ? u : idmap_intern(st->items, item, e->item_len, NULL);
            int rc = i < 0 ? (int)i : iset_add(st->inter, u, i);
            if (rc < 0)
                return rc;
            st->applied += rc == 1;
            st->duplicates += rc == 0;
        } else if (e->op == STAGED_FORGET) {
            int64_t u = idmap_find(st->users, user, e->user_len);
            if (u >= 0) {
                iset_forget_user(st->inter, u);
                idmap_erase(st->users, user, e->user_len);
            }
            st->forgotten++;
        } else {
            st->skipped++;
        }
        if (state__pos_advance(st, e->partition, e->offset + 1))
            return -ENOMEM;
        st->dirty = 1;
    }
    return 0;
}

/* ---- checkpoint sections --------------------------------------------------------- */

static void state__put_ids(buf_t *b, const idmap_t *m)
{
    int64_t rows = idmap_rows(m);
    buf_put_u64(b, (uint64_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        size_t len;
        const char *key = idmap_key(m, r, &len);
        buf_put_str16(b, key, len);
    }
}

int state_save(state_t *st, const char *dir, int keep, state_extra_save_fn extra, void *ud,
               char *err, size_t errlen)
{
    checkpoint_writer_t *w = checkpoint_writer_new();
    if (!w) {
        snprintf(err, errlen, "checkpoint: out of memory");
        return -ENOMEM;
    }
    buf_t *b = checkpoint_writer_section(w, CKPT_META);
    buf_put_u64(b, st->applied);
    buf_put_u64(b, st->duplicates);
    buf_put_u64(b, st->forgotten);
    buf_put_u64(b, st->skipped);

    state__put_ids(checkpoint_writer_section(w, CKPT_USERS), st->users);
    state__put_ids(checkpoint_writer_section(w, CKPT_ITEMS), st->items);

    b = checkpoint_writer_section(w, CKPT_INTERACTIONS);
    int64_t n_users = iset_users(st->inter);
    buf_put_u64(b, (uint64_t)n_users);
    buf_put_u64(b, (uint64_t)iset_count(st->inter));
    for (int64_t u = 0; u < n_users; u++) {
        int32_t n;
        const int32_t *items = iset_items(st->inter, u, &n);
        buf_put_u32(b, (uint32_t)n);
        for (int32_t k = 0; k < n; k++)
            buf_put_u32(b, (uint32_t)items[k]);
    }

    b = checkpoint_writer_section(w, CKPT_OFFSETS);
    buf_put_str16(b, st->topic, strlen(st->topic));
    buf_put_u32(b, (uint32_t)st->n_pos);
    for (int k = 0; k < st->n_pos; k++) {
        buf_put_u32(b, (uint32_t)st->pos[k].partition);
        buf_put_u64(b, (uint64_t)st->pos[k].offset);
    }

    int rc = extra ? extra(ud, w) : 0;
    if (rc < 0) {
        snprintf(err, errlen, "checkpoint: model sections: %s", strerror(-rc));
        checkpoint_writer_free(w);
        return rc;
    }
    rc = checkpoint_writer_commit(w, dir, st->seq + 1, log_wall_ms(), keep, err, errlen);
    checkpoint_writer_free(w);
    if (rc == 0) {
        st->seq++;
        st->dirty = 0;
    }
    return rc;
}

#define STATE_BAD(...)                                                         \
    do {                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        return -EBADMSG;                                                       \
    } while (0)

static int state__get_ids(const checkpoint_t *ck, uint32_t id, idmap_t *m, const char *what,
                          char *err, size_t errlen)
{
    const unsigned char *data;
    size_t len;
    if (checkpoint_section(ck, id, &data, &len))
        STATE_BAD("no %s section", what);
    cursor_t c;
    cursor_init(&c, data, len);
    uint64_t rows = cursor_u64(&c);
    if (rows > cursor_left(&c) / 2) /* every row takes at least 2 bytes */
        STATE_BAD("%s: %" PRIu64 " rows do not fit in %zu bytes", what, rows, len);
    for (uint64_t r = 0; r < rows; r++) {
        size_t klen;
        const char *key = cursor_str16(&c, &klen);
        if (c.err)
            STATE_BAD("%s: row %" PRIu64 " runs past the section", what, r);
        /* Every id held follows the events' rules, whatever file it came
         * from: one with a TAB or a newline would break --dump-state's
         * lines, and snapshots' readers. */
        char why[128];
        if (klen && event_id_check("id", key, klen, why, sizeof(why)) < 0)
            STATE_BAD("%s: row %" PRIu64 ": %s", what, r, why);
        int added = 0;
        int64_t got = klen ? idmap_intern(m, key, klen, &added) : idmap_add_hole(m);
        if (got == -ENOMEM)
            return -ENOMEM;
        if (got != (int64_t)r || (klen && !added))
            STATE_BAD("%s: row %" PRIu64 " repeats an id", what, r);
    }
    if (cursor_left(&c))
        STATE_BAD("%s: %zu bytes after the last row", what, cursor_left(&c));
    return 0;
}

int state_from_checkpoint(state_t *st, const checkpoint_t *ck, char *err, size_t errlen)
{
    const unsigned char *data;
    size_t len;
    cursor_t c;
    if (checkpoint_section(ck, CKPT_META, &data, &len))
        STATE_BAD("no meta section");
    cursor_init(&c, data, len);
    st->applied = cursor_u64(&c);
    st->duplicates = cursor_u64(&c);
    st->forgotten = cursor_u64(&c);
    st->skipped = cursor_u64(&c);
    if (c.err)
        STATE_BAD("meta section truncated");

    int rc = state__get_ids(ck, CKPT_USERS, st->users, "users", err, errlen);
    if (rc == 0)
        rc = state__get_ids(ck, CKPT_ITEMS, st->items, "items", err, errlen);
    if (rc)
        return rc;

    if (checkpoint_section(ck, CKPT_INTERACTIONS, &data, &len))
        STATE_BAD("no interactions section");
    cursor_init(&c, data, len);
    uint64_t n_users = cursor_u64(&c), total = cursor_u64(&c), seen = 0;
    int64_t user_rows = idmap_rows(st->users), item_rows = idmap_rows(st->items);
    if (n_users > (uint64_t)user_rows)
        STATE_BAD("interactions: %" PRIu64 " users, the id table has %" PRId64, n_users,
                  user_rows);
    for (uint64_t u = 0; u < n_users && !c.err; u++) {
        uint32_t n = cursor_u32(&c);
        if (n > cursor_left(&c) / 4)
            STATE_BAD("interactions: user row %" PRIu64 " runs past the section", u);
        size_t klen;
        if (n > 0 && !idmap_key(st->users, (int64_t)u, &klen))
            STATE_BAD("interactions: user row %" PRIu64 " has pairs but no id", u);
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = cursor_u32(&c);
            if ((int64_t)i >= item_rows || !idmap_key(st->items, (int64_t)i, &klen))
                STATE_BAD("interactions: item row %u of user row %" PRIu64 " has no id", i, u);
            rc = iset_add(st->inter, (int64_t)u, i);
            if (rc < 0)
                return rc;
            if (rc == 0)
                STATE_BAD("interactions: user row %" PRIu64 " lists item row %u twice", u, i);
        }
        seen += n;
    }
    if (c.err || cursor_left(&c) || seen != total)
        STATE_BAD("interactions: section holds %" PRIu64 " of %" PRIu64 " pairs, %zu bytes "
                  "left over", seen, total, cursor_left(&c));

    if (checkpoint_section(ck, CKPT_OFFSETS, &data, &len))
        STATE_BAD("no offsets section");
    cursor_init(&c, data, len);
    size_t tlen;
    const char *topic = cursor_str16(&c, &tlen);
    uint32_t n = cursor_u32(&c);
    if (c.err || n > cursor_left(&c) / 12)
        STATE_BAD("offsets section truncated");
    if (tlen != strlen(st->topic) || memcmp(topic, st->topic, tlen) != 0)
        STATE_BAD("offsets are for topic \"%.*s\", not \"%s\" (use another state dir per "
                  "topic)", (int)tlen, topic, st->topic);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t part = cursor_u32(&c);
        uint64_t off = cursor_u64(&c);
        if (part > INT32_MAX || off > INT64_MAX)
            STATE_BAD("offsets: partition %u at %" PRIu64 " out of range", part, off);
        if (state__pos_advance(st, (int32_t)part, (int64_t)off))
            return -ENOMEM;
    }
    if (cursor_left(&c))
        STATE_BAD("offsets: %zu bytes after the last entry", cursor_left(&c));
    st->seq = checkpoint_seq(ck);
    return 0;
}

int state_load(state_t *st, const char *dir, state_extra_load_fn extra, void *ud, char *err,
               size_t errlen)
{
    int swept = checkpoint_sweep_temp(dir);
    if (swept > 0)
        log_notice("checkpoint: removed %d temp files a crash left in %s", swept, dir);
    uint64_t *seqs;
    int n;
    int rc = checkpoint_list(dir, &seqs, &n);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(-rc));
        return rc;
    }
    char why[512];
    for (int k = 0; k < n; k++) {
        char path[4096];
        checkpoint_path(dir, seqs[k], path, sizeof(path));
        checkpoint_t *ck;
        rc = checkpoint_open(path, &ck, why, sizeof(why));
        if (rc == 0) {
            state_t fresh;
            rc = state_init(&fresh, st->topic);
            if (rc == 0) {
                rc = state_from_checkpoint(&fresh, ck, why, sizeof(why));
                if (rc == 0) {
                    state_close(st);
                    *st = fresh;
                    char why2[512];
                    if (extra && extra(ud, ck, why2, sizeof(why2)) < 0)
                        log_err("checkpoint: %s: models not restored (%s); they will be "
                                "trained afresh", path, why2);
                } else {
                    state_close(&fresh);
                }
            }
            checkpoint_free(ck);
        }
        if (rc == 0) {
            free(seqs);
            return 1;
        }
        if (rc == -ENOMEM) {
            snprintf(err, errlen, "%s: out of memory", path);
            free(seqs);
            return rc;
        }
        /* A torn or corrupt file: say so and fall back to an older one. */
        log_err("checkpoint: skipping %s: %s", path, why);
        snprintf(err, errlen, "no usable checkpoint in %s (newest refused: %s)", dir, why);
    }
    free(seqs);
    return n == 0 ? 0 : -EBADMSG;
}

int state_dump(const state_t *st, FILE *out)
{
    for (int64_t u = 0; u < iset_users(st->inter); u++) {
        int32_t n;
        const int32_t *items = iset_items(st->inter, u, &n);
        size_t ulen, ilen;
        const char *user = n ? idmap_key(st->users, u, &ulen) : NULL;
        for (int32_t k = 0; user && k < n; k++) {
            const char *item = idmap_key(st->items, items[k], &ilen);
            if (fprintf(out, "%.*s\t%.*s\n", (int)ulen, user, (int)ilen, item ? item : "") < 0)
                return -EIO;
        }
    }
    return fflush(out) ? -EIO : 0;
}
