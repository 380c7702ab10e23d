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
#include <linux/wait.h>
#include <linux/fs.h>
#include <linux/mmu_notifier.h>
#include <linux/mm_types.h>
#include <linux/siphash.h>

#include "include/uapi/linux/ummunotify.h"

/* Features this module implements. */
#define UMN_FEATURES_SUPPORTED	(UMMUNOTIFY_FEATURE_FILTER | \
				 UMMUNOTIFY_FEATURE_REVALIDATE)

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
 * @lock: spinlock, protects @queue, @need_last, @reading and the queue
 *	state of every region; taken by the notifier callback
 * @mutex: serializes register, unregister and read; protects @cookies and
 *	@nregions
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
 * @wait: readers and pollers
 * @fasync: SIGIO subscribers
 * @reval_key: random per-fd key of the revalidation digests (set at open)
 * @user_acct: ranges charged to the opener's user (umn_acct.c)
 * @mm_acct: ranges charged to @mm (umn_acct.c)
 */
struct umn_file {
	struct mm_struct	*mm;
	spinlock_t		lock;	/* queue, counter; see umn_region.c */
	struct mutex		mutex;	/* cookies, readers; see umn_region.c */
	struct rb_root		cookies;
	unsigned int		nregions;
	struct list_head	queue;
	bool			need_last;
	bool			reading;
	u32			features;
	unsigned long		flags;
	struct page		*counter_page;
	u64			*counter;
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
 * @mni: the kernel's interval-tree node for this range
 * @uf: owning file
 * @start: first byte
 * @end: one past the last byte
 * @cookie: user cookie
 * @node: entry in umn_file::cookies (under umn_file::mutex)
 * @qentry: entry in umn_file::queue (under umn_file::lock)
 * @queued: @qentry is on the queue (under umn_file::lock)
 * @hint: one invalidation since queued: [@hint_start, @hint_end) valid
 * @hint_start: start of the invalidated part, clipped to the range
 * @hint_end: end of the invalidated part, clipped to the range
 * @hits: invalidations that hit the range (wraps; compared for equality)
 * @peek_hits: @hits when read() last copied the record out
 * @hit_counter: generation counter after the last reported hit (under
 *	umn_file::lock), for ARM with UMMUNOTIFY_ARM_SINCE
 * @reval: enum umn_reval_state (under umn_file::mutex)
 * @writable: every page was writable at ARM (under umn_file::mutex)
 * @digest: keyed digest of the frames at ARM (under umn_file::mutex)
 */
struct umn_region {
	struct mmu_interval_notifier	mni;
	struct umn_file			*uf;
	u64				start;
	u64				end;
	u64				cookie;
	struct rb_node			node;
	struct list_head		qentry;
	bool				queued;
	bool				hint;
	u64				hint_start;
	u64				hint_end;
	unsigned int			hits;
	unsigned int			peek_hits;
	u64				hit_counter;
	u8				reval;
	bool				writable;
	u64				digest;
};

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
bool umn_region_queue_hit(struct umn_region *region, u64 start, u64 end);
struct umn_region *umn_region_find(struct umn_file *uf, u64 cookie);
bool umn_region_readable(struct umn_file *uf);
ssize_t umn_region_read(struct umn_file *uf, char __user *buf, size_t count);

/* umn_notifier.c */
int umn_notifier_insert(struct umn_region *region);
void umn_notifier_remove(struct umn_region *region);

/* umn_reval.c */
long umn_reval_ioctl(struct umn_file *uf, unsigned int cmd,
		     struct ummunotify_revalidate_ioctl __user *arg);

/* umn_counter.c */
int umn_counter_init(struct umn_file *uf);
void umn_counter_free(struct umn_file *uf);
int umn_counter_mmap(struct umn_file *uf, struct vm_area_struct *vma);
void umn_counter_bump(struct umn_file *uf);
u64 umn_counter_read(struct umn_file *uf);

#endif /* _UMN_H */
