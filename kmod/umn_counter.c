// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: the generation counter page.
 *
 * One zeroed page per fd; its first 8 bytes are a u64 counter that user
 * space maps read-only at offset 0 and compares with the value of the last
 * LAST record.  The counter is written only under umn_file::lock (see
 * umn_region.c), with a release store so that the queued record is
 * published before the new value.  The page is freed in release(), which
 * runs only after every mapping of it is gone (each holds the file).
 */
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/mm_types.h>

#include "umn.h"

int umn_counter_init(struct umn_file *uf)
{
	uf->counter_page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!uf->counter_page)
		return -ENOMEM;
	uf->counter = page_address(uf->counter_page);
	return 0;
}

void umn_counter_free(struct umn_file *uf)
{
	if (uf->counter_page)
		__free_page(uf->counter_page);
	uf->counter_page = NULL;
	uf->counter = NULL;
}

/* Caller holds uf->lock. */
void umn_counter_bump(struct umn_file *uf)
{
	lockdep_assert_held(&uf->lock);
	/*
	 * Release: the record queued under the same lock is visible before
	 * the new value, for readers that look at the page without the lock.
	 */
	smp_store_release(uf->counter, *uf->counter + 1);
}

/* Caller holds uf->lock. */
u64 umn_counter_read(struct umn_file *uf)
{
	lockdep_assert_held(&uf->lock);
	return *uf->counter;
}

/*
 * A page of the module (the counter page, the ring page) is handed out by
 * the fault handler rather than inserted at mmap time, so that the mapping
 * stays valid whatever user space does to it (madvise(DONTNEED) zaps it,
 * mremap moves it): the next access simply faults the same page in again.
 * The vma's private data is the page; the mapping holds the file that
 * frees it.
 */
static vm_fault_t umn_page_fault(struct vm_fault *vmf)
{
	struct page *page = vmf->vma->vm_private_data;

	if (vmf->pgoff != 0)
		return VM_FAULT_SIGBUS;
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct umn_page_vm_ops = {
	.fault = umn_page_fault,
};

/*
 * Serve @page as the one page of @vma, with the flags in @clear cleared and
 * those in @set set.  vm_flags became read-only behind vm_flags_set() and
 * vm_flags_clear() in 6.3; Kbuild detects them (this module builds for 6.1
 * and 6.12).
 */
void umn_vma_serve_page(struct vm_area_struct *vma, struct page *page,
			vm_flags_t clear, vm_flags_t set)
{
#ifdef UMN_HAVE_VM_FLAGS_SETTERS
	vm_flags_clear(vma, clear);
	vm_flags_set(vma, set);
#else
	vma->vm_flags &= ~clear;
	vma->vm_flags |= set;
#endif
	vma->vm_ops = &umn_page_vm_ops;
	vma->vm_private_data = page;
}

/*
 * Exactly one page, at offset 0, shared, readable only: anything else is
 * refused before the mapping exists.  Called with mmap_lock held for write.
 * The mapping holds the file, so the page outlives it (see release()).
 */
int umn_counter_mmap(struct umn_file *uf, struct vm_area_struct *vma)
{
	if (vma->vm_pgoff != 0 || vma->vm_end - vma->vm_start != PAGE_SIZE)
		return -EINVAL;
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_flags & (VM_WRITE | VM_EXEC))
		return -EPERM;

	umn_vma_serve_page(vma, uf->counter_page, VM_MAYWRITE | VM_MAYEXEC,
			   VM_DONTEXPAND | VM_DONTDUMP);
	return 0;
}
