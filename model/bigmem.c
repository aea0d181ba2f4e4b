/* Zeroed float tables on 2 MB pages where the kernel allows; see bigmem.h. */
#include "bigmem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { BIGMEM_PAGE = 2 << 20 };

float *bigmem_zero_floats(size_t n)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / sizeof(float))
        return NULL;
    size_t bytes = n * sizeof(float);
    if (bytes < BIGMEM_MIN)
        return calloc(n, sizeof(float));
    size_t whole = (bytes + BIGMEM_PAGE - 1) / BIGMEM_PAGE * BIGMEM_PAGE;
    void *p = NULL;
    if (posix_memalign(&p, BIGMEM_PAGE, whole) != 0)
        return NULL;
    /* Advice only: without transparent huge pages the table still works. */
    (void)madvise(p, whole, MADV_HUGEPAGE);
    memset(p, 0, bytes); /* the first touch, after the advice */
    return p;
}
