// SPDX-License-Identifier: GPL-2.0
/*
 * Stress: worker threads mmap, register, then munmap / partially munmap /
 * mremap / madvise(DONTNEED) / mprotect their watched ranges while a reader
 * thread reads events and a churn thread registers and unregisters other
 * ranges.  The test keeps a log of every operation that must be reported
 * (everything but mprotect when FILTER is on) and checks that each was
 * reported after the operation returned: nothing is lost.  It also checks
 * the fast-path protocol: no LAST record carries a counter value reached
 * after an operation whose record has not been delivered yet.  A third test
 * registers ranges while other invalidations are in flight.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "harness.h"
#include "umn_util.h"

#define WORKERS		4
#define CHURN_BASE	(1ULL << 40)

enum { OP_MUNMAP, OP_MUNMAP_PART, OP_MREMAP, OP_DONTNEED, OP_MPROTECT, OPS };
static const char *const op_names[OPS] = {
	"munmap", "munmap-part", "mremap", "dontneed", "mprotect",
};

struct slot {
	uintptr_t start, end;
	int op;
	_Atomic int seen;	/* INVAL records read for it */
	_Atomic uint64_t armed_at;	/* counter after the op returned */
};

static struct slot *slots;
static int iters = 1500;	/* per worker; UMN_STRESS_ITERS */
/* The slot each worker is waiting on, for the LAST check. */
static struct slot *_Atomic cur[WORKERS];
static _Atomic long last_violations;
static volatile uint64_t *counter;
static _Atomic unsigned long next_cookie;
static _Atomic int stop, failed;
static _Atomic long spurious, bad_hint, seen_total;
static int ufd, filter;
static struct ummunotify_ring *ring;	/* UMMUNOTIFY_FEATURE_RING */

/* One INVAL (from read() or the ring) for cookie @c, hint [@hs, @he). */
static void note_inval(uint64_t c, uint64_t hs, uint64_t he)
{
	struct slot *s;

	if (c >= CHURN_BASE)
		return;
	if (c >= atomic_load(&next_cookie)) {
		atomic_fetch_add(&spurious, 1);
		return;
	}
	s = &slots[c];
	if (hs < s->start || he > s->end || hs >= he)
		atomic_fetch_add(&bad_hint, 1);
	atomic_fetch_add(&s->seen, 1);
	atomic_fetch_add(&seen_total, 1);
}

/*
 * The fast-path protocol: after the records of a drain that began with
 * the counter at @c (a LAST carrying @c, or the ring's steps 1-3), every
 * operation whose counter had reached @c has been delivered.
 */
static void check_complete_at(uint64_t c)
{
	int w;

	for (w = 0; w < WORKERS; w++) {
		struct slot *s = atomic_load(&cur[w]);
		uint64_t a;

		if (!s)
			continue;
		a = atomic_load(&s->armed_at);
		if (a && a <= c && !atomic_load(&s->seen))
			atomic_fetch_add(&last_violations, 1);
	}
}

/* The ring's steps 1 and 2; returns the counter of step 1. */
static uint64_t take_ring(void)
{
	uint64_t c = __atomic_load_n(counter, __ATOMIC_ACQUIRE);
	uint32_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
	uint32_t tail = ring->tail;

	for (; tail != head; tail++) {
		struct ummunotify_ring_record *r = &ring->record[tail % 128];

		note_inval(r->user_cookie, r->hint_start, r->hint_end);
	}
	__atomic_store_n(&ring->tail, head, __ATOMIC_RELEASE);
	return c;
}

static void *reader(void *arg)
{
	static struct ummunotify_event ev[128];
	struct pollfd pfd = { .fd = ufd, .events = POLLIN };
	int n, i;

	while (!atomic_load(&stop)) {
		uint64_t ring_c = 0;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if (ring) {
			ring_c = take_ring();
			if (!__atomic_load_n(&ring->queued, __ATOMIC_ACQUIRE)) {
				check_complete_at(ring_c);
				continue;
			}
		}
		n = umn_read(ufd, ev, 128);
		if (n < 0) {
			fprintf(stderr, "  read: %s\n", strerror(errno));
			atomic_store(&failed, 1);
			break;
		}
		for (i = 0; i < n; i++) {
			uint64_t c = ev[i].user_cookie_counter;

			/*
			 * Fast-path protocol: a LAST carrying V comes after
			 * every record queued before the counter reached V.
			 */
			if (ev[i].type == UMMUNOTIFY_EVENT_TYPE_LAST)
				check_complete_at(c);
			else if (ev[i].type == UMMUNOTIFY_EVENT_TYPE_INVAL)
				note_inval(c, ev[i].hint_start, ev[i].hint_end);
		}
		/* Records taken from the ring, then read() up to LAST. */
		if (ring && n > 0 &&
		    ev[n - 1].type == UMMUNOTIFY_EVENT_TYPE_LAST)
			check_complete_at(ring_c);
	}
	return NULL;
}

static unsigned int rnd(unsigned int *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 17;
	*st ^= *st << 5;
	return *st;
}

static int wait_seen(struct slot *s)
{
	int i;

	for (i = 0; i < 200000; i++) {
		if (atomic_load(&s->seen))
			return 0;
		if (i < 100)
			sched_yield();
		else
			usleep(50);
	}
	return -1;
}

static void *worker(void *arg)
{
	int w = (uintptr_t)arg;
	unsigned int st = 0x9e3779b9u * (unsigned int)w + 1;
	int it;

	for (it = 0; it < iters && !atomic_load(&failed); it++) {
		size_t np = 2 + rnd(&st) % 7, len = np * PAGE;
		unsigned long c = atomic_fetch_add(&next_cookie, 1);
		struct slot *s = &slots[c];
		char *p = map_pages(np, 1), *q;
		int op = rnd(&st) % OPS;
		size_t rest = len, hole = 0;

		s->start = (uintptr_t)p;
		s->end = (uintptr_t)p + len;
		s->op = op;
		atomic_store(&cur[w], s);
		if (umn_reg(ufd, p, len, c)) {
			fprintf(stderr, "  register %lu: %s\n", c, strerror(errno));
			atomic_store(&failed, 1);
			break;
		}
		switch (op) {
		case OP_MUNMAP:
			munmap(p, len);
			rest = 0;
			break;
		case OP_MUNMAP_PART:
			/*
			 * Another thread may map the hole at once: unmap only
			 * the two remaining pieces afterwards.
			 */
			hole = rnd(&st) % np;
			munmap(p + hole * PAGE, PAGE);
			break;
		case OP_MREMAP:
			/* Move the whole range to a reserved spot. */
			q = mmap(NULL, len, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (q != MAP_FAILED)
				q = mremap(p, len, len,
					   MREMAP_MAYMOVE | MREMAP_FIXED, q);
			if (q == MAP_FAILED) {
				fprintf(stderr, "  mremap %p %zu: %s\n", p, len,
					strerror(errno));
				atomic_store(&failed, 1);
				break;
			}
			p = q;
			break;
		case OP_DONTNEED:
			madvise(p + (rnd(&st) % np) * PAGE, PAGE, MADV_DONTNEED);
			break;
		case OP_MPROTECT:
			mprotect(p, PAGE, PROT_READ);
			break;
		}
		if (!(op == OP_MPROTECT && filter))
			atomic_store(&s->armed_at, *counter);
		if (!(op == OP_MPROTECT && filter) && wait_seen(s)) {
			fprintf(stderr, "  LOST: cookie %lu op %s [%#lx, %#lx)\n",
				c, op_names[op], (unsigned long)s->start,
				(unsigned long)s->end);
			atomic_store(&failed, 1);
		}
		atomic_store(&cur[w], NULL);
		if (umn_unreg(ufd, c)) {
			fprintf(stderr, "  unregister %lu: %s\n", c,
				strerror(errno));
			atomic_store(&failed, 1);
		}
		if (op == OP_MUNMAP_PART) {
			if (hole)
				munmap(p, hole * PAGE);
			if (hole + 1 < np)
				munmap(p + (hole + 1) * PAGE,
				       (np - hole - 1) * PAGE);
		} else if (rest) {
			munmap(p, rest);
		}
	}
	return NULL;
}

/* Registers and unregisters ranges over the workers' area, no checks. */
static void *churn(void *arg)
{
	unsigned int st = 12345;
	uint64_t c = CHURN_BASE;
	char *p = map_pages(1, 0);

	while (!atomic_load(&stop)) {
		uintptr_t base = (uintptr_t)p - (rnd(&st) % 4096) * PAGE;

		if (umn_reg(ufd, (void *)base, (1 + rnd(&st) % 64) * PAGE, c)) {
			fprintf(stderr, "  churn register: %s\n", strerror(errno));
			atomic_store(&failed, 1);
			break;
		}
		if (rnd(&st) % 2)
			sched_yield();
		if (umn_unreg(ufd, c)) {
			fprintf(stderr, "  churn unregister: %s\n", strerror(errno));
			atomic_store(&failed, 1);
			break;
		}
		c++;
	}
	return NULL;
}

static void run(int features)
{
	pthread_t w[WORKERS], r, ch;
	int i;

	if (getenv("UMN_STRESS_ITERS"))
		iters = atoi(getenv("UMN_STRESS_ITERS"));
	slots = calloc(WORKERS * iters + 16, sizeof(*slots));
	ASSERT_TRUE(slots != NULL);
	ufd = umn_open();
	filter = features & UMMUNOTIFY_FEATURE_FILTER;
	ASSERT_EQ(umn_features(ufd, features, NULL), 0);
	counter = umn_counter(ufd);
	ring = NULL;
	if (features & UMMUNOTIFY_FEATURE_RING) {
		int rfd = ioctl(ufd, UMMUNOTIFY_OPEN_RING);

		ASSERT_TRUE(rfd >= 0);
		ring = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rfd,
			    0);
		ASSERT_TRUE(ring != MAP_FAILED);
		close(rfd);
	}
	ASSERT_EQ(pthread_create(&r, NULL, reader, NULL), 0);
	ASSERT_EQ(pthread_create(&ch, NULL, churn, NULL), 0);
	for (i = 0; i < WORKERS; i++)
		ASSERT_EQ(pthread_create(&w[i], NULL, worker,
					 (void *)(uintptr_t)i), 0);
	for (i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	atomic_store(&stop, 1);
	pthread_join(ch, NULL);
	pthread_join(r, NULL);
	printf("  # %lu ranges, %ld reports, %ld spurious, %ld bad hints, "
	       "%ld LAST before a pending record\n",
	       atomic_load(&next_cookie), atomic_load(&seen_total),
	       atomic_load(&spurious), atomic_load(&bad_hint),
	       atomic_load(&last_violations));
	ASSERT_EQ(atomic_load(&failed), 0);
	ASSERT_EQ(atomic_load(&bad_hint), 0);
	ASSERT_EQ(atomic_load(&spurious), 0);
	ASSERT_EQ(atomic_load(&last_violations), 0);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), 0);
}

TEST_TIMEOUT(concurrent_unmaps_are_all_reported, 600)
{
	run(0);
}

TEST_TIMEOUT(concurrent_unmaps_are_all_reported_with_filter, 600)
{
	run(UMMUNOTIFY_FEATURE_FILTER);
}

/* The same through the ring (issue 13): records by loads, read() on overflow. */
TEST_TIMEOUT(concurrent_unmaps_are_all_reported_with_ring, 600)
{
	run(UMMUNOTIFY_FEATURE_FILTER | UMMUNOTIFY_FEATURE_RING);
}

static void *hammer(void *arg)
{
	uint64_t cookie = CHURN_BASE + (uintptr_t)arg * (1ULL << 32);

	/*
	 * Zapping many populated, watched pages keeps an invalidation that
	 * hits a range in flight.
	 */
	while (!atomic_load(&stop)) {
		char *p = map_pages(256, 1);

		if (umn_reg(ufd, p, 256 * PAGE, ++cookie))
			atomic_store(&failed, 1);
		madvise(p, 256 * PAGE, MADV_DONTNEED);
		munmap(p, 256 * PAGE);
		if (umn_unreg(ufd, cookie))
			atomic_store(&failed, 1);
	}
	return NULL;
}

/* Whether cookie's INVAL is among the pending records. */
static int reported(int fd, uint64_t cookie)
{
	struct ummunotify_event ev[128];
	int n, k, found = 0;

	while ((n = umn_read(fd, ev, 128)) > 0)
		for (k = 0; k < n; k++)
			if (ev[k].type == UMMUNOTIFY_EVENT_TYPE_INVAL &&
			    ev[k].user_cookie_counter == cookie)
				found = 1;
	return found;
}

/*
 * While other threads keep invalidations of watched ranges in flight, the
 * kernel defers inserting a new range into its tree: REGISTER must not
 * return before the range is watched.
 */
TEST_TIMEOUT(register_during_other_invalidations_watches_at_once, 300)
{
	pthread_t h[2];
	int i, lost = 0;

	ufd = umn_open();
	atomic_store(&stop, 0);
	for (i = 0; i < 2; i++)
		ASSERT_EQ(pthread_create(&h[i], NULL, hammer,
					 (void *)(uintptr_t)i), 0);
	for (i = 0; i < 2000; i++) {
		char *p = map_pages(1, 1);

		ASSERT_EQ(umn_reg(ufd, p, PAGE, i), 0);
		ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
		if (!reported(ufd, i))
			lost++;
		ASSERT_EQ(umn_unreg(ufd, i), 0);
		munmap(p, PAGE);
	}
	atomic_store(&stop, 1);
	for (i = 0; i < 2; i++)
		pthread_join(h[i], NULL);
	ASSERT_EQ(atomic_load(&failed), 0);
	ASSERT_EQ(lost, 0);
}

/* ---- the range tree changes while callbacks walk it (issue 13) -------- */

static char *walk_page;

/* Both threads on CPU 0: the walk is asked to let the other one run. */
static void on_cpu0(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(0, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void *walk_hammer(void *arg)
{
	on_cpu0();
	while (!atomic_load(&stop)) {
		walk_page[0] = 1;
		if (madvise(walk_page, PAGE, MADV_DONTNEED))
			atomic_store(&failed, 1);
	}
	return NULL;
}

/*
 * 20,000 ranges over one page that a thread invalidates again and again:
 * each callback walks them all and, when the CPU is wanted (here by the
 * main thread on the same CPU), lets others run in the middle of the walk.
 * Meanwhile REGISTER and UNREGISTER add and remove ranges in the tree being
 * walked.  Afterwards one invalidation moves the counter once per range,
 * exactly (a multiple if the page also migrated).
 */
TEST_TIMEOUT(ranges_change_while_invalidations_walk_them, 300)
{
	long n = 20000, i, d;
	uint64_t t0 = now_ns(), c0;
	struct ummunotify_event ev[128];
	pthread_t h;

	ufd = umn_open();
	/* NUMA hinting may change protections: not reported. */
	ASSERT_EQ(umn_features(ufd, UMMUNOTIFY_FEATURE_FILTER, NULL), 0);
	counter = umn_counter(ufd);
	walk_page = map_pages(1, 1);
	for (i = 0; i < n; i++)
		ASSERT_EQ(umn_reg(ufd, walk_page, PAGE, i), 0);
	atomic_store(&stop, 0);
	atomic_store(&failed, 0);
	on_cpu0();
	c0 = *counter;
	ASSERT_EQ(pthread_create(&h, NULL, walk_hammer, NULL), 0);
	/*
	 * Until 50 walks (REGISTER waits until no invalidation of the mm
	 * runs, as it did with a notifier per range: one batch at a time).
	 */
	for (i = 0; *counter - c0 < 50 * (uint64_t)n &&
	     now_ns() - t0 < 30000000000ULL; i++) {
		ASSERT_EQ(umn_reg(ufd, walk_page, PAGE, n + i), 0);
		ASSERT_EQ(umn_unreg(ufd, i), 0);
		umn_read(ufd, ev, 128);
	}
	atomic_store(&stop, 1);
	pthread_join(h, NULL);
	printf("  # %ld ranges replaced in %llu ms, counter moved %llu\n", i,
	       (unsigned long long)(now_ns() - t0) / 1000000,
	       (unsigned long long)(*counter - c0));
	ASSERT_EQ(atomic_load(&failed), 0);
	ASSERT_TRUE(*counter - c0 >= 10 * (uint64_t)n);
	ASSERT_TRUE(i >= 10);
	while (umn_read(ufd, ev, 128) > 0)
		;
	walk_page[0] = 1;
	c0 = *counter;
	ASSERT_EQ(madvise(walk_page, PAGE, MADV_DONTNEED), 0);
	d = *counter - c0;
	ASSERT_TRUE(d >= n && d % n == 0);
	ASSERT_EQ(close(ufd), 0);
}
