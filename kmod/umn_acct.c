// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: bounds on the ranges one user and one address space watch.
 *
 * Every invalidation of an address space runs one callback per range it
 * overlaps, in whatever context invalidates: the process itself, but also
 * kswapd, kcompactd, khugepaged, the OOM reaper and exit.  The per-fd cap
 * (max_regions) does not bound that: the device is 0666 and a process may
 * open many fds.  So, the way inotify bounds watches with ucounts, every
 * range is also charged to two counters shared by all fds:
 *
 * - one per user: the effective uid of the opener (as inotify), whatever
 *   process or address space the fds are in (max_user_regions);
 * - one per address space: the opener's mm, which bounds the callbacks of
 *   one invalidation (max_mm_regions).
 *
 * A counter is found in a small hash table by kind and key, created by the
 * first fd that needs it and freed by the last (umn_acct::refs, under
 * umn_acct_lock, taken at open and release only).  The key of an mm is its
 * address: the fd holds mmgrab() on it until after umn_acct_put(), so the
 * address is not reused while the counter exists.  Charging is a lock-free
 * compare-and-exchange against the limit read at that moment: lowering a
 * limit never takes ranges away, it only refuses new ones.
 */
#include <linux/atomic.h>
#include <linux/hashtable.h>
#include <linux/slab.h>
#include <linux/spinlock.h>

#include "umn.h"

unsigned int umn_max_user_regions = 1U << 20;
unsigned int umn_max_mm_regions = 1U << 18;

/**
 * struct umn_acct - ranges charged to one user or one address space
 * @node: entry in umn_acct_table (under umn_acct_lock)
 * @key: uid or mm address
 * @kind: UMN_ACCT_USER or UMN_ACCT_MM
 * @refs: fds using this counter (under umn_acct_lock)
 * @ranges: ranges charged
 */
struct umn_acct {
	struct hlist_node	node;
	unsigned long		key;
	unsigned int		kind;
	unsigned int		refs;
	atomic_long_t		ranges;
};

static DEFINE_HASHTABLE(umn_acct_table, 6);
static DEFINE_SPINLOCK(umn_acct_lock);

static struct umn_acct *umn_acct_lookup(unsigned int kind, unsigned long key)
{
	struct umn_acct *a;

	hash_for_each_possible(umn_acct_table, a, node, key)
		if (a->kind == kind && a->key == key)
			return a;
	return NULL;
}

/* The counter of (@kind, @key), created if needed; NULL if out of memory. */
struct umn_acct *umn_acct_get(unsigned int kind, unsigned long key)
{
	struct umn_acct *a, *fresh;

	fresh = kzalloc(sizeof(*fresh), GFP_KERNEL);
	if (!fresh)
		return NULL;
	spin_lock(&umn_acct_lock);
	a = umn_acct_lookup(kind, key);
	if (!a) {
		a = fresh;
		fresh = NULL;
		a->kind = kind;
		a->key = key;
		atomic_long_set(&a->ranges, 0);
		hash_add(umn_acct_table, &a->node, key);
	}
	a->refs++;
	spin_unlock(&umn_acct_lock);
	kfree(fresh);
	return a;
}

/* Drops an fd's reference; every range it charged was uncharged. */
void umn_acct_put(struct umn_acct *a)
{
	bool last;

	if (!a)
		return;
	spin_lock(&umn_acct_lock);
	last = --a->refs == 0;
	if (last)
		hash_del(&a->node);
	spin_unlock(&umn_acct_lock);
	if (last) {
		WARN_ON_ONCE(atomic_long_read(&a->ranges));
		kfree(a);
	}
}

/* One more range, unless @limit ranges are charged already. */
bool umn_acct_charge(struct umn_acct *a, unsigned int limit)
{
	long v = atomic_long_read(&a->ranges);

	do {
		if (v >= limit)
			return false;
	} while (!atomic_long_try_cmpxchg(&a->ranges, &v, v + 1));
	return true;
}

void umn_acct_uncharge(struct umn_acct *a)
{
	atomic_long_dec(&a->ranges);
}
