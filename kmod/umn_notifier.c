// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: glue to the kernel's MMU notifiers.
 *
 * One struct mmu_interval_notifier per fd covers the whole address space
 * (inserted by the first REGISTER, removed at release).  Its callback
 * searches the fd's own interval tree of ranges (umn_file::ranges) for
 * those the invalidation overlaps, in O(log n + k), under umn_file::lock.
 * A range is then one slab object of at most 128 bytes (issue 13): a
 * notifier per range would cost 88 bytes of struct mmu_interval_notifier
 * each, against 48 for a node of our own tree.  As in 2010, where the
 * module had one mmu_notifier per fd.
 *
 * The callback never sleeps (it may run where blocking is not allowed,
 * e.g. from the OOM reaper): it takes umn_file::lock, queues every range
 * hit, bumps the counter once per range hit, wakes readers if the queue
 * was empty and returns true.  Where the invalidation may block and the
 * CPU is wanted elsewhere, it pauses between two ranges (an invalidation
 * may overlap up to max_mm_regions ranges: see umn_acct.c): it counts
 * itself in umn_file::walkers, drops the lock, calls cond_resched() and
 * takes the lock again.  REGISTER and UNREGISTER change the tree only when
 * no callback is paused in it (umn_region_tree_lock()), so the node the
 * callback stands on stays linked and allocated.
 *
 * The notifier's sequence is the fd's: mmu_interval_read_begin() on it
 * waits until every invalidation of the mm that was running has ended
 * (REGISTER before returning; read() before handing out records of ranges
 * hit by an invalidation that may still run: umn_notifier_may_run()).  ARM
 * and CHECK (umn_reval.c) walk the page tables of one range under it, and
 * if any invalidation of the mm raced the walk, again under a notifier of
 * their own over that range only (umn_walk_notifier_insert()), so that
 * only invalidations of that range make them walk again.
 * Locking rules: see umn_region.c.
 *
 * Process exit arrives as MMU_NOTIFY_RELEASE over the whole address space:
 * it is reported like any other invalidation.  The notifier stays in the
 * (dead) mm's tree until the fd is closed; mmu_interval_notifier_insert()
 * took a reference on the mm, dropped by mmu_interval_notifier_remove().
 */
#include <linux/mmu_notifier.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/signal.h>

#include "umn.h"

static bool umn_event_reported(const struct umn_file *uf,
			       const struct mmu_notifier_range *range)
{
	if (!(READ_ONCE(uf->features) & UMMUNOTIFY_FEATURE_FILTER))
		return true;
	return !umn_event_keeps_pages(range->event);
}

/*
 * Let others run in the middle of a long walk of the tree.  Caller holds
 * uf->lock, may block, and stands on a node of uf->ranges, which stays in
 * the tree while uf->walkers is not zero.
 */
static void umn_walk_pause(struct umn_file *uf)
{
	uf->walkers++;
	spin_unlock(&uf->lock);
	cond_resched();
	spin_lock(&uf->lock);
	if (!--uf->walkers)
		wake_up(&uf->walk_wait);
}

/*
 * Report the hits of an invalidation: queue (or, in RING mode, publish)
 * every range it overlaps and bump the counter once per range.  @seq is
 * the batch's notifier sequence, for umn_notifier_may_run().  Caller holds
 * uf->lock (dropped and retaken between ranges, see umn_walk_pause()).
 * Returns whether readers are to be woken (umn_notifier_wake()).
 */
bool umn_notifier_report(struct umn_file *uf,
			 const struct mmu_notifier_range *range, u16 seq)
{
	bool blockable = mmu_notifier_range_blockable(range);
	unsigned long first = range->start, last = range->end - 1;
	struct interval_tree_node *it;
	bool wake = false;

	if (range->start >= range->end || !umn_event_reported(uf, range))
		return false;
	for (it = interval_tree_iter_first(&uf->ranges, first, last);
	     it; it = interval_tree_iter_next(it, first, last)) {
		struct umn_region *r = container_of(it, struct umn_region, it);

		r->hit_seq = seq;
		if (umn_region_queue_hit(uf, r, range->start, range->end))
			wake = true;
		umn_counter_bump(uf);
		if (blockable && need_resched())
			umn_walk_pause(uf);
	}
	return wake;
}

void umn_notifier_wake(struct umn_file *uf)
{
	wake_up_interruptible(&uf->wait);
	kill_fasync(&uf->fasync, SIGIO, POLL_IN);
}

/*
 * In RING mode the hits are reported by the classic notifier's start
 * (umn_ring.c), which runs after this callback and counts the
 * invalidation first; here only the sequence is set.  Except at exit
 * (RELEASE), which the classic notifier gets as ->release, not as a start.
 */
static bool umn_invalidate(struct mmu_interval_notifier *mni,
			   const struct mmu_notifier_range *range,
			   unsigned long cur_seq)
{
	struct umn_file *uf = container_of(mni, struct umn_file, mni);
	bool wake = false;

	spin_lock(&uf->lock);
	mmu_interval_set_seq(mni, cur_seq);
	if (!uf->ring || range->event == MMU_NOTIFY_RELEASE)
		wake = umn_notifier_report(uf, range, (u16)cur_seq);
	spin_unlock(&uf->lock);

	if (wake)
		umn_notifier_wake(uf);
	return true;
}

static const struct mmu_interval_notifier_ops umn_mni_ops = {
	.invalidate = umn_invalidate,
};

/*
 * The fd's notifier (and in RING mode the classic one before it, so that
 * it counts every invalidation whose hits it publishes), inserted once.
 * Caller: current->mm == uf->mm, holds
 * uf->mutex, not mmap_lock (the mm's first notifier takes it for write).
 */
int umn_notifier_start(struct umn_file *uf)
{
	int ret;

	if (uf->mni_live)
		return 0;
	ret = umn_ring_notifier_start(uf);
	if (ret)
		return ret;
	ret = mmu_interval_notifier_insert(&uf->mni, uf->mm, 0, ULONG_MAX,
					   &umn_mni_ops);
	if (!ret)
		uf->mni_live = true;
	return ret;
}

/*
 * While any invalidation of the mm is in progress the kernel defers the
 * insertion of a notifier into its interval tree until the last one ends,
 * and invalidations in progress before a range entered uf->ranges did not
 * see it.  mmu_interval_read_begin() sleeps until those have ended, so
 * that after REGISTER returns every invalidation that starts is reported
 * and pages looked up are the new ones.  Caller holds uf->mutex, not
 * mmap_lock; the notifier is live.
 */
void umn_notifier_settle(struct umn_file *uf)
{
	mmu_interval_read_begin(&uf->mni);
}

/*
 * May the invalidation that last hit a region (@hit_seq, from the
 * callback's cur_seq) still be running?  Invalidations run in batches: a
 * batch ends before the next starts, and every callback of a batch sets
 * the fd's sequence to the batch's.  So if the fd's sequence is no longer
 * the region's, the batch that hit it has ended; if it is, it may have
 * (mmu_interval_read_begin() tells, and waits).  16 bits: a batch 2^15
 * batches later may look the same, which only costs a needless
 * umn_notifier_settle().  Caller holds uf->lock.
 */
bool umn_notifier_may_run(struct umn_file *uf, u16 hit_seq)
{
	lockdep_assert_held(&uf->lock);
	return hit_seq == (u16)READ_ONCE(uf->mni.invalidate_seq);
}

/*
 * At release: after this, no callback runs or will run for the fd.  May
 * sleep until a running invalidation of the mm ends.
 */
void umn_notifier_stop(struct umn_file *uf)
{
	if (uf->mni_live)
		mmu_interval_notifier_remove(&uf->mni);
	uf->mni_live = false;
	umn_ring_notifier_stop(uf);
}

/* The sequence of a walk, set under uf->lock like the fd's. */
static bool umn_walk_invalidate(struct mmu_interval_notifier *mni,
				const struct mmu_notifier_range *range,
				unsigned long cur_seq)
{
	struct umn_walk_notifier *w =
		container_of(mni, struct umn_walk_notifier, mni);

	spin_lock(&w->uf->lock);
	mmu_interval_set_seq(mni, cur_seq);
	spin_unlock(&w->uf->lock);
	return true;
}

static const struct mmu_interval_notifier_ops umn_walk_ops = {
	.invalidate = umn_walk_invalidate,
};

/*
 * A notifier over [@start, @start + @length) for the length of one ARM or
 * CHECK (on the caller's stack).  Caller: current->mm == uf->mm, holds
 * uf->mutex, not mmap_lock; removes it with umn_walk_notifier_remove().
 */
int umn_walk_notifier_insert(struct umn_walk_notifier *w, struct umn_file *uf,
			     unsigned long start, unsigned long length)
{
	memset(&w->mni, 0, sizeof(w->mni));
	w->uf = uf;
	return mmu_interval_notifier_insert(&w->mni, uf->mm, start, length,
					    &umn_walk_ops);
}

/* May sleep until a running invalidation of the mm ends. */
void umn_walk_notifier_remove(struct umn_walk_notifier *w)
{
	mmu_interval_notifier_remove(&w->mni);
}
