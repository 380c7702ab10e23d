/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ummunotify: shared definitions between the device, the region
 * bookkeeping, the notifier glue and the counter page.
 *
 * The locking rules are stated at the top of umn_region.c, which owns
 * umn_file::lock and umn_file::mutex.
 */
#ifndef _UMN_H
#define _UMN_H

#include <linux/types.h>
#include <linux/spinlock.h>
#include <linux/mutex.h>
#include <linux/list.h>
#include <linux/rbtree.h>
#include <linux/interval_tree.h>
#include <linux/wait.h>
#include <linux/fs.h>
#include <linux/mmu_notifier.h>
#include <linux/mm_types.h>
#include <linux/siphash.h>

#include "include/uapi/linux/ummunotify.h"

/* Features this module implements. */
#define UMN_FEATURES_SUPPORTED	(UMMUNOTIFY_FEATURE_FILTER | \
				 UMMUNOTIFY_FEATURE_REVALIDATE | \
				 UMMUNOTIFY_FEATURE_RING)

/* Events that never change the pages behind a range (FILTER). */
static inline bool umn_event_keeps_pages(enum mmu_notifier_event ev)
{
	return ev == MMU_NOTIFY_PROTECTION_VMA ||
	       ev == MMU_NOTIFY_PROTECTION_PAGE ||
	       ev == MMU_NOTIFY_SOFT_DIRTY;
}

/* umn_file::flags bits */
enum {
	UMN_USED,		/* features are frozen */
};

/**
 * struct umn_file - state of one open /dev/ummunotify
 * @mm: the opener's address space (mmgrab'ed, never mmget'ed)
 * @mni: one interval notifier over the whole of @mm, inserted by the
 *	first REGISTER (umn_notifier.c)
 * @mni_live: @mni is inserted (under @mutex; removed at release only)
 * @mn: RING only: a classic notifier counting the invalidations in
 *	progress and publishing hits (umn_ring.c), registered by the first
 *	REGISTER before @mni
 * @mn_live: @mn is registered (under @mutex; unregistered at release only)
 * @lock: spinlock, protects @ranges, @walkers, @queue, @need_last,
 *	@reading and the queue state of every region; taken by the notifier
 *	callback
 * @mutex: serializes register, unregister and read; protects @cookies and
 *	@nregions
 * @ranges: every registered region, by address (changed under @mutex and
 *	@lock, searched by the callback under @lock)
 * @walkers: callbacks paused in the middle of @ranges (under @lock)
 * @walk_wait: REGISTER and UNREGISTER waiting for @walkers to drop to 0
 * @cookies: every registered region, by cookie
 * @nregions: number of entries in @cookies
 * @queue: regions with a pending INVAL record
 * @need_last: an INVAL was returned and no LAST since the queue emptied
 * @reading: a read() has built its records and not yet committed them,
 *	and no hit has woken readers since
 * @features: negotiated UMMUNOTIFY_FEATURE_* bits
 * @flags: UMN_* bits
 * @counter_page: page holding the generation counter
 * @counter: the generation counter (first 8 bytes of @counter_page)
 * @ring_page: RING only: the page of @ring (set before the fd is used)
 * @ring: RING only: struct ummunotify_ring, mapped by the client through
 *	the fd of UMMUNOTIFY_OPEN_RING
 * @wait: readers and pollers
 * @fasync: SIGIO subscribers
 * @reval_key: random per-fd key of the revalidation digests (set at open)
 * @user_acct: ranges charged to the opener's user (umn_acct.c)
 * @mm_acct: ranges charged to @mm (umn_acct.c)
 */
struct umn_file {
	struct mm_struct	*mm;
	struct mmu_interval_notifier	mni;
	bool			mni_live;
	struct mmu_notifier	mn;
	bool			mn_live;
	spinlock_t		lock;	/* queue, counter; see umn_region.c */
	struct mutex		mutex;	/* cookies, readers; see umn_region.c */
	struct rb_root_cached	ranges;
	unsigned int		walkers;
	wait_queue_head_t	walk_wait;
	struct rb_root		cookies;
	unsigned int		nregions;
	struct list_head	queue;
	bool			need_last;
	bool			reading;
	u32			features;
	unsigned long		flags;
	struct page		*counter_page;
	u64			*counter;
	struct page		*ring_page;
	struct ummunotify_ring	*ring;
	wait_queue_head_t	wait;
	struct fasync_struct	*fasync;
	siphash_key_t		reval_key;
	struct umn_acct		*user_acct;
	struct umn_acct		*mm_acct;
};

/* umn_region::reval: revalidation state (under umn_file::mutex) */
enum umn_reval_state {
	UMN_REVAL_NONE,		/* never armed: CHECK answers NOT_ARMED */
	UMN_REVAL_ARMED,	/* @digest and @writable describe the frames */
	UMN_REVAL_DOUBT,	/* armed as changed: CHECK answers CHANGED */
};

/**
 * struct umn_region - one registered range
 * @it: entry in umn_file::ranges: @it.start is the first byte, @it.last
 *	the last one (changed under umn_file::mutex and umn_file::lock)
 * @node: entry in umn_file::cookies (under umn_file::mutex)
 * @qentry: entry in umn_file::queue (under umn_file::lock)
 * @cookie: user cookie
 * @hit_counter: generation counter after the last reported hit (under
 *	umn_file::lock), for ARM with UMMUNOTIFY_ARM_SINCE
 * @digest: keyed digest of the frames at ARM (under umn_file::mutex)
 * @hint_first: first unit of the invalidated part (see umn_hint_shift())
 * @hint_last: last unit of the invalidated part
 * @hit_seq: low 16 bits of the notifier sequence of the last reported hit
 *	(under umn_file::lock; see umn_notifier_may_run())
 * @queued: @qentry is on the queue (under umn_file::lock)
 * @hint: one invalidation since queued: @hint_first..@hint_last valid
 * @rehit: hit again since read() last copied the record out
 * @reval: enum umn_reval_state (under umn_file::mutex)
 * @writable: every page was writable at ARM (under umn_file::mutex)
 *
 * The fields under different locks are separate bytes, never bitfields
 * sharing a word.  At most 128 bytes (UMN_REGION_MAX_SIZE): one slab
 * object is the whole kernel memory of a range (issue 13).
 */
struct umn_region {
	struct interval_tree_node	it;
	struct rb_node			node;
	struct list_head		qentry;
	u64				cookie;
	u64				hit_counter;
	u64				digest;
	u32				hint_first;
	u32				hint_last;
	u16				hit_seq;
	bool				queued;
	bool				hint;
	bool				rehit;
	u8				reval;
	bool				writable;
};

#define UMN_REGION_MAX_SIZE	128

static inline u64 umn_region_start(const struct umn_region *r)
{
	return r->it.start;
}

/* One past the last byte. */
static inline u64 umn_region_end(const struct umn_region *r)
{
	return (u64)r->it.last + 1;
}

/* umn_acct.c */
enum {
	UMN_ACCT_USER,
	UMN_ACCT_MM,
};

extern unsigned int umn_max_user_regions;
extern unsigned int umn_max_mm_regions;
struct umn_acct *umn_acct_get(unsigned int kind, unsigned long key);
void umn_acct_put(struct umn_acct *a);
bool umn_acct_charge(struct umn_acct *a, unsigned int limit);
void umn_acct_uncharge(struct umn_acct *a);

/* umn_region.c */
extern unsigned int umn_max_regions;
int umn_region_cache_init(void);
void umn_region_cache_exit(void);
long umn_live_regions(void);
int umn_region_register(struct umn_file *uf,
			const struct ummunotify_register_ioctl *req);
int umn_region_unregister(struct umn_file *uf, u64 cookie);
void umn_region_remove_all(struct umn_file *uf);
bool umn_region_queue_hit(struct umn_file *uf, struct umn_region *region,
			  u64 start, u64 end);
void umn_region_tree_lock(struct umn_file *uf);
struct umn_region *umn_region_find(struct umn_file *uf, u64 cookie);
bool umn_region_readable(struct umn_file *uf);
ssize_t umn_region_read(struct umn_file *uf, char __user *buf, size_t count);

/* umn_notifier.c */
int umn_notifier_start(struct umn_file *uf);
bool umn_notifier_report(struct umn_file *uf,
			 const struct mmu_notifier_range *range, u16 seq);
void umn_notifier_wake(struct umn_file *uf);
void umn_notifier_settle(struct umn_file *uf);
bool umn_notifier_may_run(struct umn_file *uf, u16 hit_seq);
void umn_notifier_stop(struct umn_file *uf);

/* A notifier over one range for the length of an ARM or CHECK walk. */
struct umn_walk_notifier {
	struct mmu_interval_notifier	mni;
	struct umn_file			*uf;
};

int umn_walk_notifier_insert(struct umn_walk_notifier *w, struct umn_file *uf,
			     unsigned long start, unsigned long length);
void umn_walk_notifier_remove(struct umn_walk_notifier *w);

/* umn_reval.c */
long umn_reval_ioctl(struct umn_file *uf, unsigned int cmd,
		     struct ummunotify_revalidate_ioctl __user *arg);

/* umn_counter.c */
int umn_counter_init(struct umn_file *uf);
void umn_counter_free(struct umn_file *uf);
int umn_counter_mmap(struct umn_file *uf, struct vm_area_struct *vma);
void umn_vma_serve_page(struct vm_area_struct *vma, struct page *page,
			vm_flags_t clear, vm_flags_t set);
void umn_counter_bump(struct umn_file *uf);
u64 umn_counter_read(struct umn_file *uf);

/* umn_ring.c */
int umn_ring_set(struct umn_file *uf, bool on);
void umn_ring_free(struct umn_file *uf);
bool umn_ring_publish(struct umn_file *uf, const struct umn_region *r,
		      u64 start, u64 end, bool *was_empty);
bool umn_ring_pending(struct umn_file *uf);
void umn_ring_sync_queued(struct umn_file *uf);
int umn_ring_notifier_start(struct umn_file *uf);
void umn_ring_notifier_stop(struct umn_file *uf);
long umn_ring_open(struct umn_file *uf, struct file *file);

#endif /* _UMN_H */
