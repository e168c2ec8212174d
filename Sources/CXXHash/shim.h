#ifndef RINGCACHE_CXXHASH_SHIM_H
#define RINGCACHE_CXXHASH_SHIM_H
#include <stddef.h>
#include <stdint.h>
// Inline xxHash so the hot path hashes keys without a call into the shared library.
#define XXH_INLINE_ALL
#include <xxhash.h>

/// xxh3_64 of `length` bytes at `data`: the hash of keys and ring tokens.
static inline uint64_t ringcache_xxh3_64(const void *data, size_t length) {
    return XXH3_64bits(data, length);
}
#endif
