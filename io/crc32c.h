/*
 * crc32c: CRC-32C (Castagnoli), the checksum of every derrd file format.
 * Pure and thread-safe.
 */
#ifndef DERRD_CRC32C_H
#define DERRD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: start with crc = 0. */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);

#endif
