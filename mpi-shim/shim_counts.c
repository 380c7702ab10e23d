// SPDX-License-Identifier: MIT OR Apache-2.0
/* shim_counts.c - the counter sums of libregcache_shim.so (see shim.h). */
#include "shim.h"

void shim_counts_add(struct shim_counts *t, const struct regcache_stats *s)
{
	t->hits += s->hits;
	t->misses += s->misses;
	t->uncacheable += s->uncacheable;
	t->reregistrations += s->reregistrations;
	t->invalidated += s->invalidated;
	t->evictions += s->evictions;
	t->registrations += s->registrations;
	t->deregistrations += s->deregistrations;
}
