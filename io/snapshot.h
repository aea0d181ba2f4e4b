/*
 * snapshot: what serving pulls: the student model (user and item embeddings),
 * its external id tables, and metadata, in a self-describing, checksummed,
 * zstd-compressed file (docs/SNAPSHOT.md has the byte layout, enough to write
 * a reader in another language). zstd is confined to io/snapshot.c.
 *
 * Writing: snapshot_publish() writes <dir>/student-<version>.dsnap atomically
 * (temp, fsync, rename, fsync dir), then replaces the <dir>/latest pointer by
 * rename, then deletes all but the newest `keep` snapshots. A reader of the
 * directory sees a complete old snapshot or a complete new one, never a torn
 * one.
 *
 * Reading: snapshot_open() reads and verifies the whole file (header
 * checksum, the CRC-32C of the compressed bytes, the zstd frame's content
 * checksum, the CRC-32C of the payload, every count and length against the
 * bytes present, unique ids, finite embeddings) before it returns; then
 * lookups and top-K are plain memory reads. A snapshot_t is immutable after
 * open: any number of threads may read it at once.
 */
#ifndef DERRD_SNAPSHOT_H
#define DERRD_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#define SNAPSHOT_MAX_PARTITIONS 4096

typedef struct {
    int32_t partition;
    int64_t offset; /* next offset: the snapshot covers every event before it */
} snapshot_pos_t;

/* The round's quality on its held-out sample; NaN when not measured. */
typedef struct {
    double hr10, ndcg10;                 /* student */
    double teacher_hr10, teacher_ndcg10; /* teacher, same sample */
    int64_t eval_users;                  /* users in the sample */
} snapshot_quality_t;

/* Everything a snapshot holds. For writing, the caller fills it (nothing is
 * taken over); for reading, snapshot_desc() returns one whose pointers are
 * owned by the snapshot_t. */
typedef struct {
    uint64_t version;         /* increasing; the file name and the HTTP ETag */
    uint64_t created_ms;      /* Unix ms */
    uint64_t teacher_version;
    uint64_t round;
    int32_t dim;
    int64_t n_users, n_items;
    const float *user_emb;    /* (n_users, dim), row-major */
    const float *item_emb;    /* (n_items, dim) */
    /* External ids by row: id bytes and lengths (length 0 = no id: an erased
     * user; such rows are never recommended for and never looked up). */
    const char *const *user_ids;
    const uint16_t *user_id_len;
    const char *const *item_ids;
    const uint16_t *item_id_len;
    const char *topic;        /* the Kafka topic the offsets belong to */
    const snapshot_pos_t *pos;
    int32_t n_pos;
    snapshot_quality_t quality;
} snapshot_desc_t;

/* Writes desc to path atomically. level: zstd level (1..22; 3 is a good
 * default). Refuses (-EINVAL, nothing written) what a reader would refuse:
 * dim outside 1..4096, counts outside 0..INT32_MAX, more than
 * SNAPSHOT_MAX_PARTITIONS offsets, NaN or infinite values, a non-empty id
 * twice in one table. Returns 0 or a negative errno with a reason in err. */
int snapshot_write(const char *path, const snapshot_desc_t *desc, int level, char *err,
                   size_t errlen);

/* Publishes desc into dir (created if missing) as student-<version>.dsnap,
 * points dir/latest (a relative symlink) at it, and keeps the newest `keep`
 * snapshots (keep >= 1), never deleting the one latest points to. Returns 0
 * or a negative errno with a reason in err; on failure the previous latest
 * stays. */
int snapshot_publish(const char *dir, const snapshot_desc_t *desc, int level, int keep,
                     char *err, size_t errlen);

/* The file name of version in dir, and of the latest pointer. */
void snapshot_path(const char *dir, uint64_t version, char *buf, size_t cap);
void snapshot_latest_path(const char *dir, char *buf, size_t cap);

/* The version dir/latest points to and its file's modification time (Unix
 * ms). Returns 0, -ENOENT when there is no latest (or no such file), or
 * -EBADMSG when latest names something that is not a snapshot. */
int snapshot_latest(const char *dir, uint64_t *version, uint64_t *mtime_ms);

/* Deletes what a crash in the middle of snapshot_publish() leaves in dir:
 * temp files of snapshots and of the latest link (never a finished
 * snapshot). Call before publishing into dir. Returns how many it deleted. */
int snapshot_sweep_temp(const char *dir);

typedef struct snapshot snapshot_t;

/* Opens and verifies a snapshot file (or dir/latest when path is a
 * directory; resolved again if a publish prunes its target meanwhile).
 * Returns 0 with *out set, -EBADMSG with the reason for a corrupt or
 * truncated file, -ENOENT when there is no file (or no latest yet), or
 * another negative errno. */
int snapshot_open(const char *path, snapshot_t **out, char *err, size_t errlen);

/* The same checks over a file's bytes data[0..len) held in memory (not
 * kept: the snapshot owns its own copy of what it needs); name is what error
 * messages call them. Returns 0 with *out set, -EBADMSG with the reason, or
 * -ENOMEM. */
int snapshot_open_mem(const char *name, const void *data, size_t len, snapshot_t **out,
                      char *err, size_t errlen);
void snapshot_free(snapshot_t *s);

/* The snapshot's contents, owned by s. */
const snapshot_desc_t *snapshot_desc(const snapshot_t *s);

/* The row of an external id, or -1. O(1) expected. */
int64_t snapshot_user_row(const snapshot_t *s, const char *id, size_t len);
int64_t snapshot_item_row(const snapshot_t *s, const char *id, size_t len);

/* The k highest-scoring items for user row u (score = dot product), best
 * first, ties to the lower row, leaving out the item rows in
 * exclude[0..n_exclude) (any order; rows out of range are ignored) and items
 * with no id. Fills items[] and scores[] (k entries each) and returns how
 * many were found (< k when there are not enough items), -EINVAL for a row
 * out of range or without an id (erased) or k < 0, or -ENOMEM (only with
 * over 256 exclusions). Thread-safe; allocates nothing otherwise. */
int snapshot_recommend(const snapshot_t *s, int64_t u, int k, const int64_t *exclude,
                       int n_exclude, int64_t *items, float *scores);

/* Sizes of the file s was read from: the file's bytes and the decompressed
 * payload's. */
typedef struct {
    uint64_t file_bytes, raw_bytes;
} snapshot_size_t;
void snapshot_size(const snapshot_t *s, snapshot_size_t *out);

/* Internals, for tests that craft files: writes an arbitrary payload (no
 * checks on its contents) with a valid header, section table and zstd frame;
 * and the decompressed payload of an open snapshot (owned by s). */
typedef struct {
    uint32_t id;
    uint64_t off, len; /* in the payload */
} snapshot__section_t;
int snapshot__write_raw(const char *path, uint64_t version, uint64_t created_ms,
                        const void *payload, size_t len, const snapshot__section_t *sec,
                        int nsec, int level, char *err, size_t errlen);
const unsigned char *snapshot__payload(const snapshot_t *s, size_t *len);

#endif
