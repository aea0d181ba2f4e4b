/*
 * fuzz_embfile: io/embfile.h's reader on crafted files (a teacher file is
 * handed to derrd-train --teacher, derrd-snap and the daemon's
 * teacher_file, and docs/EMBFILE.md invites writers in other languages).
 * embfile_read takes a path, so each input is written to a scratch file
 * and read from there, as it is and again with its two CRC-32Cs made right
 * (the payload's, then the header's), so mutations reach the fields the
 * checksums protect.
 *
 * The outcome is compared with a reference reader written here from
 * docs/EMBFILE.md alone ("What a reader must check"): both accept or both
 * refuse, and a refusal gives the reason the page lists for the first rule
 * broken. Of a refusal it also checks -EBADMSG (or -ENOMEM), a printable
 * reason naming the file, `out` untouched, and a short error buffer cut
 * and NUL-terminated. Of a file that reads: dim and counts from the header,
 * rows equal to the payload, and embfile_write of what was read writes the
 * same bytes back.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/buf.h"
#include "io/crc32c.h"
#include "io/embfile.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* docs/EMBFILE.md, rules 2 to 8: NULL when f[0..len) is valid, else the
 * words of the reason for the first rule it breaks. */
static const char *fuzz_emb_reference(const unsigned char *f, size_t len, char *why,
                                      size_t cap)
{
    if (len < 40) {
        snprintf(why, cap, "truncated header (%zu bytes of 40)", len);
        return why;
    }
    if (memcmp(f, "DERRDEMB", 8) != 0)
        return "not a derrd embedding file (bad magic)";
    if (crc32c_update(0, f, 36) != buf_load_u32(f + 36))
        return "header checksum mismatch";
    uint32_t version = buf_load_u32(f + 8);
    if (version != 1) {
        snprintf(why, cap, "format version %u, this build reads 1", version);
        return why;
    }
    uint64_t dim = buf_load_u32(f + 12), nu = buf_load_u32(f + 16), ni = buf_load_u32(f + 20);
    uint64_t bytes = buf_load_u64(f + 24);
    if (dim < 1 || dim > 65536 || bytes != (nu + ni) * dim * 4)
        return "inconsistent sizes";
    if (len - 40 != bytes) {
        snprintf(why, cap, "%zu payload bytes, header says %llu (truncated?)", len - 40,
                 (unsigned long long)bytes);
        return why;
    }
    if (crc32c_update(0, f + 40, len - 40) != buf_load_u32(f + 32))
        return "payload checksum mismatch";
    for (uint64_t k = 0; k < bytes / 4; k++) {
        uint32_t bits = buf_load_u32(f + 40 + 4 * k);
        if ((bits & 0x7f800000u) == 0x7f800000u) { /* exponent all ones: NaN or inf */
            snprintf(why, cap, "value %llu is not finite", (unsigned long long)k);
            return why;
        }
    }
    return NULL;
}

static void fuzz_emb_read(const unsigned char *f, size_t len)
{
    char path[512], err[512], why[128];
    fuzz_scratch_write("in.emb", f, len, path, sizeof(path));
    embfile_t ef, untouched;
    memset(&ef, 0x5a, sizeof(ef));
    memcpy(&untouched, &ef, sizeof(ef));
    memset(err, 0x55, sizeof(err));
    int rc = embfile_read(path, &ef, err, sizeof(err));
    const char *ref = fuzz_emb_reference(f, len, why, sizeof(why));
    if (rc < 0) {
        FUZZ_CHECK(rc == -EBADMSG || rc == -ENOMEM);
        FUZZ_CHECK(memcmp(&ef, &untouched, sizeof(ef)) == 0);
        FUZZ_CHECK(fuzz_printable(err, sizeof(err)));
        size_t plen = strlen(path);
        FUZZ_CHECK(strncmp(err, path, plen) == 0 && strncmp(err + plen, ": ", 2) == 0);
        if (rc == -EBADMSG) { /* the page's words, perhaps with details after them */
            int same = ref && strncmp(err + plen + 2, ref, strlen(ref)) == 0;
            if (!same)
                fprintf(stderr, "embfile_read: %s\nreference: %s\n", err,
                        ref ? ref : "(valid)");
            FUZZ_CHECK(same);
        }
        char small[8];
        memset(small, 0x55, sizeof(small));
        FUZZ_CHECK(embfile_read(path, &ef, small, sizeof(small)) == rc);
        FUZZ_CHECK(memchr(small, 0, sizeof(small)) && strncmp(small, err, strlen(small)) == 0);
        return;
    }
    if (ref)
        fprintf(stderr, "embfile_read accepted a file the reference refuses: %s\n", ref);
    FUZZ_CHECK(rc == 0 && ref == NULL);
    FUZZ_CHECK(ef.dim == buf_load_u32(f + 12));
    FUZZ_CHECK(ef.n_users == buf_load_u32(f + 16) && ef.n_items == buf_load_u32(f + 20));
    size_t bytes = len - 40;
    FUZZ_CHECK(bytes == ((size_t)ef.n_users + ef.n_items) * ef.dim * 4);
    FUZZ_CHECK(ef.rows != NULL && memcmp(ef.rows, f + 40, bytes) == 0);
    for (size_t k = 0; k < bytes / 4; k++)
        FUZZ_CHECK(isfinite(ef.rows[k]));

    /* What was read writes back as the same bytes. */
    char back[512];
    FUZZ_CHECK((size_t)snprintf(back, sizeof(back), "%s/back.emb", fuzz_scratch_dir()) <
               sizeof(back));
    rc = embfile_write(back, ef.dim, ef.n_users, ef.n_items, ef.rows, err, sizeof(err));
    if (rc)
        fprintf(stderr, "embfile_write: %s\n", err);
    FUZZ_CHECK(rc == 0);
    FILE *in = fopen(back, "rb");
    FUZZ_CHECK(in != NULL);
    unsigned char *copy = malloc(len + 1);
    FUZZ_CHECK(copy != NULL);
    FUZZ_CHECK(fread(copy, 1, len + 1, in) == len && memcmp(copy, f, len) == 0);
    fclose(in);
    free(copy);
    free(ef.rows);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_emb_read(data, size);
    /* Again with the checksums made right. */
    if (size < 40)
        return 0;
    unsigned char *f = malloc(size);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data, size);
    buf_store_u32(f + 32, crc32c_update(0, f + 40, size - 40));
    buf_store_u32(f + 36, crc32c_update(0, f, 36));
    if (memcmp(f, data, size) != 0)
        fuzz_emb_read(f, size);
    free(f);
    return 0;
}
