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
