/*
 * bigmem: zeroed float tables for the large, randomly read arrays (the
 * embeddings and their optimizer state).
 *
 * Training reads rows of these tables at random. At dim 200 the teacher's
 * parameters and Adam moments are 73 MB; with 4 KB pages nearly every row
 * read also misses the TLB. Tables of at least BIGMEM_MIN bytes are aligned
 * to 2 MB and the kernel is asked (madvise MADV_HUGEPAGE) to back them with
 * 2 MB pages where transparent huge pages are enabled as "madvise" or
 * "always". Where it cannot, the table works the same with small pages.
 */
#ifndef DERRD_BIGMEM_H
#define DERRD_BIGMEM_H

#include <stddef.h>

enum { BIGMEM_MIN = 2 << 20 };

/* n zeroed floats (n = 0 gives a valid one-float table); free with free().
 * NULL when out of memory. */
float *bigmem_zero_floats(size_t n);

#endif
