/*
 * fuzz_checkpoint: io/checkpoint.h's reader on crafted files (a checkpoint is
 * what a restart trusts; a torn or damaged one must be refused, never
 * followed). Each input is opened from memory as it is, and again with its
 * CRC-32Cs made right (the header's, and each section's whose bytes lie in
 * the file), so the fuzzer gets past the checksums to the section table.
 *
 * The outcome is compared with a reference reader written here from
 * docs/CHECKPOINT.md alone: both accept or both refuse. Of a checkpoint
 * that opens it checks seq and created_ms, that every section of the table
 * is found by id with its own bytes (a copy: the input is not kept), that
 * an id not in the table is -ENOENT, and that the view outlives the input.
 * Of one that is refused: -EBADMSG, a reason naming the input, no handle.
 *
 * A checkpoint that opens then goes through the daemon's state decoding
 * (daemon/state.c), which must accept it or refuse it with a reason, never
 * crash; an accepted state must dump exactly its interaction count.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/state.h"
#include "io/buf.h"
#include "io/checkpoint.h"
#include "io/crc32c.h"
#include "model/iset.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* docs/CHECKPOINT.md, "Container": returns 1 when f[0..len) is valid. */
static int fuzz_ckpt_reference(const unsigned char *f, size_t len)
{
    if (len < 36 || memcmp(f, "DERRDCKP", 8) != 0 || buf_load_u32(f + 8) != 1)
        return 0;
    uint32_t n = buf_load_u32(f + 12);
    if (n > 64)
        return 0;
    uint64_t hlen = 32 + 24 * (uint64_t)n + 4;
    if (len < hlen || crc32c_update(0, f, hlen - 4) != buf_load_u32(f + hlen - 4))
        return 0;
    uint64_t at = hlen;
    for (uint32_t k = 0; k < n; k++) {
        const unsigned char *e = f + 32 + 24 * k;
        uint64_t off = buf_load_u64(e + 8), slen = buf_load_u64(e + 16);
        if (off != at || slen > len - at)
            return 0;
        for (uint32_t j = 0; j < k; j++)
            if (buf_load_u32(f + 32 + 24 * j) == buf_load_u32(e))
                return 0;
        if (crc32c_update(0, f + off, slen) != buf_load_u32(e + 4))
            return 0;
        at += slen;
    }
    return at == len;
}

static void fuzz_ckpt_open(const unsigned char *data, size_t size)
{
    /* A copy the reader sees, freed before the sections are read back. */
    unsigned char *f = malloc(size ? size : 1);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data, size);
    checkpoint_t *ck = (checkpoint_t *)&ck; /* must come back NULL on failure */
    char err[512];
    err[0] = '\0';
    int rc = checkpoint_open_mem("fuzz.dckpt", f, size, &ck, err, sizeof(err));
    free(f);
    int valid = fuzz_ckpt_reference(data, size);
    if (rc < 0) {
        FUZZ_CHECK(!valid);
        FUZZ_CHECK(rc == -EBADMSG || rc == -ENOMEM);
        FUZZ_CHECK(ck == NULL);
        FUZZ_CHECK(strncmp(err, "fuzz.dckpt: ", 12) == 0 && memchr(err, 0, sizeof(err)));
        return;
    }
    FUZZ_CHECK(rc == 0 && ck != NULL && valid);
    FUZZ_CHECK(checkpoint_seq(ck) == buf_load_u64(data + 16));
    FUZZ_CHECK(checkpoint_created_ms(ck) == buf_load_u64(data + 24));
    uint32_t n = buf_load_u32(data + 12), max_id = 0;
    for (uint32_t k = 0; k < n; k++) {
        const unsigned char *e = data + 32 + 24 * k;
        uint32_t id = buf_load_u32(e);
        uint64_t off = buf_load_u64(e + 8), slen = buf_load_u64(e + 16);
        const unsigned char *p = NULL;
        size_t len = 0;
        FUZZ_CHECK(checkpoint_section(ck, id, &p, &len) == 0);
        FUZZ_CHECK(len == slen && p != NULL && (len == 0 || p != data + off));
        FUZZ_CHECK(memcmp(p, data + off, len) == 0);
        if (id > max_id)
            max_id = id;
    }
    if (max_id < UINT32_MAX) {
        const unsigned char *p = data;
        size_t len = 1;
        FUZZ_CHECK(checkpoint_section(ck, max_id + 1, &p, &len) == -ENOENT);
        FUZZ_CHECK(p == NULL && len == 0);
    }
    /* The state's decoding, under the seeds' topic. */
    state_t st;
    FUZZ_CHECK(state_init(&st, "events") == 0);
    err[0] = '\0';
    rc = state_from_checkpoint(&st, ck, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
    FUZZ_CHECK(rc == 0 || (err[0] && memchr(err, 0, sizeof(err))));
    if (rc == 0) {
        char *text = NULL;
        size_t tlen = 0;
        FILE *out = open_memstream(&text, &tlen);
        FUZZ_CHECK(out != NULL);
        FUZZ_CHECK(state_dump(&st, out) == 0);
        fclose(out);
        int64_t lines = 0;
        for (size_t k = 0; k < tlen; k++)
            lines += text[k] == '\n';
        FUZZ_CHECK(lines == iset_count(st.inter));
        free(text);
    }
    state_close(&st);
    checkpoint_free(ck);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_ckpt_open(data, size);
    /* Again with the CRCs made right where the layout allows. */
    if (size < 36)
        return 0;
    uint32_t n = buf_load_u32(data + 12);
    if (n > 64 || size < 32 + 24 * (size_t)n + 4)
        return 0;
    size_t hlen = 32 + 24 * (size_t)n + 4;
    unsigned char *f = malloc(size);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data, size);
    for (uint32_t k = 0; k < n; k++) {
        unsigned char *e = f + 32 + 24 * k;
        uint64_t off = buf_load_u64(e + 8), slen = buf_load_u64(e + 16);
        if (off <= size && slen <= size - off)
            buf_store_u32(e + 4, crc32c_update(0, f + off, (size_t)slen));
    }
    buf_store_u32(f + hlen - 4, crc32c_update(0, f, hlen - 4));
    if (memcmp(f, data, size) != 0)
        fuzz_ckpt_open(f, size);
    free(f);
    return 0;
}
