// SPDX-License-Identifier: GPL-2.0
/*
 * ABI conformance of /dev/ummunotify: layouts and numbers, events and
 * hints, the counter page, blocking/non-blocking reads, poll/epoll/select,
 * SIGIO, feature negotiation and every documented error.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <linux/userfaultfd.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <stddef.h>

#include "harness.h"
#include "umn_util.h"

/* Read everything pending; returns the number of records. */
static int drain(int fd, struct ummunotify_event *ev, int max)
{
	int n = umn_read(fd, ev, max);

	ASSERT_TRUE(n >= 0);
	return n;
}

TEST(ioctl_numbers_and_layouts_match_2010)
{
	ASSERT_EQ(UMMUNOTIFY_EXCHANGE_FEATURES, 0xC0045501);
	ASSERT_EQ(UMMUNOTIFY_REGISTER_REGION, 0x40205502);
	ASSERT_EQ(UMMUNOTIFY_UNREGISTER_REGION, 0x40085503);
	ASSERT_EQ(sizeof(struct ummunotify_register_ioctl), 32);
	ASSERT_EQ(sizeof(struct ummunotify_event), 32);
	ASSERT_EQ(offsetof(struct ummunotify_event, hint_start), 8);
	ASSERT_EQ(offsetof(struct ummunotify_event, user_cookie_counter), 24);
	ASSERT_EQ(offsetof(struct ummunotify_register_ioctl, flags), 24);
	ASSERT_EQ(UMMUNOTIFY_EVENT_TYPE_INVAL, 0);
	ASSERT_EQ(UMMUNOTIFY_EVENT_TYPE_LAST, 1);
	ASSERT_EQ(UMMUNOTIFY_EVENT_FLAG_HINT, 1);
	ASSERT_EQ(UMMUNOTIFY_FEATURE_FILTER, 1);
}

TEST(open_for_writing_fails_einval)
{
	ASSERT_ERRNO(open(UMN_DEV, O_RDWR), EINVAL);
	ASSERT_ERRNO(open(UMN_DEV, O_WRONLY), EINVAL);
}

TEST(counter_is_zero_after_open)
{
	int fd = umn_open();

	ASSERT_EQ(*umn_counter(fd), 0);
}

TEST(umn_test_2010_scenario)
{
	struct ummunotify_event ev[8];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(3, 1);

	ASSERT_EQ(umn_reg(fd, p, 3 * PAGE, 123), 0);
	ASSERT_EQ(munmap(p + PAGE, PAGE), 0);
	ASSERT_EQ(*c, 1);
	ASSERT_EQ(drain(fd, ev, 8), 2);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	ASSERT_EQ(ev[0].user_cookie_counter, 123);
	ASSERT_EQ(ev[0].flags, UMMUNOTIFY_EVENT_FLAG_HINT);
	ASSERT_EQ(ev[0].hint_start, (uintptr_t)p + PAGE);
	ASSERT_EQ(ev[0].hint_end, (uintptr_t)p + 2 * PAGE);
	ASSERT_EQ(ev[1].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[1].user_cookie_counter, 1);
	ASSERT_EQ(umn_unreg(fd, 123), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(*c, 1);
}

TEST(hint_is_clipped_to_the_range)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(4, 1);

	ASSERT_EQ(umn_reg(fd, p + PAGE, 2 * PAGE, 7), 0);
	ASSERT_EQ(munmap(p, 4 * PAGE), 0);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].flags, UMMUNOTIFY_EVENT_FLAG_HINT);
	ASSERT_EQ(ev[0].hint_start, (uintptr_t)p + PAGE);
	ASSERT_EQ(ev[0].hint_end, (uintptr_t)p + 3 * PAGE);
}

TEST(second_hit_while_queued_clears_hint)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(4, 1);

	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 7), 0);
	ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(madvise(p + 2 * PAGE, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	ASSERT_EQ(ev[0].flags, 0);
	ASSERT_EQ(ev[0].hint_start, (uintptr_t)p);
	ASSERT_EQ(ev[0].hint_end, (uintptr_t)p + 4 * PAGE);
}

TEST(queue_holds_one_entry_per_range)
{
	struct ummunotify_event ev[8];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	int i;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	for (i = 0; i < 1000; i++)
		ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(drain(fd, ev, 8), 2);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	ASSERT_EQ(ev[1].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[1].user_cookie_counter, 1000);
}

TEST(read_range_stays_registered_and_rearmed)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(2, 1);

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 9), 0);
	ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(drain(fd, ev, 4), 0);
	ASSERT_EQ(madvise(p + PAGE, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 9);
	ASSERT_EQ(ev[0].flags, UMMUNOTIFY_EVENT_FLAG_HINT);
	ASSERT_EQ(ev[0].hint_start, (uintptr_t)p + PAGE);
	ASSERT_EQ(ev[1].user_cookie_counter, 2);
}

TEST(last_follows_only_when_queue_empties)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(3, 1);
	int i;

	for (i = 0; i < 3; i++)
		ASSERT_EQ(umn_reg(fd, p + i * PAGE, PAGE, 100 + i), 0);
	ASSERT_EQ(munmap(p, 3 * PAGE), 0);
	ASSERT_TRUE(*c >= 1);
	/* One record per read: three INVALs, then LAST, then nothing. */
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(drain(fd, ev, 1), 1);
		ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	}
	ASSERT_EQ(drain(fd, ev, 1), 1);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[0].user_cookie_counter, *c);
	ASSERT_EQ(drain(fd, ev, 1), 0);
}

TEST(counter_moves_before_munmap_returns)
{
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(8, 1);
	uint64_t before;
	int i;

	ASSERT_EQ(umn_reg(fd, p, 8 * PAGE, 1), 0);
	for (i = 0; i < 8; i++) {
		before = *c;
		ASSERT_EQ(munmap(p + i * PAGE, PAGE), 0);
		ASSERT_TRUE(*c > before);
	}
}

TEST(overlapping_ranges_with_distinct_cookies_both_report)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(2, 1);
	uint64_t seen = 0;
	int i, n;

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 2), 0);
	ASSERT_EQ(umn_reg(fd, p + PAGE, PAGE, 3), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	n = drain(fd, ev, 4);
	ASSERT_EQ(n, 3);
	for (i = 0; i < 2; i++)
		seen |= 1ULL << ev[i].user_cookie_counter;
	ASSERT_EQ(seen, 6);
}

TEST(unregister_stops_events)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(umn_unreg(fd, 5), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(*c, 0);
	ASSERT_EQ(drain(fd, ev, 4), 0);
}

/*
 * UNREGISTER of a range whose INVAL is still queued drops the record (the
 * cookie is gone) but leaves a LAST carrying the counter, so that a reader
 * that saw the counter move resyncs instead of waiting for a record that
 * never comes (issue 12, item 9).
 */
TEST(unregister_of_queued_range_leaves_last)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 1);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(umn_unreg(fd, 5), 0);
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_EQ(drain(fd, ev, 4), 1);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[0].user_cookie_counter, *c);
	ASSERT_EQ(drain(fd, ev, 4), 0);
	ASSERT_EQ(poll(&pfd, 1, 0), 0);
}

/* Other queued ranges are reported as before, then LAST. */
TEST(unregister_of_one_queued_range_keeps_the_others)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(2, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(umn_reg(fd, p + PAGE, PAGE, 6), 0);
	ASSERT_EQ(munmap(p, 2 * PAGE), 0);
	ASSERT_EQ(umn_unreg(fd, 5), 0);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	ASSERT_EQ(ev[0].user_cookie_counter, 6);
	ASSERT_EQ(ev[1].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[1].user_cookie_counter, *c);
}

/*
 * The documented fast path: the counter moved, so read (blocking).  With
 * the only queued range unregistered, the LAST must be there; before the
 * fix this read slept forever (the alarm ends the test).
 */
TEST(blocking_read_after_unregister_of_queued_range_returns_last)
{
	struct ummunotify_event ev[4];
	int fd = umn_open_flags(0);
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(umn_unreg(fd, 5), 0);
	ASSERT_NE(*c, 0);
	alarm(10);
	ASSERT_EQ(read(fd, ev, sizeof(ev)), sizeof(ev[0]));
	alarm(0);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[0].user_cookie_counter, *c);
}

/* An unregistered range that was not queued leaves nothing to read. */
TEST(unregister_of_unqueued_range_leaves_nothing)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(umn_unreg(fd, 5), 0);
	ASSERT_EQ(drain(fd, ev, 4), 0);
}

TEST(cookie_can_be_reused_after_unregister)
{
	int fd = umn_open();
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(umn_unreg(fd, 5), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
}

TEST(mremap_move_reports_old_range)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(2, 1), *q;

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 5), 0);
	q = mremap(p, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE);
	ASSERT_TRUE(q != MAP_FAILED);
	if (q == p)
		SKIP("mremap grew in place");
	ASSERT_TRUE(drain(fd, ev, 4) >= 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 5);
}

TEST(mremap_shrink_reports_tail)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(4, 1);

	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 5), 0);
	ASSERT_TRUE(mremap(p, 4 * PAGE, 2 * PAGE, 0) == p);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].flags, UMMUNOTIFY_EVENT_FLAG_HINT);
	ASSERT_EQ(ev[0].hint_start, (uintptr_t)p + 2 * PAGE);
	ASSERT_EQ(ev[0].hint_end, (uintptr_t)p + 4 * PAGE);
}

TEST(unmapped_range_can_be_registered_and_reports_later)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 0);

	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_TRUE(mmap(p, PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE,
			 -1, 0) == p);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_TRUE(drain(fd, ev, 4) >= 2);
}

/* ---- read() ------------------------------------------------------------ */

TEST(read_short_buffer_fails_einval)
{
	char buf[64];
	int fd = umn_open();

	ASSERT_ERRNO(read(fd, buf, sizeof(struct ummunotify_event) - 1),
		     EINVAL);
	ASSERT_ERRNO(read(fd, buf, 0), EINVAL);
}

TEST(read_empty_nonblocking_fails_eagain)
{
	struct ummunotify_event ev;
	int fd = umn_open();

	ASSERT_ERRNO(read(fd, &ev, sizeof(ev)), EAGAIN);
}

TEST(read_bad_buffer_fails_efault_and_keeps_events)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	void *volatile bad = (void *)8;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
	ASSERT_ERRNO(read(fd, bad, sizeof(ev)), EFAULT);
	ASSERT_EQ(drain(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 5);
}

TEST(read_returns_at_most_one_page)
{
	static struct ummunotify_event ev[1024];
	int fd = umn_open();
	char *p = map_pages(300, 0);
	int i, n, total = 0;

	for (i = 0; i < 300; i++)
		ASSERT_EQ(umn_reg(fd, p + i * PAGE, PAGE, i), 0);
	ASSERT_EQ(munmap(p, 300 * PAGE), 0);
	n = umn_read(fd, ev, 1024);
	ASSERT_EQ(n * sizeof(ev[0]), PAGE);
	total = n;
	while ((n = drain(fd, ev, 1024)) > 0)
		total += n;
	ASSERT_EQ(total, 301);
}

static void *unmap_later(void *arg)
{
	usleep(200000);
	munmap(arg, PAGE);
	return NULL;
}

TEST(blocking_read_waits_for_event)
{
	struct ummunotify_event ev[2];
	int fd = umn_open_flags(0);
	char *p = map_pages(1, 1);
	pthread_t t;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(pthread_create(&t, NULL, unmap_later, p), 0);
	ASSERT_EQ(read(fd, ev, sizeof(ev)), 2 * sizeof(ev[0]));
	ASSERT_EQ(ev[0].user_cookie_counter, 5);
	pthread_join(t, NULL);
}

/* ---- poll / epoll / select / SIGIO ------------------------------------ */

TEST(poll_reports_readable_only_with_events)
{
	struct ummunotify_event ev[2];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(poll(&pfd, 1, 0), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_TRUE(pfd.revents & POLLIN);
	ASSERT_EQ(drain(fd, ev, 2), 2);
	ASSERT_EQ(poll(&pfd, 1, 0), 0);
}

TEST(poll_readable_for_pending_last)
{
	struct ummunotify_event ev[2];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(drain(fd, ev, 1), 1);
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_EQ(drain(fd, ev, 2), 1);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_LAST);
}

TEST(poll_wakes_on_event)
{
	int fd = umn_open();
	char *p = map_pages(1, 1);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	pthread_t t;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(pthread_create(&t, NULL, unmap_later, p), 0);
	ASSERT_EQ(poll(&pfd, 1, 20000), 1);
	pthread_join(t, NULL);
}

TEST(epoll_wakes_on_event)
{
	struct epoll_event e = { .events = EPOLLIN }, out;
	int fd = umn_open();
	int ep = epoll_create1(0);
	char *p = map_pages(1, 1);
	pthread_t t;

	ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(epoll_wait(ep, &out, 1, 0), 0);
	ASSERT_EQ(pthread_create(&t, NULL, unmap_later, p), 0);
	ASSERT_EQ(epoll_wait(ep, &out, 1, 20000), 1);
	ASSERT_TRUE(out.events & EPOLLIN);
	pthread_join(t, NULL);
}

TEST(select_reports_readable)
{
	int fd = umn_open();
	char *p = map_pages(1, 1);
	struct timeval tv = { 0, 0 };
	fd_set rs;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	FD_ZERO(&rs);
	FD_SET(fd, &rs);
	ASSERT_EQ(select(fd + 1, &rs, NULL, NULL, &tv), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	FD_ZERO(&rs);
	FD_SET(fd, &rs);
	ASSERT_EQ(select(fd + 1, &rs, NULL, NULL, &tv), 1);
	ASSERT_TRUE(FD_ISSET(fd, &rs));
}

static volatile sig_atomic_t got_sigio;

static void on_sigio(int sig)
{
	got_sigio = 1;
}

TEST(sigio_sent_on_event)
{
	int fd = umn_open();
	char *p = map_pages(1, 1);
	int i;

	signal(SIGIO, on_sigio);
	ASSERT_EQ(fcntl(fd, F_SETOWN, getpid()), 0);
	ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(got_sigio, 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	for (i = 0; i < 100 && !got_sigio; i++)
		usleep(10000);
	ASSERT_EQ(got_sigio, 1);
}

/* ---- register / unregister errors ------------------------------------- */

TEST(register_start_ge_end_fails_einval)
{
	struct ummunotify_register_ioctl r = { .start = 0x10000,
					       .end = 0x10000 };
	int fd = umn_open();

	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
	r.end = 0x8000;
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
}

TEST(register_beyond_user_space_fails_einval)
{
	struct ummunotify_register_ioctl r = { .start = 0x10000,
					       .end = 1ULL << 63 };
	int fd = umn_open();

	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
	r.end = ~0ULL;
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
	r.start = 0xffff888000000000ULL;
	r.end = r.start + 4096;
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
}

TEST(register_nonzero_flags_or_reserved_fails_einval)
{
	struct ummunotify_register_ioctl r = { .start = 0x10000,
					       .end = 0x20000, .flags = 1 };
	int fd = umn_open();

	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
	r.flags = 0;
	r.reserved = 0x80000000;
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), EINVAL);
	r.reserved = 0;
	ASSERT_EQ(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), 0);
}

TEST(register_duplicate_cookie_fails_einval)
{
	int fd = umn_open();
	char *p = map_pages(2, 0);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 42), 0);
	ASSERT_ERRNO(umn_reg(fd, p + PAGE, PAGE, 42), EINVAL);
	ASSERT_EQ(read_long_file(LIVE_REGIONS) >= 1, 1);
}

TEST(register_bad_pointer_fails_efault)
{
	int fd = umn_open();

	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, NULL), EFAULT);
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_UNREGISTER_REGION, (void *)16),
		     EFAULT);
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_EXCHANGE_FEATURES, NULL), EFAULT);
}

TEST(unregister_unknown_cookie_fails_einval)
{
	int fd = umn_open();

	ASSERT_ERRNO(umn_unreg(fd, 1), EINVAL);
	ASSERT_EQ(umn_reg(fd, (void *)0x10000, PAGE, 1), 0);
	ASSERT_EQ(umn_unreg(fd, 1), 0);
	ASSERT_ERRNO(umn_unreg(fd, 1), EINVAL);
}

TEST(unknown_ioctl_fails_enotty)
{
	int fd = umn_open();
	uint64_t v = 0;

	ASSERT_ERRNO(ioctl(fd, _IOW(UMMUNOTIFY_MAGIC, 4, uint64_t), &v),
		     ENOTTY);
	ASSERT_ERRNO(ioctl(fd, _IOR(UMMUNOTIFY_MAGIC, 2,
				    struct ummunotify_register_ioctl), &v),
		     ENOTTY);
	ASSERT_ERRNO(ioctl(fd, 0x5401, &v), ENOTTY);
}

/* ---- features ---------------------------------------------------------- */

TEST(exchange_features_returns_supported_subset)
{
	int fd = umn_open();
	uint32_t got;

	ASSERT_EQ(umn_features(fd, 0, &got), 0);
	ASSERT_EQ(got, 0);
	ASSERT_EQ(umn_features(fd, ~0U, &got), 0);
	ASSERT_EQ(got, UMMUNOTIFY_FEATURE_FILTER |
		  UMMUNOTIFY_FEATURE_REVALIDATE | UMMUNOTIFY_FEATURE_RING);
	ASSERT_EQ(umn_features(fd, 0x80000000U, &got), 0);
	ASSERT_EQ(got, 0);
}

TEST(exchange_features_after_use_fails_einval)
{
	int fd = umn_open();
	uint32_t got;

	ASSERT_EQ(umn_reg(fd, (void *)0x10000, PAGE, 1), 0);
	ASSERT_ERRNO(umn_features(fd, UMMUNOTIFY_FEATURE_FILTER, &got),
		     EINVAL);
	close(fd);
	fd = umn_open();
	umn_counter(fd);
	ASSERT_ERRNO(umn_features(fd, UMMUNOTIFY_FEATURE_FILTER, &got),
		     EINVAL);
}

static int mprotect_events(uint32_t features)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	volatile uint64_t *c;
	char *p = map_pages(2, 1);
	uint32_t got;
	int n;

	ASSERT_EQ(umn_features(fd, features, &got), 0);
	ASSERT_EQ(got, features);
	c = umn_counter(fd);
	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(mprotect(p, PAGE, PROT_READ), 0);
	ASSERT_EQ(mprotect(p, PAGE, PROT_NONE), 0);
	ASSERT_EQ(mprotect(p, PAGE, PROT_READ | PROT_WRITE), 0);
	n = drain(fd, ev, 4);
	if (!n)
		ASSERT_EQ(*c, 0);
	close(fd);
	munmap(p, 2 * PAGE);
	return n;
}

TEST(filter_off_reports_mprotect)
{
	ASSERT_EQ(mprotect_events(0), 2);
}

TEST(filter_on_ignores_mprotect)
{
	ASSERT_EQ(mprotect_events(UMMUNOTIFY_FEATURE_FILTER), 0);
}

TEST(filter_on_still_reports_unmap_and_dontneed)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(2, 1);

	ASSERT_EQ(umn_features(fd, UMMUNOTIFY_FEATURE_FILTER, NULL), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(umn_reg(fd, p + PAGE, PAGE, 2), 0);
	ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(munmap(p + PAGE, PAGE), 0);
	ASSERT_EQ(drain(fd, ev, 4), 3);
}

TEST(filter_on_still_reports_cow_after_fork)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	pid_t pid;
	int st;

	ASSERT_EQ(umn_features(fd, UMMUNOTIFY_FEATURE_FILTER, NULL), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	pid = fork();
	if (!pid) {
		pause();
		_exit(0);
	}
	/* fork write-protected the page (not reported with FILTER)... */
	drain(fd, ev, 4);
	/* ...the parent's write replaces it with a copy: reported. */
	p[0] = 1;
	ASSERT_EQ(drain(fd, ev, 4), 2);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
}

static int soft_dirty_events(uint32_t features)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_features(fd, features, NULL), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	if (write_str_file("/proc/self/clear_refs", "4"))
		SKIP("no /proc/self/clear_refs");
	return drain(fd, ev, 4);
}

TEST(filter_off_reports_soft_dirty_clearing)
{
	ASSERT_EQ(soft_dirty_events(0), 2);
}

TEST(filter_on_ignores_soft_dirty_clearing)
{
	ASSERT_EQ(soft_dirty_events(UMMUNOTIFY_FEATURE_FILTER), 0);
}

/* ---- the counter page --------------------------------------------------- */

TEST(mmap_wrong_size_fails_einval)
{
	int fd = umn_open();

	ASSERT_TRUE(mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0) ==
		    MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
}

TEST(mmap_wrong_offset_fails_einval)
{
	int fd = umn_open();

	ASSERT_TRUE(mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, PAGE) ==
		    MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
}

TEST(mmap_private_fails_einval)
{
	int fd = umn_open();

	ASSERT_TRUE(mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 0) ==
		    MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
}

TEST(mmap_writable_fails_eacces)
{
	int fd = umn_open();

	ASSERT_TRUE(mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			 0) == MAP_FAILED);
	ASSERT_EQ(errno, EACCES);
}

TEST(mmap_executable_fails_eperm)
{
	int fd = umn_open();

	ASSERT_TRUE(mmap(NULL, PAGE, PROT_READ | PROT_EXEC, MAP_SHARED, fd,
			 0) == MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
}

TEST(counter_page_cannot_be_made_writable)
{
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);

	ASSERT_ERRNO(mprotect((void *)c, PAGE, PROT_READ | PROT_WRITE),
		     EACCES);
	ASSERT_ERRNO(mprotect((void *)c, PAGE, PROT_READ | PROT_EXEC),
		     EACCES);
}

TEST(counter_page_survives_close)
{
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	close(fd);
	ASSERT_EQ(*c, 1);
	ASSERT_EQ(munmap((void *)c, PAGE), 0);
}

TEST(two_mappings_show_same_counter)
{
	int fd = umn_open();
	volatile uint64_t *a = umn_counter(fd), *b = umn_counter(fd);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(*a, 1);
	ASSERT_EQ(*b, 1);
}

TEST(fds_are_independent)
{
	struct ummunotify_event ev[4];
	int a = umn_open(), b = umn_open();
	volatile uint64_t *cb = umn_counter(b);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(a, p, PAGE, 1), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(*cb, 0);
	ASSERT_EQ(drain(b, ev, 4), 0);
	ASSERT_EQ(drain(a, ev, 4), 2);
}

TEST(process_exit_moves_counter_seen_by_inheritor)
{
	int gone[2], ready[2], st, n = 0;
	pid_t a, pid;

	/* C, A's child, is reparented to us when A exits. */
	ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	ASSERT_EQ(pipe(gone), 0);
	ASSERT_EQ(pipe(ready), 0);
	a = fork();
	if (!a) {
		/* A: opens, maps the counter, registers, forks C, exits. */
		int fd = umn_open();
		volatile uint64_t *c = umn_counter(fd);
		char *p = map_pages(4, 1), x;

		if (umn_reg(fd, p, 4 * PAGE, 1) || umn_reg(fd, p, PAGE, 2))
			_exit(10);
		if (!fork()) {
			/* C: shares the counter page (fork copies its pte). */
			uint64_t c0 = *c;

			close(gone[1]);
			if (write(ready[1], "x", 1) != 1)
				_exit(11);
			/* EOF once A has exited (its mm is gone by then). */
			if (read(gone[0], &x, 1) != 0)
				_exit(12);
			_exit(*c > c0 ? 0 : 13);
		}
		if (read(ready[0], &x, 1) != 1)
			_exit(14);
		_exit(0);
	}
	close(gone[1]);
	while ((pid = wait(&st)) > 0) {
		ASSERT_TRUE(WIFEXITED(st));
		ASSERT_EQ(WEXITSTATUS(st), 0);
		n++;
	}
	ASSERT_EQ(n, 2);
}

TEST(counter_page_survives_madvise_dontneed_and_mremap)
{
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(2, 1);
	void *q;

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(*c, 1);
	ASSERT_EQ(madvise((void *)c, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(*c, 1);
	ASSERT_EQ(munmap(p + PAGE, PAGE), 0);
	ASSERT_EQ(*c, 2);
	q = mremap((void *)c, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
		   p);
	ASSERT_TRUE(q == p);
	ASSERT_EQ(*(volatile uint64_t *)q, 2);
	ASSERT_TRUE(mremap(q, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == MAP_FAILED);
}

TEST(fork_child_sees_the_same_counter_page)
{
	int fd = umn_open(), st;
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 1);
	int go[2], done[2];
	pid_t pid;
	char x;

	ASSERT_EQ(pipe(go), 0);
	ASSERT_EQ(pipe(done), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	pid = fork();
	if (!pid) {
		uint64_t c0 = *c;

		if (write(done[1], "x", 1) != 1 || read(go[0], &x, 1) != 1)
			_exit(2);
		_exit(*c > c0 ? 0 : 1);
	}
	ASSERT_EQ(read(done[0], &x, 1), 1);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(write(go[1], "x", 1), 1);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
}

/* ---- interruptible waits (issue 12, item 12) -------------------------- */

/*
 * read() holds the fd's mutex across copy_to_user(); a buffer backed by
 * userfaultfd keeps it there until the fault is resolved.  Meanwhile every
 * ioctl of another thread waits for the mutex: that wait must end with
 * EINTR on a signal (handler without SA_RESTART), not sleep in D state.
 */
struct blocked_op {
	int fd;
	unsigned long cmd;
	void *arg;
	pid_t tid;
	volatile int started;
	volatile int done;
	int ret;
	int err;
};

static void on_sigusr1(int sig)
{
}

static void *blocked_ioctl(void *arg)
{
	struct blocked_op *op = arg;

	op->tid = syscall(SYS_gettid);
	op->started = 1;
	op->ret = ioctl(op->fd, op->cmd, op->arg);
	op->err = errno;
	op->done = 1;
	return NULL;
}

struct uffd_read {
	int fd;
	void *buf;
	ssize_t ret;
	int err;
};

static void *read_into_uffd(void *arg)
{
	struct uffd_read *r = arg;

	r->ret = read(r->fd, r->buf, 2 * sizeof(struct ummunotify_event));
	r->err = errno;
	return NULL;
}

/* The thread sleeps in a syscall (its /proc stat state is S or D). */
static int sleeping_in_syscall(pid_t tid)
{
	char path[64], buf[512], *s;
	FILE *f;
	int ok = 0;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		s = strrchr(buf, ')');
		ok = s && (s[2] == 'S' || s[2] == 'D');
	}
	fclose(f);
	return ok;
}

TEST(ioctls_waiting_for_the_mutex_are_interruptible)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register ureg;
	struct uffdio_zeropage zp;
	struct sigaction sa = { .sa_handler = on_sigusr1 };	/* no SA_RESTART */
	struct ummunotify_register_ioctl rr;
	struct ummunotify_event probe[2];
	struct uffd_read rd;
	struct pollfd pfd;
	uint64_t cookie = 5;
	uint32_t feat = 0;
	pthread_t reader, t;
	int fd = umn_open(), uffd, i, k;
	char *p = map_pages(2, 1), *buf;
	struct {
		const char *name;
		unsigned long cmd;
		void *arg;
	} ops[] = {
		{ "REGISTER", UMMUNOTIFY_REGISTER_REGION, &rr },
		{ "UNREGISTER", UMMUNOTIFY_UNREGISTER_REGION, &cookie },
		{ "EXCHANGE_FEATURES", UMMUNOTIFY_EXCHANGE_FEATURES, &feat },
	};

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		SKIP("userfaultfd: %s", strerror(errno));
	ASSERT_EQ(ioctl(uffd, UFFDIO_API, &api), 0);
	buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(buf != MAP_FAILED);
	ureg.range.start = (uintptr_t)buf;
	ureg.range.len = PAGE;
	ureg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ASSERT_EQ(ioctl(uffd, UFFDIO_REGISTER, &ureg), 0);
	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);

	/* Something to read, then a reader stuck in copy_to_user(). */
	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	rd.fd = fd;
	rd.buf = buf;
	ASSERT_EQ(pthread_create(&reader, NULL, read_into_uffd, &rd), 0);
	pfd.fd = uffd;
	pfd.events = POLLIN;
	/* A blocking uffd polls EPOLLERR at once: it is O_NONBLOCK. */
	ASSERT_EQ(poll(&pfd, 1, 10000), 1);
	ASSERT_TRUE(pfd.revents & POLLIN);	/* the reader faulted */

	memset(&rr, 0, sizeof(rr));
	rr.start = (uintptr_t)p + PAGE;
	rr.end = rr.start + PAGE;
	rr.user_cookie = 6;
	for (k = 0; k < 3; k++) {
		struct blocked_op op = {
			.fd = fd, .cmd = ops[k].cmd, .arg = ops[k].arg,
		};

		ASSERT_EQ(pthread_create(&t, NULL, blocked_ioctl, &op), 0);
		while (!op.started)
			usleep(1000);
		for (i = 0; i < 200 && !sleeping_in_syscall(op.tid); i++)
			usleep(10000);
		usleep(100000);
		ASSERT_EQ(op.done, 0);	/* waiting for the mutex */
		pthread_kill(t, SIGUSR1);
		for (i = 0; i < 300 && !op.done; i++)
			usleep(10000);
		if (!op.done) {
			/* Let the reader go: the ioctl then completes. */
			zp.range.start = (uintptr_t)buf;
			zp.range.len = PAGE;
			zp.mode = 0;
			ioctl(uffd, UFFDIO_ZEROPAGE, &zp);
			pthread_join(t, NULL);
			FAIL("%s still waiting 3 s after a signal; returned %d (%s) once the mutex was free",
			     ops[k].name, op.ret, strerror(op.err));
		}
		pthread_join(t, NULL);
		if (op.ret != -1 || op.err != EINTR)
			FAIL("%s: got %d errno %d (%s), want EINTR", ops[k].name,
			     op.ret, op.err, strerror(op.err));
	}

	/* Resolve the fault: the read completes, nothing was lost. */
	zp.range.start = (uintptr_t)buf;
	zp.range.len = PAGE;
	zp.mode = 0;
	ASSERT_EQ(ioctl(uffd, UFFDIO_ZEROPAGE, &zp), 0);
	pthread_join(reader, NULL);
	ASSERT_EQ(rd.ret, 2 * sizeof(struct ummunotify_event));
	memcpy(probe, buf, sizeof(probe));
	ASSERT_EQ(probe[0].user_cookie_counter, 5);
	ASSERT_EQ(probe[1].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	/* The interrupted REGISTER did nothing: cookie 6 is free. */
	ASSERT_EQ(umn_unreg(fd, 6), -1);
}

/* ---- module interface (issue 12, item 13) ----------------------------- */

static int path_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/*
 * The limits are module parameters (writable by root), the live count is
 * a debugfs file, and the module has no MODULE_VERSION of its own.
 */
TEST(limits_are_parameters_live_count_in_debugfs_no_version)
{
	const char *par = "/sys/module/ummunotify/parameters/";
	const char *names[] = { "max_regions", "max_user_regions",
				"max_mm_regions" };
	char path[256];
	int i;

	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s%s", par, names[i]);
		if (read_long_file(path) <= 0)
			FAIL("%s missing", path);
	}
	snprintf(path, sizeof(path), "%slive_regions", par);
	if (path_exists(path))
		FAIL("%s: should be in debugfs", path);
	if (umn_debugfs_mounted() && read_long_file(LIVE_REGIONS) < 0)
		FAIL("%s missing", LIVE_REGIONS);
	if (path_exists("/sys/module/ummunotify/version"))
		FAIL("MODULE_VERSION still set");
}

/* ---- INVAL is read only after the pages changed (issue 12, item 10) --- */

struct dontneed {
	char *p;
	size_t len;
};

static void *dontneed_all(void *arg)
{
	struct dontneed *d = arg;

	madvise(d->p, d->len, MADV_DONTNEED);
	return NULL;
}

/*
 * MADV_DONTNEED of a large populated buffer: the notifier callback runs at
 * the start, then the zap walks the whole buffer.  The watched page is the
 * last one, so it is zapped last.  A reader woken by the INVAL that looks
 * at the page at once (as a client re-pinning it would) must no longer see
 * the old page: read() returns the record only once the invalidation that
 * queued it has ended.  Before the fix, the old contents were visible.
 */
TEST_TIMEOUT(inval_is_read_only_after_the_pages_changed, 300)
{
	const size_t len = 256UL << 20;
	struct ummunotify_event ev[4];
	int fd = umn_open(), round, stale = 0, n;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct dontneed d = { .len = len };
	volatile char *last;
	pthread_t t;
	char seen;

	d.p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(d.p != MAP_FAILED);
	madvise(d.p, len, MADV_NOHUGEPAGE);	/* 4 KiB pages: a slow zap */
	last = d.p + len - PAGE;
	ASSERT_EQ(umn_reg(fd, (void *)last, PAGE, 7), 0);
	for (round = 0; round < 3; round++) {
		memset(d.p, 0xab, len);
		while (umn_read(fd, ev, 4) > 0)
			;	/* whatever the memset queued */
		ASSERT_EQ(pthread_create(&t, NULL, dontneed_all, &d), 0);
		ASSERT_EQ(poll(&pfd, 1, 20000), 1);
		n = read(fd, ev, sizeof(ev));
		seen = *last;	/* "re-pin" at once */
		pthread_join(t, NULL);
		ASSERT_TRUE(n >= (int)sizeof(ev[0]));
		ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
		ASSERT_EQ(ev[0].user_cookie_counter, 7);
		if (seen == (char)0xab)
			stale++;
	}
	printf("# INVAL read while the old page was still mapped: %d of 3\n",
	       stale);
	ASSERT_EQ(stale, 0);
}

/* ---- wake-ups: once per batch, again for a hit during a read (item 8) - */

/*
 * SIGIO (and wake-ups) only when the queue goes from empty to non-empty,
 * plus once for a hit that lands while a read() is between building its
 * records and handing them out (the reader may have its LAST already).
 * The read is held there by a userfaultfd-backed buffer.
 */
TEST(sigio_once_per_batch_and_for_a_hit_during_a_read)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register ureg;
	struct uffdio_zeropage zp;
	struct ummunotify_event ev[8];
	struct pollfd pfd;
	struct uffd_read rd;
	pthread_t reader;
	int fd = umn_open(), uffd, i, n;
	char *p = map_pages(4, 1), *buf;

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		SKIP("userfaultfd: %s", strerror(errno));
	ASSERT_EQ(ioctl(uffd, UFFDIO_API, &api), 0);
	/* Mapped first: not in a hole the munmaps below leave. */
	buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(buf != MAP_FAILED);
	signal(SIGIO, on_sigio);
	ASSERT_EQ(fcntl(fd, F_SETOWN, getpid()), 0);
	ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC), 0);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(umn_reg(fd, p + i * PAGE, PAGE, 10 + i), 0);

	/* Empty -> non-empty: one SIGIO; a second range: none. */
	got_sigio = 0;
	ASSERT_EQ(munmap(p, PAGE), 0);
	for (i = 0; i < 100 && !got_sigio; i++)
		usleep(10000);
	ASSERT_EQ(got_sigio, 1);
	got_sigio = 0;
	ASSERT_EQ(munmap(p + PAGE, PAGE), 0);
	usleep(300000);
	ASSERT_EQ(got_sigio, 0);

	/* A read stuck in copy_to_user(); a hit now signals again. */
	ureg.range.start = (uintptr_t)buf;
	ureg.range.len = PAGE;
	ureg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ASSERT_EQ(ioctl(uffd, UFFDIO_REGISTER, &ureg), 0);
	rd.fd = fd;
	rd.buf = buf;
	ASSERT_EQ(pthread_create(&reader, NULL, read_into_uffd, &rd), 0);
	pfd.fd = uffd;
	pfd.events = POLLIN;
	/* A blocking uffd polls EPOLLERR at once: it is O_NONBLOCK. */
	ASSERT_EQ(poll(&pfd, 1, 10000), 1);
	ASSERT_TRUE(pfd.revents & POLLIN);
	ASSERT_EQ(munmap(p + 2 * PAGE, PAGE), 0);
	for (i = 0; i < 100 && !got_sigio; i++)
		usleep(10000);
	zp.range.start = (uintptr_t)buf;
	zp.range.len = PAGE;
	zp.mode = 0;
	ASSERT_EQ(ioctl(uffd, UFFDIO_ZEROPAGE, &zp), 0);
	pthread_join(reader, NULL);
	printf("# held read returned %zd (errno %d), SIGIO during it: %d\n",
	       rd.ret, rd.err, (int)got_sigio);
	ASSERT_EQ(got_sigio, 1);
	/* The reader got two INVALs; the one queued during the read follows. */
	ASSERT_EQ(rd.ret, 2 * sizeof(ev[0]));
	memcpy(ev, buf, 2 * sizeof(ev[0]));
	printf("# the held read: %d %llu, %d %llu\n", ev[0].type,
	       (unsigned long long)ev[0].user_cookie_counter, ev[1].type,
	       (unsigned long long)ev[1].user_cookie_counter);
	n = umn_read(fd, ev, 8);
	for (i = 0; i < n; i++)
		printf("# then: %d %llu\n", ev[i].type,
		       (unsigned long long)ev[i].user_cookie_counter);
	ASSERT_EQ(n, 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 12);
	ASSERT_EQ(ev[1].type, UMMUNOTIFY_EVENT_TYPE_LAST);
}
