// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: the ring page (UMMUNOTIFY_FEATURE_RING).
 *
 * One zeroed page per fd that negotiated RING, struct ummunotify_ring,
 * mapped shared and writable through a second fd (UMMUNOTIFY_OPEN_RING:
 * the device is opened read-only, as in 2010, and a read-only file cannot
 * be mapped shared and writable).  That fd holds a reference to the
 * device's file, so the page outlives it and every mapping.  A hit
 * of a range that is not queued for read() is published there while the
 * ring has room, so that a client learns it with loads instead of a read()
 * (issue 13: one read() was ~16% of a churned 4 KiB transfer).  A hit the
 * ring has no room for is queued for read() as without the feature, and
 * @queued tells the client so: memory stays one page per fd plus the
 * ranges, whatever the number of events.
 *
 * Records are published when an invalidation starts, before its pages go.
 * So that a client need not call read() (which waits for that) to know
 * when it may pin a range again, @running counts the invalidations of the
 * address space in progress: a classic mmu_notifier per fd (umn_file::mn)
 * increments it in invalidate_range_start, before publishing, and
 * decrements it in invalidate_range_end.  mmu_notifier_register() takes
 * mm_take_all_locks(), so no invalidation is in flight while the notifier
 * is added: every start it sees has its end, and no end comes without its
 * start.  (The interval notifier's callback runs before the classic
 * starts, which is why the publishing moves there in RING mode: a record
 * must never be visible while @running does not count its invalidation.)
 * The one exception is the non-blocking path of the OOM reaper, where a
 * failing notifier makes the core call every end without every start: the
 * decrement then stops at 0, and the process is being killed anyway.
 *
 * Locking: every field the kernel writes is written under umn_file::lock
 * (see umn_region.c), @head and @running with release stores; @tail is
 * the client's, read with an acquire load and never trusted beyond
 * deciding whether there is room.  The page is freed in release(), after both
 * notifiers are gone and every mapping with them (each holds the ring's
 * file, which holds the device's).
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/minmax.h>
#include <linux/mmu_notifier.h>

#include "umn.h"

/* EXCHANGE_FEATURES: caller holds uf->mutex, the fd is not used yet. */
int umn_ring_set(struct umn_file *uf, bool on)
{
	if (on && !uf->ring_page) {
		uf->ring_page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
		if (!uf->ring_page)
			return -ENOMEM;
		uf->ring = page_address(uf->ring_page);
		uf->ring->slots = UMMUNOTIFY_RING_SLOTS;
	} else if (!on) {
		umn_ring_free(uf);
	}
	return 0;
}

void umn_ring_free(struct umn_file *uf)
{
	if (uf->ring_page)
		__free_page(uf->ring_page);
	uf->ring_page = NULL;
	uf->ring = NULL;
}

/*
 * Publish a hit of @r by [@start, @end) if the ring has room.  Caller
 * holds uf->lock and bumps the counter after (so the record is visible
 * before the new counter value).  *@was_empty tells whether the client had
 * taken every record before (then pollers are woken).
 */
bool umn_ring_publish(struct umn_file *uf, const struct umn_region *r,
		      u64 start, u64 end, bool *was_empty)
{
	struct ummunotify_ring *ring = uf->ring;
	struct ummunotify_ring_record *rec;
	u32 head = ring->head;
	/*
	 * Acquire: pairs with the client's release store of @tail, made
	 * after it copied the records out; the slots it frees are written
	 * below only after that.
	 */
	u32 used = head - smp_load_acquire(&ring->tail);

	lockdep_assert_held(&uf->lock);
	/* A tail the client moved ahead of head reads as a full ring. */
	if (used >= UMMUNOTIFY_RING_SLOTS)
		return false;
	*was_empty = !used;
	rec = &ring->record[head % UMMUNOTIFY_RING_SLOTS];
	WRITE_ONCE(rec->user_cookie, r->cookie);
	WRITE_ONCE(rec->hint_start, max_t(u64, start, umn_region_start(r)));
	WRITE_ONCE(rec->hint_end, min_t(u64, end, umn_region_end(r)));
	/* Release: the record before the head that covers it. */
	smp_store_release(&ring->head, head + 1);
	return true;
}

/* Records published and not yet taken by the client?  For poll(). */
bool umn_ring_pending(struct umn_file *uf)
{
	return uf->ring &&
	       READ_ONCE(uf->ring->head) != READ_ONCE(uf->ring->tail);
}

/*
 * @queued follows the read() queue.  Caller holds uf->lock and changed the
 * queue or need_last; the counter bump that follows a new record is a
 * release store, so a client that saw the counter sees @queued.
 */
void umn_ring_sync_queued(struct umn_file *uf)
{
	lockdep_assert_held(&uf->lock);
	if (uf->ring)
		WRITE_ONCE(uf->ring->queued,
			   !list_empty(&uf->queue) || uf->need_last);
}

/*
 * The classic notifier's start: count the invalidation, then report its
 * hits (umn_notifier_report(), which publishes).  Never fails, never
 * sleeps unless the range is blockable.
 */
static int umn_ring_start(struct mmu_notifier *mn,
			  const struct mmu_notifier_range *range)
{
	struct umn_file *uf = container_of(mn, struct umn_file, mn);
	bool wake;

	spin_lock(&uf->lock);
	/*
	 * Plain store: the release store of any record's head below orders
	 * it for a client that sees the record.
	 */
	WRITE_ONCE(uf->ring->running, uf->ring->running + 1);
	wake = umn_notifier_report(uf, range,
				   (u16)READ_ONCE(uf->mni.invalidate_seq));
	spin_unlock(&uf->lock);
	if (wake)
		umn_notifier_wake(uf);
	return 0;
}

static void umn_ring_end(struct mmu_notifier *mn,
			 const struct mmu_notifier_range *range)
{
	struct umn_file *uf = container_of(mn, struct umn_file, mn);
	u32 running;

	spin_lock(&uf->lock);
	running = uf->ring->running;
	if (running) {
		/*
		 * Release: a client that reads the new value also sees the
		 * page tables as this invalidation left them (pages gone).
		 */
		smp_store_release(&uf->ring->running, running - 1);
	}
	spin_unlock(&uf->lock);
}

static const struct mmu_notifier_ops umn_ring_ops = {
	.invalidate_range_start	= umn_ring_start,
	.invalidate_range_end	= umn_ring_end,
};

/*
 * At the first REGISTER of a RING fd, before the interval notifier.
 * Caller: current->mm == uf->mm, holds uf->mutex, not mmap_lock
 * (mmu_notifier_register() takes it for write).
 */
int umn_ring_notifier_start(struct umn_file *uf)
{
	int ret;

	if (!uf->ring || uf->mn_live)
		return 0;
	uf->mn.ops = &umn_ring_ops;
	ret = mmu_notifier_register(&uf->mn, uf->mm);
	if (!ret)
		uf->mn_live = true;
	return ret;
}

/* At release; waits for running callbacks (SRCU). */
void umn_ring_notifier_stop(struct umn_file *uf)
{
	if (uf->mn_live)
		mmu_notifier_unregister(&uf->mn, uf->mm);
	uf->mn_live = false;
}

/*
 * Exactly one page at offset 0, shared, not executable, in the opener's
 * address space only (like every entry point of the device); not copied
 * to a fork child (the device answers EIO there anyway).  Called with
 * mmap_lock held for write.
 */
static int umn_ring_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct file *dev = file->private_data;
	struct umn_file *uf = dev->private_data;

	if (current->mm != uf->mm)
		return -EIO;
	if (vma->vm_pgoff != 0 || vma->vm_end - vma->vm_start != PAGE_SIZE)
		return -EINVAL;
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;

	umn_vma_serve_page(vma, uf->ring_page, VM_MAYEXEC,
			   VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY);
	return 0;
}

static int umn_ring_release(struct inode *inode, struct file *file)
{
	fput(file->private_data);
	return 0;
}

static const struct file_operations umn_ring_fops = {
	.owner		= THIS_MODULE,
	.mmap		= umn_ring_mmap,
	.release	= umn_ring_release,
};

/*
 * UMMUNOTIFY_OPEN_RING: a new fd whose page 0 is the ring.  It holds a
 * reference to @file (the device's), dropped when it is released.  Marks
 * the fd used: the features (and so the ring) no longer change.
 */
long umn_ring_open(struct umn_file *uf, struct file *file)
{
	bool ring;
	int fd;

	/* Under the mutex: EXCHANGE_FEATURES cannot free the ring after. */
	if (mutex_lock_interruptible(&uf->mutex))
		return -ERESTARTSYS;
	ring = uf->features & UMMUNOTIFY_FEATURE_RING;
	if (ring)
		set_bit(UMN_USED, &uf->flags);
	mutex_unlock(&uf->mutex);
	if (!ring)
		return -ENOTTY;

	get_file(file);
	fd = anon_inode_getfd("[ummunotify-ring]", &umn_ring_fops, file,
			      O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fput(file);
	return fd;
}
