/*
 * fsutil: crash-safe file replacement. A file is written to a temporary name
 * in the same directory, fsynced, renamed over the target, and the directory
 * is fsynced, so a reader sees the old file or the new one, never a torn one.
 */
#ifndef DERRD_FSUTIL_H
#define DERRD_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const void *data;
    size_t len;
} fsutil_part_t;

/* Writes the concatenation of parts[0..n) to path atomically (mode 0644).
 * Returns 0 or a negative errno, with a reason in err. */
int fsutil_write_atomic(const char *path, const fsutil_part_t *parts, int n,
                        char *err, size_t errlen);

/* Whether fsutil_write_atomic(path) can create its file: path is not a
 * directory, and its directory exists and is writable. For tools that
 * would otherwise learn it only after minutes of work. Returns 0 or a
 * negative errno, with a reason naming path in err. */
int fsutil_check_writable(const char *path, char *err, size_t errlen);

/* Reads a whole file into a malloc'd buffer (*out, *len; caller frees).
 * Files over max_len are refused with -EFBIG. Returns 0 or a negative errno,
 * with a reason in err. */
int fsutil_read_all(const char *path, size_t max_len, unsigned char **out,
                    size_t *len, char *err, size_t errlen);

/* Takes an exclusive advisory lock (flock) on dir/lock, creating it, so two
 * processes never share one state directory. Returns the fd that holds the
 * lock (keep it open; closing releases it), -EBUSY when another process
 * holds it, or another negative errno; the reason is in err. */
int fsutil_lock_dir(const char *dir, char *err, size_t errlen);

/* Parses a file name of the form <prefix><20 decimal digits><suffix> (the
 * numbered files of derrd: checkpoints, snapshots). Returns 1 with the
 * number in *n, or 0 when name has another form or the number overflows. */
int fsutil_name_number(const char *name, const char *prefix, const char *suffix, uint64_t *n);

/* qsort comparator: uint64_t, largest first. */
int fsutil_cmp_u64_desc(const void *a, const void *b);

#endif
