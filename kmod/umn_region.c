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
 *   the cookie tree, the region count and the setting of UMN_USED by
 *   REGISTER/UNREGISTER (features never change once a range exists).
 *   Only holders of the mutex take entries off the queue or free regions,
 *   so a region seen under it stays valid and queued while it is held.
 *   It is taken before mmap_lock (mmu_interval_notifier_insert() may take
 *   mmap_lock, copy_to_user() may fault) and never under it: the mmap
 *   handler does not take it.  It may be held across
 *   mmu_interval_read_begin() (REGISTER, ARM, CHECK, read()) and
 *   mmu_interval_notifier_remove(), which sleep until running
 *   invalidations end: the invalidation path never takes the mutex.
 *
 * - umn_file::lock is a spinlock.  It protects the queue, need_last,
 *   reading, the queue state of every region (queued, hint, hint_start,
 *   hint_end, hits, peek_hits, hit_counter) and the generation counter.
 *   The notifier callback takes it and may run where sleeping is not
 *   allowed: nothing sleeps under it.  It nests inside the mutex, never
 *   the other way round.
 *
 * - A region is linked into the kernel's interval tree (umn_notifier.c)
 *   for exactly as long as it is in the cookie tree.  It is freed only after
 *   mmu_interval_notifier_remove() has returned, which guarantees that no
 *   callback still uses it.  The file is freed only after all its regions.
 *
 * - The revalidation state of a region (reval, writable, digest) is read
 *   and written under umn_file::mutex only; ARM and CHECK (umn_reval.c)
 *   hold the mutex across mmu_interval_read_begin() and mmap_read_lock().
 *
 * The queue holds at most one entry per region (the list node is embedded
 * in the region), so memory is proportional to regions, never to events.
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
	region->uf = uf;
	region->start = req->start;
	region->end = req->end;
	region->cookie = req->user_cookie;
	INIT_LIST_HEAD(&region->qentry);

	if (mutex_lock_interruptible(&uf->mutex)) {
		kmem_cache_free(umn_region_cache, region);
		return -ERESTARTSYS;
	}
	ret = umn_region_charge(uf);
	if (ret)
		goto out;
	if (!umn_cookie_insert(uf, region)) {
		ret = -EINVAL;
	} else {
		ret = umn_notifier_insert(region);
		if (ret)
			rb_erase(&region->node, &uf->cookies);
	}
	if (ret) {
		umn_region_uncharge(uf);
		goto out;
	}
	uf->nregions++;
	atomic_long_inc(&umn_live);
	/* Under the mutex: EXCHANGE_FEATURES sees it. */
	set_bit(UMN_USED, &uf->flags);
out:
	mutex_unlock(&uf->mutex);

	if (ret)
		kmem_cache_free(umn_region_cache, region);
	return ret;
}

/*
 * Caller holds uf->mutex, or is the last user of uf.  Returns whether the
 * region had a record queued (now dropped).
 */
static bool umn_region_destroy(struct umn_file *uf, struct umn_region *region)
{
	bool queued;

	/* After this, no callback runs or will run for the region. */
	umn_notifier_remove(region);

	spin_lock(&uf->lock);
	queued = region->queued;
	if (queued)
		list_del(&region->qentry);
	spin_unlock(&uf->lock);

	umn_region_uncharge(uf);
	atomic_long_dec(&umn_live);
	kmem_cache_free(umn_region_cache, region);
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
		spin_unlock(&uf->lock);
	}
	mutex_unlock(&uf->mutex);

	if (resync)
		wake_up_interruptible(&uf->wait);
	return ret;
}

/* Called from release(): nobody else can reach uf any more. */
void umn_region_remove_all(struct umn_file *uf)
{
	struct umn_region *region, *next;

	rbtree_postorder_for_each_entry_safe(region, next, &uf->cookies, node)
		umn_region_destroy(uf, region);
	uf->cookies = RB_ROOT;
	uf->nregions = 0;
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
bool umn_region_queue_hit(struct umn_region *region, u64 start, u64 end)
{
	struct umn_file *uf = region->uf;
	bool wake = list_empty(&uf->queue) || uf->reading;

	lockdep_assert_held(&uf->lock);

	uf->reading = false;

	region->hits++;
	/* The counter is bumped right after, under the same lock. */
	region->hit_counter = umn_counter_read(uf) + 1;
	if (region->queued) {
		region->hint = false;
		return wake;
	}
	region->queued = true;
	region->hint = true;
	region->hint_start = max(start, region->start);
	region->hint_end = min(end, region->end);
	list_add_tail(&region->qentry, &uf->queue);
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
		ev->hint_start = r->hint_start;
		ev->hint_end = r->hint_end;
	} else {
		ev->flags = 0;
		ev->hint_start = r->start;
		ev->hint_end = r->end;
	}
}

/*
 * Build up to @max records from the head of the queue without taking
 * anything off it; @regs[i] is the region of record i.  Caller holds
 * uf->mutex.  Returns the number of INVAL records; *@last tells whether a
 * LAST record was appended.
 */
static size_t umn_queue_peek(struct umn_file *uf, struct ummunotify_event *evs,
			     struct umn_region **regs, size_t max, bool *last)
{
	struct umn_region *r;
	bool more = false;
	size_t n = 0;

	*last = false;
	spin_lock(&uf->lock);
	list_for_each_entry(r, &uf->queue, qentry) {
		if (n == max) {
			more = true;
			break;
		}
		r->peek_hits = r->hits;
		regs[n] = r;
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
		if (r->hits != r->peek_hits)
			continue;
		list_del_init(&r->qentry);
		r->queued = false;
	}
	if (last)
		uf->need_last = false;
	else if (n)
		uf->need_last = true;
	uf->reading = false;
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
 * read has ended: mmu_interval_read_begin() sleeps until then (it returns
 * at once when none is running).  Caller holds uf->mutex (the regions stay
 * registered), not uf->lock; invalidations never take the mutex.
 */
static void umn_queue_wait_settled(struct umn_region **regs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		mmu_interval_read_begin(&regs[i]->mni);
}

/*
 * Returns the number of bytes read, 0 if there is nothing to read, or a
 * negative errno.  On a fault nothing is consumed.
 */
ssize_t umn_region_read(struct umn_file *uf, char __user *buf, size_t count)
{
	struct ummunotify_event *evs;
	struct umn_region **regs;
	size_t max, n, bytes;
	bool last;
	ssize_t ret;

	max = min_t(size_t, count, PAGE_SIZE) / sizeof(*evs);
	if (!max)
		return -EINVAL;

	evs = kmalloc_array(max, sizeof(*evs) + sizeof(*regs), GFP_KERNEL);
	if (!evs)
		return -ENOMEM;
	regs = (struct umn_region **)(evs + max);

	if (mutex_lock_interruptible(&uf->mutex)) {
		kfree(evs);
		return -ERESTARTSYS;
	}
	n = umn_queue_peek(uf, evs, regs, max, &last);
	umn_queue_wait_settled(regs, n);
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
