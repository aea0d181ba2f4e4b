/*
 * checkpoint: the daemon's crash-safe state file (docs/CHECKPOINT.md). A
 * checkpoint is a versioned header with a section table and a checksum, then
 * the sections, each with its own CRC-32C. The container knows nothing of
 * what the sections mean; the daemon encodes them with io/buf.h.
 *
 * Files are named <dir>/checkpoint-<seq>.dckpt with a 20-digit sequence
 * number and written atomically (temp file, fsync, rename, fsync dir), so a
 * crash at any instant leaves every older checkpoint intact. A reader
 * verifies the whole file before it hands out any section.
 *
 * A writer or a loaded checkpoint belongs to one thread at a time.
 */
#ifndef DERRD_CHECKPOINT_H
#define DERRD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "io/buf.h"

/* Section ids. Readers skip sections they do not know, so new ones can be
 * added without a format version change; 16 and up are kept for models. */
enum {
    CKPT_META = 1,         /* counters and times */
    CKPT_USERS = 2,        /* user id table */
    CKPT_ITEMS = 3,        /* item id table */
    CKPT_INTERACTIONS = 4, /* (user row, item row) set */
    CKPT_OFFSETS = 5,      /* next Kafka offset per topic partition */
    CKPT_MODELS = 16,      /* first id for model sections */
};

#define CHECKPOINT_MAX_SECTIONS 64

typedef struct checkpoint_writer checkpoint_writer_t;

checkpoint_writer_t *checkpoint_writer_new(void);
void checkpoint_writer_free(checkpoint_writer_t *w);

/* Starts section id and returns the buffer to encode it into; the section
 * ends at the next checkpoint_writer_section() or checkpoint_writer_commit().
 * Returns NULL when the id repeats or the table is full. */
buf_t *checkpoint_writer_section(checkpoint_writer_t *w, uint32_t id);

/* Writes <dir>/checkpoint-<seq>.dckpt atomically and then deletes all but the
 * `keep` newest checkpoints in dir. Returns 0 or a negative errno with a
 * reason in err (a failed delete of an old file is not an error). */
int checkpoint_writer_commit(checkpoint_writer_t *w, const char *dir, uint64_t seq,
                             uint64_t created_ms, int keep, char *err, size_t errlen);

typedef struct checkpoint checkpoint_t;

/* Reads and verifies a checkpoint file. Returns 0 with *out set, -EBADMSG
 * with the reason for a corrupt or torn file, or another negative errno. */
int checkpoint_open(const char *path, checkpoint_t **out, char *err, size_t errlen);

/* The same checks over a file's bytes data[0..len) held in memory, which
 * the checkpoint copies (data is not kept); name is what error messages
 * call them. Returns 0 with *out set, -EBADMSG with the reason, or -ENOMEM. */
int checkpoint_open_mem(const char *name, const void *data, size_t len, checkpoint_t **out,
                        char *err, size_t errlen);
void checkpoint_free(checkpoint_t *ck);

uint64_t checkpoint_seq(const checkpoint_t *ck);
uint64_t checkpoint_created_ms(const checkpoint_t *ck);

/* The bytes of section id (owned by ck). Returns 0, or -ENOENT. */
int checkpoint_section(const checkpoint_t *ck, uint32_t id, const unsigned char **data,
                       size_t *len);

/* The sequence numbers of the checkpoint files in dir, newest first, in a
 * malloc'd array (*seqs, *n; caller frees). A missing dir is an empty list. */
int checkpoint_list(const char *dir, uint64_t **seqs, int *n);

/* Formats the path of checkpoint seq in dir. */
void checkpoint_path(const char *dir, uint64_t seq, char *buf, size_t cap);

/* Removes temp files a crash left in dir (only files named like a
 * checkpoint's temp file). Returns how many were removed. */
int checkpoint_sweep_temp(const char *dir);

#endif
