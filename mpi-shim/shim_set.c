// SPDX-License-Identifier: MIT OR Apache-2.0
/* shim_set.c - the pointer set and counter sums of libregcache_shim.so (see shim.h). */
#include <errno.h>
#include <stdlib.h>

#include "shim.h"

#define TOMB ((void *)1)

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

static size_t hash(const void *p, size_t cap)
{
	uint64_t x = (uintptr_t)p;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)x & (cap - 1);
}

/* Index of p, or of the slot where it would go; cap > 0, lock held. */
static size_t find(const struct shim_set *s, const void *p, int *found)
{
	size_t i = hash(p, s->cap), tomb = s->cap;

	for (;;) {
		void *q = s->slots[i];

		if (q == p) {
			*found = 1;
			return i;
		}
		if (!q) {
			*found = 0;
			return tomb < s->cap ? tomb : i;
		}
		if (q == TOMB && tomb == s->cap)
			tomb = i;
		i = (i + 1) & (s->cap - 1);
	}
}

static int grow(struct shim_set *s)
{
	size_t cap = s->cap ? s->cap : 64, i;
	void **old = s->slots, **slots;
	size_t old_cap = s->cap;
	int found;

	if (2 * (s->live + 1) > cap)
		cap *= 2;
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	s->slots = slots;
	s->cap = cap;
	s->used = 0;
	for (i = 0; i < old_cap; i++) {
		if (old[i] && old[i] != TOMB) {
			s->slots[find(s, old[i], &found)] = old[i];
			s->used++;
		}
	}
	free(old);
	return 0;
}

int shim_set_add(struct shim_set *s, void *p)
{
	int found = 0, rc = 0;
	size_t i;

	pthread_mutex_lock(&s->lock);
	if (4 * (s->used + 1) > 3 * s->cap)
		rc = grow(s);
	if (rc == 0) {
		i = find(s, p, &found);
		if (!found) {
			if (!s->slots[i])
				s->used++;
			s->slots[i] = p;
			s->live++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int shim_set_remove(struct shim_set *s, void *p)
{
	int found = 0;
	size_t i;

	pthread_mutex_lock(&s->lock);
	if (s->cap) {
		i = find(s, p, &found);
		if (found) {
			s->slots[i] = TOMB;
			s->live--;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

int shim_set_contains(struct shim_set *s, void *p)
{
	int found = 0;

	pthread_mutex_lock(&s->lock);
	if (s->cap)
		find(s, p, &found);
	pthread_mutex_unlock(&s->lock);
	return found;
}

size_t shim_set_size(struct shim_set *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->live;
	pthread_mutex_unlock(&s->lock);
	return n;
}
