/* Table-driven CRC-32C, eight bytes per step (slicing-by-8). */
#include "crc32c.h"

#include <pthread.h>

static uint32_t crc32c__table[8][256];
static pthread_once_t crc32c__once = PTHREAD_ONCE_INIT;

static void crc32c__init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc32c__table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc32c__table[t][n] = (crc32c__table[t - 1][n] >> 8) ^
                                  crc32c__table[0][crc32c__table[t - 1][n] & 0xff];
}

uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc32c__once, crc32c__init);
    const unsigned char *p = buf;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                             (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        crc = crc32c__table[7][lo & 0xff] ^ crc32c__table[6][(lo >> 8) & 0xff] ^
              crc32c__table[5][(lo >> 16) & 0xff] ^ crc32c__table[4][lo >> 24] ^
              crc32c__table[3][hi & 0xff] ^ crc32c__table[2][(hi >> 8) & 0xff] ^
              crc32c__table[1][(hi >> 16) & 0xff] ^ crc32c__table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc32c__table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}
