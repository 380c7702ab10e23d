// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: glue to the kernel's MMU notifiers.
 *
 * Every registered range is one struct mmu_interval_notifier, so the
 * kernel's interval tree finds the ranges an invalidation overlaps in
 * O(log n + k) and calls back only those.  The callback never sleeps (it
 * may run where blocking is not allowed, e.g. from the OOM reaper): it takes
 * umn_file::lock, queues the range, bumps the counter, wakes readers if the
 * queue was empty and returns true; where the invalidation may block it
 * calls cond_resched() (an invalidation runs one callback per overlapping
 * range, up to max_mm_regions of them: see umn_acct.c).  Locking rules: see umn_region.c.
 *
 * Process exit arrives as MMU_NOTIFY_RELEASE over the whole address space:
 * it is reported like any other invalidation.  The notifiers stay in the
 * (dead) mm's tree until the fd is closed; mmu_interval_notifier_insert()
 * took a reference on the mm for each of them, dropped by
 * mmu_interval_notifier_remove().
 */
#include <linux/mmu_notifier.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/signal.h>

#include "umn.h"

static bool umn_event_reported(const struct umn_file *uf,
			       const struct mmu_notifier_range *range)
{
	if (!(READ_ONCE(uf->features) & UMMUNOTIFY_FEATURE_FILTER))
		return true;
	return !umn_event_keeps_pages(range->event);
}

static bool umn_invalidate(struct mmu_interval_notifier *mni,
			   const struct mmu_notifier_range *range,
			   unsigned long cur_seq)
{
	struct umn_region *region = container_of(mni, struct umn_region, mni);
	struct umn_file *uf = region->uf;
	bool report = umn_event_reported(uf, range);
	bool wake = false;

	spin_lock(&uf->lock);
	mmu_interval_set_seq(mni, cur_seq);
	if (report) {
		wake = umn_region_queue_hit(region, range->start, range->end);
		umn_counter_bump(uf);
	}
	spin_unlock(&uf->lock);

	if (wake) {
		wake_up_interruptible(&uf->wait);
		kill_fasync(&uf->fasync, SIGIO, POLL_IN);
	}
	/* One callback per overlapping range: let others run between them. */
	if (mmu_notifier_range_blockable(range))
		cond_resched();
	return true;
}

static const struct mmu_interval_notifier_ops umn_mni_ops = {
	.invalidate = umn_invalidate,
};

/*
 * Caller: current->mm == region->uf->mm, holds uf->mutex, not mmap_lock.
 *
 * While any invalidation of the mm is in progress the kernel defers the
 * insertion into its interval tree until the last one ends, and
 * invalidations that start in the meantime do not see the new range.
 * mmu_interval_read_begin() sleeps until the insertion is done, so that
 * every invalidation that starts after REGISTER returns is reported.  (The
 * callers that were in progress during REGISTER have finished by then:
 * pages looked up after REGISTER are the new ones.)
 */
int umn_notifier_insert(struct umn_region *region)
{
	int ret;

	ret = mmu_interval_notifier_insert(&region->mni, region->uf->mm,
					   region->start,
					   region->end - region->start,
					   &umn_mni_ops);
	if (ret)
		return ret;
	mmu_interval_read_begin(&region->mni);
	return 0;
}

/* May sleep until a running invalidation of the mm ends. */
void umn_notifier_remove(struct umn_region *region)
{
	mmu_interval_notifier_remove(&region->mni);
}
