// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: region bookkeeping and the event queue.
 *
 * Locking rules (this file owns both locks of struct umn_file):
 *
 * - umn_file::mutex serializes REGISTER, UNREGISTER, EXCHANGE_FEATURES,
 *   ARM, CHECK and read().  Every entry point takes it interruptibly and
 *   fails with ERESTARTSYS on a signal (EINTR for a handler without
 *   SA_RESTART): read() holds it across copy_to_user(), which may wait for
 *   a page fault as long as user space wants (userfaultfd).  It protects
 *   the cookie tree, the region count, the fd's notifier (inserted under
 *   it) and the setting of UMN_USED by REGISTER/UNREGISTER (features never
 *   change once a range exists).  Only holders of the mutex take entries
 *   off the queue, add or remove ranges or free regions, so a region seen
 *   under it stays valid and queued while it is held.  It is taken before
 *   mmap_lock (mmu_interval_notifier_insert() may take mmap_lock,
 *   copy_to_user() may fault) and never under it: the mmap handler does
 *   not take it.  It may be held across mmu_interval_read_begin()
 *   (REGISTER, ARM, CHECK, read()) and mmu_interval_notifier_remove()
 *   (ARM, CHECK), which sleep until running invalidations end: the
 *   invalidation path never takes the mutex.
 *
 * - umn_file::lock is a spinlock.  It protects the range tree (ranges,
 *   searched by the callback; changed by holders of the mutex that also
 *   take the lock), walkers, the queue, need_last, reading, the queue
 *   state of every region (queued, hint, hint_first, hint_last, rehit,
 *   hit_counter) and the generation counter.  The notifier callback takes
 *   it and may run where sleeping is not allowed: nothing sleeps under it.
 *   It nests inside the mutex, never the other way round.  A callback may
 *   drop it in the middle of the range tree (umn_notifier.c): it counts
 *   itself in walkers first, and the range tree is changed only when
 *   walkers is 0 (umn_region_tree_lock()).
 *
 * - A region is in the range tree for exactly as long as it is in the
 *   cookie tree.  Once out of the range tree (under the lock) no callback
 *   can reach it, and it is freed.  The fd's notifier is removed at
 *   release, before the regions are freed, and the file is freed after.
 *
 * - The revalidation state of a region (reval, writable, digest) is read
 *   and written under umn_file::mutex only; ARM and CHECK (umn_reval.c)
 *   hold the mutex across mmu_interval_read_begin() and mmap_read_lock().
 *
 * The queue holds at most one entry per region (the list node is embedded
 * in the region), so memory is proportional to regions, never to events:
 * one slab object of at most UMN_REGION_MAX_SIZE bytes per range.
 */
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/sched.h>
#include <linux/minmax.h>
#include <linux/atomic.h>

#include "umn.h"

unsigned int umn_max_regions = 1U << 18;

static struct kmem_cache *umn_region_cache;
static atomic_long_t umn_live = ATOMIC_LONG_INIT(0);

int umn_region_cache_init(void)
{
	BUILD_BUG_ON(sizeof(struct umn_region) > UMN_REGION_MAX_SIZE);
	umn_region_cache = kmem_cache_create("ummunotify_region",
					     sizeof(struct umn_region), 0,
					     SLAB_ACCOUNT, NULL);
	return umn_region_cache ? 0 : -ENOMEM;
}

void umn_region_cache_exit(void)
{
	kmem_cache_destroy(umn_region_cache);
}

/* Regions alive in all files, for leak checks by the tests. */
long umn_live_regions(void)
{
	return atomic_long_read(&umn_live);
}

/* Caller holds uf->mutex. */
struct umn_region *umn_region_find(struct umn_file *uf, u64 cookie)
{
	struct rb_node *n = uf->cookies.rb_node;

	while (n) {
		struct umn_region *r = rb_entry(n, struct umn_region, node);

		if (cookie < r->cookie)
			n = n->rb_left;
		else if (cookie > r->cookie)
			n = n->rb_right;
		else
			return r;
	}
	return NULL;
}

/* Returns false if the cookie is already in use. */
static bool umn_cookie_insert(struct umn_file *uf, struct umn_region *region)
{
	struct rb_node **link = &uf->cookies.rb_node, *parent = NULL;

	while (*link) {
		struct umn_region *r = rb_entry(*link, struct umn_region, node);

		parent = *link;
		if (region->cookie < r->cookie)
			link = &parent->rb_left;
		else if (region->cookie > r->cookie)
			link = &parent->rb_right;
		else
			return false;
	}
	rb_link_node(&region->node, parent, link);
	rb_insert_color(&region->node, &uf->cookies);
	return true;
}

static int umn_region_check(const struct ummunotify_register_ioctl *req)
{
	if (req->flags || req->reserved)
		return -EINVAL;
	if (req->start >= req->end)
		return -EINVAL;
	if (req->end > TASK_SIZE)
		return -EINVAL;
	return 0;
}

/*
 * One more range on the fd, its user and its mm, or ENOSPC.  Caller holds
 * uf->mutex (so the per-fd count cannot move).
 */
static int umn_region_charge(struct umn_file *uf)
{
	if (uf->nregions >= READ_ONCE(umn_max_regions))
		return -ENOSPC;
	if (!umn_acct_charge(uf->user_acct, READ_ONCE(umn_max_user_regions)))
		return -ENOSPC;
	if (!umn_acct_charge(uf->mm_acct, READ_ONCE(umn_max_mm_regions))) {
		umn_acct_uncharge(uf->user_acct);
		return -ENOSPC;
	}
	return 0;
}

static void umn_region_uncharge(struct umn_file *uf)
{
	umn_acct_uncharge(uf->mm_acct);
	umn_acct_uncharge(uf->user_acct);
}

/* Caller: current->mm == uf->mm (so the mm has users). */
int umn_region_register(struct umn_file *uf,
			const struct ummunotify_register_ioctl *req)
{
	struct umn_region *region;
	int ret;

	ret = umn_region_check(req);
	if (ret)
		return ret;

	region = kmem_cache_zalloc(umn_region_cache, GFP_KERNEL_ACCOUNT);
	if (!region)
		return -ENOMEM;
	region->it.start = req->start;
	region->it.last = req->end - 1;
	region->cookie = req->user_cookie;
	INIT_LIST_HEAD(&region->qentry);

	if (mutex_lock_interruptible(&uf->mutex)) {
		kmem_cache_free(umn_region_cache, region);
		return -ERESTARTSYS;
	}
	ret = umn_region_charge(uf);
	if (ret)
		goto out;
	ret = umn_notifier_start(uf);
	if (!ret && !umn_cookie_insert(uf, region))
		ret = -EINVAL;
	if (ret) {
		umn_region_uncharge(uf);
		goto out;
	}
	umn_region_tree_lock(uf);
	interval_tree_insert(&region->it, &uf->ranges);
	spin_unlock(&uf->lock);
	uf->nregions++;
	atomic_long_inc(&umn_live);
	/* Under the mutex: EXCHANGE_FEATURES sees it. */
	set_bit(UMN_USED, &uf->flags);
	umn_notifier_settle(uf);
out:
	mutex_unlock(&uf->mutex);

	if (ret)
		kmem_cache_free(umn_region_cache, region);
	return ret;
}

/*
 * Takes uf->lock once no notifier callback is paused in the middle of the
 * range tree, so that the tree may be changed.  Caller holds uf->mutex
 * (nothing else changes the tree meanwhile).  A paused callback only waits
 * for the CPU: the wait is short and cannot deadlock.
 */
void umn_region_tree_lock(struct umn_file *uf)
{
	spin_lock(&uf->lock);
	while (uf->walkers) {
		spin_unlock(&uf->lock);
		wait_event(uf->walk_wait, !READ_ONCE(uf->walkers));
		spin_lock(&uf->lock);
	}
}

static void umn_region_free(struct umn_file *uf, struct umn_region *region)
{
	umn_region_uncharge(uf);
	atomic_long_dec(&umn_live);
	kmem_cache_free(umn_region_cache, region);
}

/*
 * Caller holds uf->mutex.  Returns whether the region had a record queued
 * (now dropped).
 */
static bool umn_region_destroy(struct umn_file *uf, struct umn_region *region)
{
	bool queued;

	/* After this, no callback can reach the region. */
	umn_region_tree_lock(uf);
	interval_tree_remove(&region->it, &uf->ranges);
	queued = region->queued;
	if (queued)
		list_del(&region->qentry);
	spin_unlock(&uf->lock);

	umn_region_free(uf, region);
	return queued;
}

/*
 * A queued record goes with its range, but the counter has moved: a LAST
 * (with the counter as it is now) tells the reader that it has seen
 * everything, so that a client comparing the counter page with the last
 * LAST resyncs instead of waiting for a record that will never come.
 */
int umn_region_unregister(struct umn_file *uf, u64 cookie)
{
	struct umn_region *region;
	bool resync = false;
	int ret = 0;

	if (mutex_lock_interruptible(&uf->mutex))
		return -ERESTARTSYS;
	region = umn_region_find(uf, cookie);
	if (region) {
		rb_erase(&region->node, &uf->cookies);
		uf->nregions--;
		resync = umn_region_destroy(uf, region);
		set_bit(UMN_USED, &uf->flags);
	} else {
		ret = -EINVAL;
	}
	if (resync) {
		spin_lock(&uf->lock);
		uf->need_last = true;
		umn_ring_sync_queued(uf);
		spin_unlock(&uf->lock);
	}
	mutex_unlock(&uf->mutex);

	if (resync)
		wake_up_interruptible(&uf->wait);
	return ret;
}

/*
 * Called from release(): nobody else can reach uf any more, and once the
 * fd's notifier is removed no callback can either.
 */
void umn_region_remove_all(struct umn_file *uf)
{
	struct umn_region *region, *next;

	umn_notifier_stop(uf);
	rbtree_postorder_for_each_entry_safe(region, next, &uf->cookies, node)
		umn_region_free(uf, region);
	uf->cookies = RB_ROOT;
	uf->ranges = RB_ROOT_CACHED;
	INIT_LIST_HEAD(&uf->queue);
	uf->nregions = 0;
}

/*
 * Hints are kept in units of 2^shift bytes from the page of the start:
 * pages, unless the range spans more than 2^32 pages (16 TiB), where the
 * unit grows so that any offset fits in 32 bits.  An invalidation is page
 * aligned, so for ranges up to 16 TiB the hint is exact; beyond, it is
 * widened to whole units (still clipped to the range).
 */
static unsigned int umn_hint_shift(const struct umn_region *r)
{
	unsigned int bits = fls64(r->it.last - (r->it.start & PAGE_MASK));

	return bits > PAGE_SHIFT + 32 ? bits - 32 : PAGE_SHIFT;
}

static void umn_hint_set(struct umn_region *r, u64 start, u64 end)
{
	unsigned int shift = umn_hint_shift(r);
	u64 base = r->it.start & PAGE_MASK;

	r->hint_first = (max_t(u64, start, r->it.start) - base) >> shift;
	r->hint_last = (min_t(u64, end - 1, r->it.last) - base) >> shift;
}

static u64 umn_hint_start(const struct umn_region *r)
{
	u64 base = r->it.start & PAGE_MASK;

	return max_t(u64, base + ((u64)r->hint_first << umn_hint_shift(r)),
		     umn_region_start(r));
}

static u64 umn_hint_end(const struct umn_region *r)
{
	u64 base = r->it.start & PAGE_MASK;

	return min_t(u64,
		     base + (((u64)r->hint_last + 1) << umn_hint_shift(r)),
		     umn_region_end(r));
}

/*
 * An invalidation of [start, end) hit @region.  Caller holds uf->lock and
 * bumps the counter.  A region not yet queued is queued with the hint
 * clipped to it; a region hit again while queued loses its hint (the
 * record will cover the whole range).
 *
 * Returns true when the queue was empty or a read() is between building
 * its records and committing them: only then are readers woken and SIGIO
 * sent.  A reader sleeps only while the queue is empty and no LAST is
 * pending, and poll() reports the level; a hit on a non-empty queue that
 * no read() is taking records from adds nothing a woken reader would not
 * find.  A hit during a read() may land after the LAST that read returns
 * (a range queued after the records were built, or one of them hit again
 * and kept queued): the first such hit wakes again, so that a reader that
 * stops at LAST is told.  So one wake-up per fd per batch, however many ranges an
 * invalidation hits (issue 12: thousands of overlapping ranges made
 * thousands of wake-ups and signals).
 */
bool umn_region_queue_hit(struct umn_file *uf, struct umn_region *region,
			  u64 start, u64 end)
{
	bool wake = list_empty(&uf->queue) || uf->reading;
	bool ring_was_empty;

	lockdep_assert_held(&uf->lock);

	/* The counter is bumped right after, under the same lock. */
	region->hit_counter = umn_counter_read(uf) + 1;
	/*
	 * RING: published if the ring has room, unless a record of the range
	 * already waits for read() (one record there covers both hits).
	 */
	if (uf->ring && !region->queued &&
	    umn_ring_publish(uf, region, start, end, &ring_was_empty))
		return ring_was_empty;

	uf->reading = false;
	if (region->queued) {
		region->hint = false;
		region->rehit = true;
		return wake;
	}
	region->queued = true;
	region->hint = true;
	umn_hint_set(region, start, end);
	list_add_tail(&region->qentry, &uf->queue);
	umn_ring_sync_queued(uf);
	return wake;
}

bool umn_region_readable(struct umn_file *uf)
{
	bool ret;

	spin_lock(&uf->lock);
	ret = !list_empty(&uf->queue) || uf->need_last;
	spin_unlock(&uf->lock);
	return ret;
}

static void umn_event_fill(struct ummunotify_event *ev,
			   const struct umn_region *r)
{
	ev->type = UMMUNOTIFY_EVENT_TYPE_INVAL;
	ev->user_cookie_counter = r->cookie;
	if (r->hint) {
		ev->flags = UMMUNOTIFY_EVENT_FLAG_HINT;
		ev->hint_start = umn_hint_start(r);
		ev->hint_end = umn_hint_end(r);
	} else {
		ev->flags = 0;
		ev->hint_start = umn_region_start(r);
		ev->hint_end = umn_region_end(r);
	}
}

/*
 * Build up to @max records from the head of the queue without taking
 * anything off it.  Caller holds uf->mutex.  Returns the number of INVAL
 * records; *@last tells whether a LAST record was appended, *@settle
 * whether an invalidation that hit one of the ranges may still run.
 */
static size_t umn_queue_peek(struct umn_file *uf, struct ummunotify_event *evs,
			     size_t max, bool *last, bool *settle)
{
	struct umn_region *r;
	bool more = false;
	size_t n = 0;

	*last = false;
	*settle = false;
	spin_lock(&uf->lock);
	list_for_each_entry(r, &uf->queue, qentry) {
		if (n == max) {
			more = true;
			break;
		}
		r->rehit = false;
		if (!*settle && umn_notifier_may_run(uf, r->hit_seq))
			*settle = true;
		umn_event_fill(&evs[n++], r);
	}
	uf->reading = true;
	/* LAST only when the queue ends here and there is room for it. */
	if (!more && n < max && (n || uf->need_last)) {
		memset(&evs[n], 0, sizeof(evs[n]));
		evs[n].type = UMMUNOTIFY_EVENT_TYPE_LAST;
		evs[n].user_cookie_counter = umn_counter_read(uf);
		*last = true;
	}
	spin_unlock(&uf->lock);
	return n;
}

/*
 * The records were copied out: take the @n first regions off the queue,
 * except those hit again since they were peeked (they stay queued, without
 * hint, and will be reported again: a duplicate, never a loss).
 */
static void umn_queue_commit(struct umn_file *uf, size_t n, bool last)
{
	struct umn_region *r, *tmp;
	size_t i = 0;

	spin_lock(&uf->lock);
	list_for_each_entry_safe(r, tmp, &uf->queue, qentry) {
		if (i++ == n)
			break;
		if (r->rehit)
			continue;
		list_del_init(&r->qentry);
		r->queued = false;
	}
	if (last)
		uf->need_last = false;
	else if (n)
		uf->need_last = true;
	uf->reading = false;
	umn_ring_sync_queued(uf);
	spin_unlock(&uf->lock);
}

/* Nothing was handed out: the records stay queued as they are. */
static void umn_queue_abort(struct umn_file *uf)
{
	spin_lock(&uf->lock);
	uf->reading = false;
	spin_unlock(&uf->lock);
}

/*
 * The callback queues a record at invalidate_range_start, before the pages
 * are unmapped or replaced.  A reader that re-pinned the range as soon as
 * it read the record could pin the old pages, which the invalidation then
 * drops, and no further record would come.  So a record is handed out
 * only once every invalidation of its range that was running when it was
 * read has ended: if one may still run (@settle, from umn_queue_peek()),
 * mmu_interval_read_begin() on the fd's notifier sleeps until then (it
 * returns at once when none is running).  Caller holds uf->mutex (the
 * regions stay registered, so the notifier is live), not uf->lock;
 * invalidations never take the mutex.
 */
static void umn_queue_wait_settled(struct umn_file *uf, bool settle)
{
	if (settle)
		umn_notifier_settle(uf);
}

/*
 * Returns the number of bytes read, 0 if there is nothing to read, or a
 * negative errno.  On a fault nothing is consumed.
 */
ssize_t umn_region_read(struct umn_file *uf, char __user *buf, size_t count)
{
	struct ummunotify_event *evs;
	size_t max, n, bytes;
	bool last, settle;
	ssize_t ret;

	max = min_t(size_t, count, PAGE_SIZE) / sizeof(*evs);
	if (!max)
		return -EINVAL;

	evs = kmalloc_array(max, sizeof(*evs), GFP_KERNEL);
	if (!evs)
		return -ENOMEM;

	if (mutex_lock_interruptible(&uf->mutex)) {
		kfree(evs);
		return -ERESTARTSYS;
	}
	n = umn_queue_peek(uf, evs, max, &last, &settle);
	umn_queue_wait_settled(uf, settle);
	bytes = (n + last) * sizeof(*evs);
	if (!bytes) {
		umn_queue_abort(uf);
		ret = 0;
	} else if (copy_to_user(buf, evs, bytes)) {
		umn_queue_abort(uf);
		ret = -EFAULT;
	} else {
		umn_queue_commit(uf, n, last);
		ret = bytes;
	}
	mutex_unlock(&uf->mutex);

	kfree(evs);
	return ret;
}
