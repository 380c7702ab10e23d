// SPDX-License-Identifier: GPL-2.0
/*
 * UMMUNOTIFY_FEATURE_RING: hits published in a page the client maps, read()
 * only when the ring had no room, @running and SETTLE (issue 13).
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stddef.h>

#include "harness.h"
#include "umn_util.h"

#define SLOTS UMMUNOTIFY_RING_SLOTS

static int ring_open(uint32_t more)
{
	int fd = umn_open();
	uint32_t got;

	ASSERT_EQ(umn_features(fd, UMMUNOTIFY_FEATURE_RING | more, &got), 0);
	ASSERT_EQ(got, UMMUNOTIFY_FEATURE_RING | more);
	return fd;
}

static struct ummunotify_ring *ring_map(int fd)
{
	int rfd = ioctl(fd, UMMUNOTIFY_OPEN_RING);
	void *p;

	ASSERT_TRUE(rfd >= 0);
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	ASSERT_TRUE(p != MAP_FAILED);
	close(rfd);
	return p;
}

static uint32_t ld(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Takes every record (step 2 of the protocol); returns how many. */
static int take(struct ummunotify_ring *r, struct ummunotify_ring_record *out,
		int max)
{
	uint32_t head = ld(&r->head), tail = r->tail;
	int n = 0;

	for (; tail != head; tail++, n++)
		if (n < max)
			out[n] = r->record[tail % SLOTS];
	__atomic_store_n(&r->tail, head, __ATOMIC_RELEASE);
	return n;
}

TEST(ring_layout_and_numbers)
{
	ASSERT_EQ(UMMUNOTIFY_FEATURE_RING, 4);
	ASSERT_EQ(UMMUNOTIFY_SETTLE, 0x5506);
	ASSERT_EQ(UMMUNOTIFY_OPEN_RING, 0x5507);
	ASSERT_EQ(sizeof(struct ummunotify_ring_record), 24);
	ASSERT_EQ(offsetof(struct ummunotify_ring, head), 0);
	ASSERT_EQ(offsetof(struct ummunotify_ring, running), 4);
	ASSERT_EQ(offsetof(struct ummunotify_ring, queued), 8);
	ASSERT_EQ(offsetof(struct ummunotify_ring, slots), 12);
	ASSERT_EQ(offsetof(struct ummunotify_ring, tail), 64);
	ASSERT_EQ(offsetof(struct ummunotify_ring, record), 128);
	ASSERT_EQ(sizeof(struct ummunotify_ring), 3200);
}

TEST(ring_needs_the_feature)
{
	int fd = umn_open();
	char *p = map_pages(1, 1);

	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_OPEN_RING), ENOTTY);
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_SETTLE), ENOTTY);
	/* Only the counter page is at the device's offset 0. */
	ASSERT_EQ(mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, PAGE),
		  MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	/* Without the bit a hit is queued for read(), as in 2010. */
	ASSERT_EQ(umn_reg(fd, p, PAGE, 7), 0);
	munmap(p, PAGE);
	{
		struct ummunotify_event ev[4];

		ASSERT_EQ(umn_read(fd, ev, 4), 2);
		ASSERT_EQ(ev[0].user_cookie_counter, 7);
	}
}

TEST(ring_mapping_rules)
{
	int fd = ring_open(0);
	int rfd = ioctl(fd, UMMUNOTIFY_OPEN_RING);
	struct ummunotify_ring *r;
	uint32_t got;

	ASSERT_TRUE(rfd >= 0);
	ASSERT_EQ(fcntl(rfd, F_GETFD), FD_CLOEXEC);
	ASSERT_EQ(fcntl(rfd, F_GETFL) & O_ACCMODE, O_RDWR);
	/* The fd is used now: the features no longer change. */
	ASSERT_ERRNO(umn_features(fd, 0, &got), EINVAL);
	ASSERT_EQ(mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
		       rfd, 0), MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_EQ(mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, rfd,
		       0), MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	/* EACCES from the anon inodes' noexec mount, or EPERM from us. */
	ASSERT_EQ(mmap(NULL, PAGE, PROT_READ | PROT_EXEC, MAP_SHARED, rfd,
		       0), MAP_FAILED);
	ASSERT_TRUE(errno == EACCES || errno == EPERM);
	ASSERT_EQ(mmap(NULL, PAGE, PROT_READ, MAP_SHARED, rfd, PAGE),
		  MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	{
		char b[8];

		ASSERT_ERRNO(read(rfd, b, sizeof(b)), EINVAL);
		ASSERT_ERRNO(ioctl(rfd, UMMUNOTIFY_SETTLE), ENOTTY);
	}
	close(rfd);
	/* The counter page stays read-only (the device's fd is). */
	ASSERT_EQ(mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
		  MAP_FAILED);
	ASSERT_EQ(errno, EACCES);
	r = ring_map(fd);
	ASSERT_EQ(r->slots, SLOTS);
	ASSERT_EQ(r->head, 0);
	ASSERT_EQ(r->running, 0);
	ASSERT_EQ(r->queued, 0);
	r->tail = 0;
	/* Two mappings are the same page. */
	ASSERT_EQ(ring_map(fd)->slots, SLOTS);
	/* The mapping outlives both fds. */
	close(fd);
	ASSERT_EQ(r->slots, SLOTS);
}

/* The ring's fd in another process maps nothing (EIO, like the device). */
TEST(ring_fd_is_bound_to_the_opener)
{
	int fd = ring_open(0), rfd = ioctl(fd, UMMUNOTIFY_OPEN_RING);
	pid_t pid;
	int st;

	ASSERT_TRUE(rfd >= 0);
	pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (!pid) {
		void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
			       rfd, 0);

		_exit(p == MAP_FAILED && errno == EIO ? 0 : 1);
	}
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_EQ(ioctl(fd, UMMUNOTIFY_OPEN_RING) >= 0, 1);
}

TEST(ring_publishes_a_hit_without_read)
{
	int fd = ring_open(UMMUNOTIFY_FEATURE_FILTER);
	volatile uint64_t *c = umn_counter(fd);
	struct ummunotify_ring *r = ring_map(fd);
	struct ummunotify_ring_record rec[4];
	struct ummunotify_event ev[4];
	char *p = map_pages(3, 1);

	ASSERT_EQ(umn_reg(fd, p, 3 * PAGE, 42), 0);
	ASSERT_EQ(*c, 0);
	munmap(p + PAGE, PAGE);
	ASSERT_EQ(*c, 1);
	ASSERT_EQ(ld(&r->head), 1);
	ASSERT_EQ(ld(&r->queued), 0);
	ASSERT_EQ(ld(&r->running), 0);
	ASSERT_EQ(take(r, rec, 4), 1);
	ASSERT_EQ(rec[0].user_cookie, 42);
	ASSERT_EQ(rec[0].hint_start, (uintptr_t)p + PAGE);
	ASSERT_EQ(rec[0].hint_end, (uintptr_t)p + 2 * PAGE);
	/* Nothing for read(): not even a LAST. */
	ASSERT_EQ(umn_read(fd, ev, 4), 0);
	/* The range stays watched: the next hit is published again. */
	munmap(p, PAGE);
	ASSERT_EQ(*c, 2);
	ASSERT_EQ(take(r, rec, 4), 1);
	ASSERT_EQ(rec[0].user_cookie, 42);
	ASSERT_EQ(rec[0].hint_start, (uintptr_t)p);
	ASSERT_EQ(rec[0].hint_end, (uintptr_t)p + PAGE);
	/* mprotect is filtered: nothing published, counter unchanged. */
	ASSERT_EQ(mprotect(p + 2 * PAGE, PAGE, PROT_READ), 0);
	ASSERT_EQ(*c, 2);
	ASSERT_EQ(ld(&r->head), 2);
	ASSERT_EQ(umn_unreg(fd, 42), 0);
	munmap(p + 2 * PAGE, PAGE);
	ASSERT_EQ(ld(&r->head), 2);
}

/* 200 one-page ranges hit by one munmap: 128 in the ring, 72 for read(). */
TEST(ring_overflow_goes_to_read)
{
	enum { N = 200 };
	int fd = ring_open(0);
	volatile uint64_t *c = umn_counter(fd);
	struct ummunotify_ring *r = ring_map(fd);
	struct ummunotify_ring_record rec[N];
	struct ummunotify_event ev[128];
	static int seen[N];
	char *p = map_pages(N, 1);
	int i, n, last = 0;

	for (i = 0; i < N; i++)
		ASSERT_EQ(umn_reg(fd, p + i * PAGE, PAGE, i), 0);
	munmap(p, N * PAGE);
	ASSERT_EQ(*c, N);
	ASSERT_EQ(ld(&r->head), SLOTS);
	ASSERT_EQ(ld(&r->queued), 1);
	n = take(r, rec, N);
	ASSERT_EQ(n, SLOTS);
	for (i = 0; i < n; i++) {
		ASSERT_TRUE(rec[i].user_cookie < N);
		seen[rec[i].user_cookie]++;
		ASSERT_EQ(rec[i].hint_start,
			  (uintptr_t)p + rec[i].user_cookie * PAGE);
	}
	n = umn_read(fd, ev, 128);
	ASSERT_EQ(n, N - SLOTS + 1);
	for (i = 0; i < n; i++) {
		if (ev[i].type == UMMUNOTIFY_EVENT_TYPE_LAST) {
			ASSERT_EQ(ev[i].user_cookie_counter, N);
			last++;
			continue;
		}
		ASSERT_TRUE(ev[i].user_cookie_counter < N);
		seen[ev[i].user_cookie_counter]++;
	}
	ASSERT_EQ(last, 1);
	for (i = 0; i < N; i++)
		ASSERT_EQ(seen[i], 1);
	ASSERT_EQ(ld(&r->queued), 0);
	ASSERT_EQ(umn_read(fd, ev, 128), 0);
}

/* A range queued for read() is not published too: one record covers it. */
TEST(ring_queued_range_stays_queued)
{
	int fd = ring_open(0);
	struct ummunotify_ring *r = ring_map(fd);
	struct ummunotify_event ev[4];
	char *p = map_pages(2, 1), *q = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(umn_reg(fd, q, PAGE, 2), 0);
	r->tail = r->head + 1;	/* "full" */
	munmap(p, PAGE);
	ASSERT_EQ(ld(&r->queued), 1);
	r->tail = r->head;	/* room again */
	munmap(p + PAGE, PAGE);
	ASSERT_EQ(ld(&r->head), 0);
	/* Another range is published while that one waits for read(). */
	munmap(q, PAGE);
	ASSERT_EQ(ld(&r->head), 1);
	ASSERT_EQ(r->record[0].user_cookie, 2);
	ASSERT_EQ(umn_read(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 1);
	ASSERT_EQ(ev[0].flags, 0);	/* hit twice: the whole range */
	ASSERT_EQ(ev[1].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	ASSERT_EQ(ev[1].user_cookie_counter, 3);
}

/* Whatever the client writes in @tail, the kernel only queues for read(). */
TEST(ring_bogus_tail_is_harmless)
{
	uint32_t tails[] = { 1000, 0x80000000u, 0xffffff00u, SLOTS };
	int fd = ring_open(0);
	struct ummunotify_ring *r = ring_map(fd);
	struct ummunotify_event ev[4];
	unsigned int i;

	for (i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
		char *p = map_pages(1, 1);

		ASSERT_EQ(umn_reg(fd, p, PAGE, 100 + i), 0);
		r->tail = tails[i];
		munmap(p, PAGE);
		ASSERT_EQ(ld(&r->head), 0);
		ASSERT_EQ(umn_read(fd, ev, 4), 2);
		ASSERT_EQ(ev[0].user_cookie_counter, 100 + i);
		ASSERT_EQ(umn_unreg(fd, 100 + i), 0);
	}
	r->tail = 0;
}

TEST(ring_poll_reports_records)
{
	int fd = ring_open(0);
	struct ummunotify_ring *r = ring_map(fd);
	struct ummunotify_ring_record rec[4];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 5), 0);
	ASSERT_EQ(poll(&pfd, 1, 0), 0);
	munmap(p, PAGE);
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_EQ(take(r, rec, 4), 1);
	ASSERT_EQ(poll(&pfd, 1, 0), 0);
}

/* The ring page is not inherited: a fork child has no mapping there. */
static sigjmp_buf segv_jmp;

static void on_segv(int sig)
{
	siglongjmp(segv_jmp, 1);
}

TEST(ring_not_inherited_by_fork)
{
	int fd = ring_open(0);
	struct ummunotify_ring *r = ring_map(fd);
	pid_t pid;
	int st;

	pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (!pid) {
		signal(SIGSEGV, on_segv);
		if (sigsetjmp(segv_jmp, 1))
			_exit(0);
		(void)*(volatile uint32_t *)&r->slots;
		_exit(1);
	}
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_EQ(r->slots, SLOTS);
}

/*
 * @running: a record is published when its invalidation starts; while
 * @running is not 0 the pages may still be mapped, once it is 0 (or after
 * SETTLE) they are gone.  A thread zaps 512 populated watched pages with
 * MADV_DONTNEED; this one spins on the ring and, at the record, looks at
 * the pages with mincore().
 */
enum { ZAP = 512 };
static char *zap_p;
static _Atomic int zap_go, zap_done, zap_stop;

static void *zapper(void *arg)
{
	while (!atomic_load(&zap_stop)) {
		while (!atomic_load(&zap_go) && !atomic_load(&zap_stop))
			sched_yield();
		if (atomic_load(&zap_stop))
			break;
		atomic_store(&zap_go, 0);
		madvise(zap_p, ZAP * PAGE, MADV_DONTNEED);
		atomic_store(&zap_done, 1);
	}
	return NULL;
}

static int resident(void)
{
	static unsigned char vec[ZAP];
	int i, n = 0;

	if (mincore(zap_p, ZAP * PAGE, vec))
		return -1;
	for (i = 0; i < ZAP; i++)
		n += vec[i] & 1;
	return n;
}

/*
 * Takes records until the zap's (the whole range: a page that NUMA
 * balancing migrates is hit alone, and such a record says nothing here;
 * the range is kept off huge pages, whose migration or collapse would be
 * reported for the whole range too).
 */
static void wait_zap_record(struct ummunotify_ring *r)
{
	static struct ummunotify_ring_record rec[SLOTS];
	int i, n;

	for (;;) {
		while (ld(&r->head) == r->tail)
			;
		n = take(r, rec, SLOTS);
		for (i = 0; i < n && i < SLOTS; i++)
			if (rec[i].user_cookie == 9 &&
			    rec[i].hint_start == (uintptr_t)zap_p &&
			    rec[i].hint_end == (uintptr_t)zap_p + ZAP * PAGE)
				return;
	}
}

TEST_TIMEOUT(ring_running_says_when_the_pages_are_gone, 300)
{
	int fd = ring_open(UMMUNOTIFY_FEATURE_FILTER);
	struct ummunotify_ring *r = ring_map(fd);
	int it, early = 0, early_resident = 0, settled = 0;
	pthread_t t;

	zap_p = map_pages(ZAP, 0);
	/*
	 * Small pages only: a THP backing the range (THP=always, the mapping
	 * 2 MiB-aligned by chance) that NUMA balancing migrates or khugepaged
	 * collapses is invalidated whole, and the test would take that record
	 * for the zap's, then see the zap still under way.
	 */
	ASSERT_EQ(madvise(zap_p, ZAP * PAGE, MADV_NOHUGEPAGE), 0);
	ASSERT_EQ(umn_reg(fd, zap_p, ZAP * PAGE, 9), 0);
	ASSERT_EQ(pthread_create(&t, NULL, zapper, NULL), 0);
	for (it = 0; it < 200; it++) {
		memset(zap_p, 1, ZAP * PAGE);
		ASSERT_EQ(resident(), ZAP);
		atomic_store(&zap_done, 0);
		atomic_store(&zap_go, 1);
		wait_zap_record(r);
		if (ld(&r->running)) {
			early++;
			if (resident() > 0)
				early_resident++;
			ASSERT_EQ(ioctl(fd, UMMUNOTIFY_SETTLE), 0);
		} else {
			settled++;
		}
		/* Either way, now: nothing of the range is mapped. */
		ASSERT_EQ(resident(), 0);
		while (!atomic_load(&zap_done))
			sched_yield();
	}
	atomic_store(&zap_stop, 1);
	pthread_join(t, NULL);
	printf("  # 200 zaps: record seen while running %d (pages still there %d), after %d\n",
	       early, early_resident, settled);
	ASSERT_EQ(ld(&r->running), 0);
}

/* Starts and ends pair: after many invalidations in two threads, 0. */
static void *unmapper(void *arg)
{
	int i;

	for (i = 0; i < 3000; i++) {
		char *p = map_pages(4, 1);

		madvise(p, PAGE, MADV_DONTNEED);
		mprotect(p, PAGE, PROT_READ);
		munmap(p, 4 * PAGE);
	}
	return NULL;
}

TEST_TIMEOUT(ring_running_returns_to_zero, 300)
{
	int fd = ring_open(0);
	struct ummunotify_ring *r = ring_map(fd);
	char *p = map_pages(1, 1);
	pthread_t t[2];
	int i;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	for (i = 0; i < 2; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, unmapper, NULL), 0);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ(ld(&r->running), 0);
	ASSERT_EQ(ioctl(fd, UMMUNOTIFY_SETTLE), 0);
}
