/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* shim.h - internals of libregcache_shim.so shared with its unit tests. */
#ifndef REGCACHE_SHIM_H
#define REGCACHE_SHIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "regcache.h"

/* Counters of the whole process: every PD's cache plus the shim's own. */
struct shim_counts {
	uint64_t hits;
	uint64_t misses;
	uint64_t uncacheable;
	uint64_t reregistrations;
	uint64_t invalidated;
	uint64_t evictions;
	uint64_t registrations;
	uint64_t deregistrations;
	uint64_t wrapped;	/* registrations the program got through the cache */
	uint64_t passthrough;	/* registrations handed to rdma-core unchanged */
	int enabled;
};

void shim_counts_add(struct shim_counts *t, const struct regcache_stats *s);

/*
 * A set of pointers (open addressing, linear probing, tombstones), locked by its own mutex:
 * which struct ibv_mr * the shim made.
 */
struct shim_set {
	pthread_mutex_t lock;
	void **slots;
	size_t cap;	/* power of two, or 0 */
	size_t used;	/* live + tombstones */
	size_t live;
};

#define SHIM_SET_INIT { .lock = PTHREAD_MUTEX_INITIALIZER }

int shim_set_add(struct shim_set *s, void *p);		/* 0 or -ENOMEM */
int shim_set_remove(struct shim_set *s, void *p);	/* 1 if it was there */
int shim_set_contains(struct shim_set *s, void *p);
size_t shim_set_size(struct shim_set *s);

/* Provided by shim.c for the bridges (ucx_bridge.c, ofi_attach.c). */
/* One line on stderr, "regcache_shim: ...". */
void shim_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* regcache_sync() on every protection domain's cache; returns how many drained. */
int shim_sync_all(void);
/* Whether the shim caches registrations here (enabled, libibverbs found, a monitor works). */
int shim_can_cache(void);
/* REGCACHE_SHIM_VERBOSE. */
int shim_is_verbose(void);
/* A yes/no variable: unset or empty is `dflt`; 0, no, n, off (any case) are no. */
int shim_env_flag(const char *name, int dflt);
/* The next definition of a libibverbs function: `version` first, then any; also from a
 * libibverbs loaded privately by a dlopen()ed library. NULL when not loaded. */
void *shim_next_sym(const char *name, const char *version);

/* Exported by the shim for tests: the process's counters. Returns 0. */
int regcache_shim_counts(struct shim_counts *out);

#endif /* REGCACHE_SHIM_H */
