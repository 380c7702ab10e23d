// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: page revalidation (UMMUNOTIFY_FEATURE_REVALIDATE).
 *
 * ARM walks the page tables behind a registered range and keeps a keyed
 * digest (SipHash-2-4, per-fd random key) of the page frame numbers, in
 * order, plus one bit: were all pages writable (as umn_page_writable()
 * defines it).  CHECK walks them again and compares.  Both walks use
 * hmm_range_fault() with no fault flags, so nothing is faulted in or
 * split: a page that is not present (never touched, swapped out, under
 * migration), PROT_NONE (or a NUMA-hinting PTE), not backed by a struct
 * page, or in a VMA that is not private anonymous memory makes the answer
 * CHANGED.  A region keeps 8 bytes of
 * digest and two flags whatever its size; a walk uses a fixed buffer of
 * UMN_REVAL_CHUNK entries on the stack.
 *
 * Every walk runs under the sequence of a notifier: first the fd's own,
 * which covers the whole address space; if any invalidation of the mm
 * started during that walk, the next walks run under a notifier over the
 * range alone, inserted for the rest of the ARM or CHECK
 * (umn_walk_notifier_insert()), so that invalidations elsewhere do not
 * make them start again and again.  The sequence is
 * taken with mmu_interval_read_begin(), hmm_range_fault() gives up with
 * EBUSY as soon as an invalidation of the range starts, and the result is
 * kept only if mmu_interval_read_retry(), checked under umn_file::lock
 * (the lock the invalidate callback sets the sequence under), says no
 * invalidation started since.  The walk is then a snapshot of the range
 * at that check.  After UMN_REVAL_TRIES raced walks the answer is CHANGED.
 *
 * Locking rules (see also umn_region.c):
 * - umn_file::mutex is held for the whole of ARM and CHECK: it keeps the
 *   region registered (UNREGISTER takes it) and protects its revalidation
 *   state (reval, writable, digest).
 * - Under the mutex: mmu_interval_notifier_insert() of the walk's notifier
 *   (may take mmap_lock), mmu_interval_read_begin() (may sleep until a
 *   running invalidation ends; invalidations never take the mutex), then
 *   mmap_read_lock() of the caller's own mm, then hmm_range_fault() (takes
 *   page table locks), at the end mmu_interval_notifier_remove() (may
 *   sleep like mmu_interval_read_begin()).  Neither is called with
 *   mmap_lock held (an invalidation may hold it for write while we wait).
 * - umn_file::lock is taken alone, after mmap_lock is dropped, to check
 *   the sequence and read hit_counter.
 */
#include <linux/hmm.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/sched.h>
#include <linux/siphash.h>
#include <linux/uaccess.h>

#include "umn.h"

/* Page table entries looked up per hmm_range_fault() call (on the stack). */
#define UMN_REVAL_CHUNK	64
/* Walks raced by an invalidation before the answer is CHANGED. */
#define UMN_REVAL_TRIES	8

struct umn_snapshot {
	u64	digest;
	bool	writable;	/* every page writable */
};

enum umn_walk_result {
	UMN_WALK_OK,		/* @snap describes the range */
	UMN_WALK_DOUBT,		/* not trackable as it is mapped now */
	UMN_WALK_RACED,		/* an invalidation started: walk again */
};

/*
 * Private anonymous memory only.  *@vm_write: every VMA is writable.
 * Caller holds mmap_lock.
 */
static bool umn_range_anonymous(struct mm_struct *mm, unsigned long start,
				unsigned long end, bool *vm_write)
{
	struct vm_area_struct *vma;

	*vm_write = true;
	while (start < end) {
		vma = find_vma(mm, start);
		if (!vma || vma->vm_start > start || !vma_is_anonymous(vma))
			return false;
		if (vma->vm_flags &
		    (VM_SHARED | VM_IO | VM_PFNMAP | VM_MIXEDMAP | VM_HUGETLB))
			return false;
		if (!(vma->vm_flags & VM_WRITE))
			*vm_write = false;
		start = vma->vm_end;
	}
	return true;
}

/*
 * Write access to a present page: a writable PTE, or a read-only PTE in a
 * writable VMA over an exclusive anonymous page, which the next write
 * fault makes writable in place, without a copy (mprotect() on 6.1 leaves
 * such PTEs read-only; so do soft-dirty and userfaultfd write-protection).
 * A page shared after fork, KSM's or the zero page is not exclusive: a
 * write would copy it.  The page is only looked at, never referenced: if
 * it is being freed, the sequence check discards the walk.
 */
static bool umn_page_writable(unsigned long hmm_pfn, bool vm_write)
{
	struct page *page;

	if (hmm_pfn & HMM_PFN_WRITE)
		return true;
	if (!vm_write)
		return false;
	page = hmm_pfn_to_page(hmm_pfn);
	return PageAnon(page) && PageAnonExclusive(page);
}

/*
 * The pages of [@start, @end) (page aligned).  Caller holds mmap_lock of
 * uf->mm (read); @mni covers the range.
 */
static enum umn_walk_result umn_walk(struct umn_file *uf,
				     struct mmu_interval_notifier *mni,
				     unsigned long start, unsigned long end,
				     unsigned long seq,
				     struct umn_snapshot *snap)
{
	const siphash_key_t *key = &uf->reval_key;
	unsigned long pfns[UMN_REVAL_CHUNK];
	struct hmm_range range = {
		.notifier = mni,
		.notifier_seq = seq,
		.hmm_pfns = pfns,
		/* default_flags = pfn_flags_mask = 0: never fault */
	};
	unsigned long addr, i, n;
	bool vm_write;
	int ret;
	u64 h;

	if (!umn_range_anonymous(uf->mm, start, end, &vm_write))
		return UMN_WALK_DOUBT;

	h = siphash_2u64(start, end, key);
	snap->writable = true;
	for (addr = start; addr < end; addr += n << PAGE_SHIFT) {
		n = min_t(unsigned long, (end - addr) >> PAGE_SHIFT,
			  UMN_REVAL_CHUNK);
		range.start = addr;
		range.end = addr + (n << PAGE_SHIFT);
		memset(pfns, 0, n * sizeof(pfns[0]));
		ret = hmm_range_fault(&range);
		if (ret == -EBUSY)
			return UMN_WALK_RACED;
		if (ret)
			return UMN_WALK_DOUBT;
		for (i = 0; i < n; i++) {
			if (!(pfns[i] & HMM_PFN_VALID) ||
			    (pfns[i] & HMM_PFN_ERROR))
				return UMN_WALK_DOUBT;
			if (snap->writable &&
			    !umn_page_writable(pfns[i], vm_write))
				snap->writable = false;
			/* The order bits differ after a THP split: drop them. */
			pfns[i] &= ~HMM_PFN_FLAGS;
		}
		/*
		 * One SipHash over the chunk, chained: a quarter of the
		 * rounds of one call per frame (the finalization dominates).
		 */
		h = siphash_2u64(h, siphash(pfns, n * sizeof(pfns[0]), key),
				 key);
		cond_resched();
	}
	snap->digest = h;
	return UMN_WALK_OK;
}

/*
 * One walk under the sequence of @mni (covering the range): raced if an
 * invalidation @mni sees started meanwhile.  Caller holds uf->mutex and
 * not mmap_lock.
 */
static enum umn_walk_result umn_walk_once(struct umn_file *uf,
					  struct mmu_interval_notifier *mni,
					  unsigned long start,
					  unsigned long end,
					  struct umn_snapshot *snap)
{
	enum umn_walk_result res;
	unsigned long seq;

	seq = mmu_interval_read_begin(mni);
	mmap_read_lock(uf->mm);
	res = umn_walk(uf, mni, start, end, seq, snap);
	mmap_read_unlock(uf->mm);
	if (res == UMN_WALK_OK) {
		spin_lock(&uf->lock);
		if (mmu_interval_read_retry(mni, seq))
			res = UMN_WALK_RACED;
		spin_unlock(&uf->lock);
	}
	return res;
}

/*
 * A snapshot of the range.  Caller holds uf->mutex and not mmap_lock;
 * current->mm == uf->mm.
 */
static bool umn_snapshot_take(struct umn_file *uf, struct umn_region *region,
			      struct umn_snapshot *snap)
{
	unsigned long start = umn_region_start(region) & PAGE_MASK;
	unsigned long end = PAGE_ALIGN(umn_region_end(region));
	struct umn_walk_notifier w;
	enum umn_walk_result res;
	int tries;

	/* Usually nothing in the mm is invalidated during a walk. */
	res = umn_walk_once(uf, &uf->mni, start, end, snap);
	if (res != UMN_WALK_RACED)
		return res == UMN_WALK_OK;
	if (umn_walk_notifier_insert(&w, uf, start, end - start))
		return false;
	for (tries = 1; tries < UMN_REVAL_TRIES; tries++) {
		res = umn_walk_once(uf, &w.mni, start, end, snap);
		if (res != UMN_WALK_RACED)
			break;
	}
	umn_walk_notifier_remove(&w);
	return res == UMN_WALK_OK;
}

/* ARM: returns UMMUNOTIFY_REVAL_UNCHANGED (armed) or _CHANGED. */
static u32 umn_reval_arm(struct umn_file *uf, struct umn_region *region,
			 const struct ummunotify_revalidate_ioctl *req)
{
	struct umn_snapshot snap;
	bool ok;

	ok = umn_snapshot_take(uf, region, &snap);
	if (ok && (req->flags & UMMUNOTIFY_ARM_SINCE)) {
		/* Hit after the caller read @counter: what did it pin? */
		spin_lock(&uf->lock);
		ok = region->hit_counter <= req->counter;
		spin_unlock(&uf->lock);
	}
	if (!ok) {
		region->reval = UMN_REVAL_DOUBT;
		return UMMUNOTIFY_REVAL_CHANGED;
	}
	region->reval = UMN_REVAL_ARMED;
	region->digest = snap.digest;
	region->writable = snap.writable;
	return UMMUNOTIFY_REVAL_UNCHANGED;
}

static u32 umn_reval_check(struct umn_file *uf, struct umn_region *region)
{
	struct umn_snapshot snap;

	if (region->reval == UMN_REVAL_NONE)
		return UMMUNOTIFY_REVAL_NOT_ARMED;
	if (region->reval != UMN_REVAL_ARMED)
		return UMMUNOTIFY_REVAL_CHANGED;
	if (!umn_snapshot_take(uf, region, &snap))
		return UMMUNOTIFY_REVAL_CHANGED;
	if (snap.digest != region->digest)
		return UMMUNOTIFY_REVAL_CHANGED;
	if (region->writable && !snap.writable)
		return UMMUNOTIFY_REVAL_CHANGED;
	return UMMUNOTIFY_REVAL_UNCHANGED;
}

/* Caller: current->mm == uf->mm (checked by the ioctl entry point). */
long umn_reval_ioctl(struct umn_file *uf, unsigned int cmd,
		     struct ummunotify_revalidate_ioctl __user *arg)
{
	struct ummunotify_revalidate_ioctl req;
	struct umn_region *region;
	u32 valid_flags;
	long ret = 0;

	/* Not negotiated: the ioctls do not exist, as in 2010. */
	if (!(READ_ONCE(uf->features) & UMMUNOTIFY_FEATURE_REVALIDATE))
		return -ENOTTY;
	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	valid_flags = cmd == UMMUNOTIFY_ARM_REGION ? UMMUNOTIFY_ARM_SINCE : 0;
	if (req.flags & ~valid_flags)
		return -EINVAL;

	if (mutex_lock_interruptible(&uf->mutex))
		return -ERESTARTSYS;
	region = umn_region_find(uf, req.user_cookie);
	if (!region)
		ret = -EINVAL;
	else if (cmd == UMMUNOTIFY_ARM_REGION)
		req.result = umn_reval_arm(uf, region, &req);
	else
		req.result = umn_reval_check(uf, region);
	mutex_unlock(&uf->mutex);

	if (!ret && put_user(req.result, &arg->result))
		ret = -EFAULT;
	return ret;
}
