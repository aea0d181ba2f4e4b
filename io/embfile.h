/*
 * embfile: a model's embedding tables in one checksummed file (the teacher
 * that `derrd-train --save` writes and `--teacher` loads). The layout is in
 * docs/EMBFILE.md, so a teacher trained elsewhere can be written to it.
 *
 * All integers and floats are little-endian; float32 rows, users first.
 */
#ifndef DERRD_EMBFILE_H
#define DERRD_EMBFILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t dim;
    uint32_t n_users;
    uint32_t n_items;
    float *rows; /* ((n_users + n_items), dim), malloc'd, caller frees */
} embfile_t;

/* Writes users (n_users, dim) then items (n_items, dim) atomically.
 * Refuses (-EINVAL) dim 0 or over 65536 and non-finite values.
 * Returns 0 or a negative errno, with a reason in err. */
int embfile_write(const char *path, uint32_t dim, uint32_t n_users,
                  uint32_t n_items, const float *rows, char *err, size_t errlen);

/* Reads and verifies a file (magic, version, sizes, both checksums, finite
 * values). Returns 0, or -EBADMSG for a corrupt file and another negative
 * errno for I/O, with a reason in err; out is untouched on error. */
int embfile_read(const char *path, embfile_t *out, char *err, size_t errlen);

#endif
