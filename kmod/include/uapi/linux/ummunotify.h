/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ummunotify: user space notification of MMU invalidations.
 *
 * A process opens /dev/ummunotify (O_RDONLY), registers address ranges of
 * its own address space under 64-bit cookies and learns, through read(),
 * which ranges had their pages unmapped or replaced.  A generation counter
 * in a read-only page mapped at offset 0 lets it check cheaply whether
 * anything happened since the last UMMUNOTIFY_EVENT_TYPE_LAST record.
 *
 * The structure layouts and ioctl numbers are those of the 2010 posting;
 * the feature bits are additions negotiated with EXCHANGE_FEATURES (no
 * bit asked for means the 2010 behaviour).  See docs/ummunotify-abi.md.
 */
#ifndef _UAPI_LINUX_UMMUNOTIFY_H
#define _UAPI_LINUX_UMMUNOTIFY_H

#include <linux/types.h>
#include <linux/ioctl.h>

/**
 * struct ummunotify_register_ioctl - argument of UMMUNOTIFY_REGISTER_REGION
 * @start: first byte of the range
 * @end: one past the last byte of the range (exclusive)
 * @user_cookie: opaque value chosen by user space, unique per fd
 * @flags: must be 0
 * @reserved: must be 0
 */
struct ummunotify_register_ioctl {
	__u64	start;
	__u64	end;
	__u64	user_cookie;
	__u32	flags;
	__u32	reserved;
};

#define UMMUNOTIFY_MAGIC		'U'

/* __u32 in: features wanted, out: the subset the kernel implements */
#define UMMUNOTIFY_EXCHANGE_FEATURES	_IOWR(UMMUNOTIFY_MAGIC, 1, __u32)
#define UMMUNOTIFY_REGISTER_REGION	_IOW(UMMUNOTIFY_MAGIC, 2, \
					     struct ummunotify_register_ioctl)
/* argument: pointer to the __u64 cookie of the range */
#define UMMUNOTIFY_UNREGISTER_REGION	_IOW(UMMUNOTIFY_MAGIC, 3, __u64)

/*
 * Feature bits for UMMUNOTIFY_EXCHANGE_FEATURES.
 *
 * UMMUNOTIFY_FEATURE_FILTER: do not report notifier events that leave the
 * pages behind a range in place (mprotect(), NUMA-hinting and userfaultfd
 * write-protection changes, write-protection for writeback, soft-dirty
 * clearing).  A page that is later replaced (copy-on-write, migration,
 * reclaim, unmap) is reported by the event that replaces it.
 */
#define UMMUNOTIFY_FEATURE_FILTER	(1U << 0)

/*
 * UMMUNOTIFY_FEATURE_REVALIDATE: enables UMMUNOTIFY_ARM_REGION and
 * UMMUNOTIFY_CHECK_REGION (without it they fail with ENOTTY, as in 2010).
 * ARM records a keyed digest of the page frames mapped behind a registered
 * range (and whether all of them are writable); CHECK tells whether the
 * same frames are still mapped with at least the same access, so that a
 * reported invalidation that changed nothing (a neighbour's VMA split, an
 * mlock, a THP split) need not cost a new registration.
 */
#define UMMUNOTIFY_FEATURE_REVALIDATE	(1U << 1)

/**
 * struct ummunotify_revalidate_ioctl - argument of ARM_REGION and CHECK_REGION
 * @user_cookie: in: cookie of a registered range
 * @counter: in, ARM with UMMUNOTIFY_ARM_SINCE only: a value of the
 *	generation counter read before the pages were pinned; ARM answers
 *	CHANGED if the range was hit after the counter had this value
 * @flags: in: ARM: 0 or UMMUNOTIFY_ARM_SINCE; CHECK: must be 0
 * @result: out: UMMUNOTIFY_REVAL_*
 */
struct ummunotify_revalidate_ioctl {
	__u64	user_cookie;
	__u64	counter;
	__u32	flags;
	__u32	result;
};

#define UMMUNOTIFY_ARM_SINCE		(1U << 0)

/*
 * Results.  ARM: UNCHANGED = armed with a digest of the frames mapped now;
 * CHANGED = armed as changed (a page not present, not writable/readable as
 * needed, not private anonymous memory, an invalidation racing on every
 * try, or a hit since @counter): every CHECK answers CHANGED until the
 * next ARM.  CHECK: UNCHANGED = the same frames are mapped, and all of them
 * writable if they all were at ARM; CHANGED = anything else; NOT_ARMED =
 * the range was never armed.
 */
enum {
	UMMUNOTIFY_REVAL_UNCHANGED	= 0,
	UMMUNOTIFY_REVAL_CHANGED	= 1,
	UMMUNOTIFY_REVAL_NOT_ARMED	= 2,
};

#define UMMUNOTIFY_ARM_REGION		_IOWR(UMMUNOTIFY_MAGIC, 4, \
					      struct ummunotify_revalidate_ioctl)
#define UMMUNOTIFY_CHECK_REGION		_IOWR(UMMUNOTIFY_MAGIC, 5, \
					      struct ummunotify_revalidate_ioctl)

/*
 * UMMUNOTIFY_FEATURE_RING: records without read().  The module also offers
 * a second page, struct ummunotify_ring: UMMUNOTIFY_OPEN_RING returns a new
 * fd (read-write, close-on-exec; the device itself stays read-only, as in
 * 2010) whose page 0 is the ring, mapped shared and read-write by the
 * process that opened the device.  A hit of a range is published there
 * (cookie and hit part) instead of being queued for read(), while the ring
 * has room; otherwise it is queued for read() as without the bit.  So a
 * client learns what was invalidated with loads and one store, and calls
 * read() only when @queued says so:
 *
 *   1. c = load-acquire(counter)            (the counter page, as in 2010)
 *   2. h = load-acquire(ring->head); copy records ring->tail .. h - 1
 *      (index modulo UMMUNOTIFY_RING_SLOTS); store-release(ring->tail, h)
 *   3. if load-acquire(ring->queued): read() up to a LAST record, as in 2010
 *   4. if records were taken in 2 and load-acquire(ring->running) is not 0:
 *      ioctl(UMMUNOTIFY_SETTLE) before pinning any of their ranges again
 *
 * Then every hit counted up to c was taken in 2 or 3.  A record is
 * published when the invalidation starts, before the pages go; @running
 * counts the invalidations of the address space in progress (incremented
 * before any of their records is published, decremented after they end),
 * so 0 in step 4 means the pages of every record taken are gone, and
 * pinning again finds the new ones.  SETTLE waits until every invalidation
 * of the address space running when it was called has ended (read() waits
 * so by itself).  The kernel only reads @tail: any value a client writes
 * there at worst makes the ring look full (records go to read()).  A
 * record stays in the ring after its range is unregistered (a queued one
 * goes with it): at worst a false positive.  poll() reports the fd
 * readable while the ring has records not taken.  The mapping is not
 * copied to a fork child.
 */
#define UMMUNOTIFY_FEATURE_RING		(1U << 2)

#define UMMUNOTIFY_RING_SLOTS		128

/**
 * struct ummunotify_ring_record - one hit published in the ring
 * @user_cookie: the range's cookie
 * @hint_start: start of the invalidated part of the range
 * @hint_end: end of the invalidated part of the range (exclusive)
 */
struct ummunotify_ring_record {
	__u64	user_cookie;
	__u64	hint_start;
	__u64	hint_end;
};

/**
 * struct ummunotify_ring - page 0 of the UMMUNOTIFY_OPEN_RING fd
 * @head: kernel: records published since open (wraps)
 * @running: kernel: invalidations of the address space in progress
 * @queued: kernel: not 0 while read() has records or a LAST to return
 * @slots: kernel: UMMUNOTIFY_RING_SLOTS
 * @tail: user: records taken (wraps); the kernel publishes while
 *	@head - @tail < @slots
 * @record: the records, @head modulo @slots
 *
 * @head and @tail are in separate cache lines: one is written by the
 * kernel, the other by the client.
 */
struct ummunotify_ring {
	__u32	head;
	__u32	running;
	__u32	queued;
	__u32	slots;
	__u8	reserved0[48];
	__u32	tail;
	__u8	reserved1[60];
	struct ummunotify_ring_record	record[UMMUNOTIFY_RING_SLOTS];
};

/* RING only (else ENOTTY): see UMMUNOTIFY_FEATURE_RING. */
#define UMMUNOTIFY_SETTLE		_IO(UMMUNOTIFY_MAGIC, 6)
/* RING only (else ENOTTY): returns the fd of the ring page. */
#define UMMUNOTIFY_OPEN_RING		_IO(UMMUNOTIFY_MAGIC, 7)

enum {
	UMMUNOTIFY_EVENT_TYPE_INVAL	= 0,
	UMMUNOTIFY_EVENT_TYPE_LAST	= 1,
};

enum {
	UMMUNOTIFY_EVENT_FLAG_HINT	= 1 << 0,
};

/**
 * struct ummunotify_event - one record returned by read()
 * @type: UMMUNOTIFY_EVENT_TYPE_INVAL or UMMUNOTIFY_EVENT_TYPE_LAST
 * @flags: UMMUNOTIFY_EVENT_FLAG_HINT when [hint_start, hint_end) is the
 *	only part of the range that was invalidated
 * @hint_start: start of the invalidated part (the range start if no HINT)
 * @hint_end: end of the invalidated part (the range end if no HINT)
 * @user_cookie_counter: INVAL: the range's cookie; LAST: the generation
 *	counter when the queue became empty
 */
struct ummunotify_event {
	__u32	type;
	__u32	flags;
	__u64	hint_start;
	__u64	hint_end;
	__u64	user_cookie_counter;
};

#endif /* _UAPI_LINUX_UMMUNOTIFY_H */
