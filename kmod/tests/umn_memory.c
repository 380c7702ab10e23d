// SPDX-License-Identifier: GPL-2.0
/*
 * Memory: kernel memory is proportional to ranges, never to events; the
 * per-fd cap; 100,000 ranges; everything is freed on close, on exit, on
 * SIGKILL and when the fd outlives its opener; allocations are charged to
 * the caller's memory cgroup.
 */
#define _GNU_SOURCE
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "harness.h"
#include "umn_util.h"

static long unreclaimable_slab_kb(void)
{
	long kb;
	int ret;

	sync();
	write_str_file("/proc/sys/vm/drop_caches", "3");
	ret = read_keyed_long(MEMINFO, "SUnreclaim", ':', &kb);
	if (ret)
		FAIL(MEMINFO " SUnreclaim: %s", strerror(-ret));
	return kb;
}

static void wait_live(long want)
{
	int i;

	/* Release may run on another CPU a moment after exit/close. */
	for (i = 0; i < 200; i++) {
		if (read_long_file(LIVE_REGIONS) == want)
			return;
		usleep(10000);
	}
	ASSERT_EQ(read_long_file(LIVE_REGIONS), want);
}

TEST_TIMEOUT(million_invalidations_keep_kernel_memory_flat, 900)
{
	static struct ummunotify_event ev[128];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 0);
	long live = read_long_file(LIVE_REGIONS), before, after;
	long i, events = 0, n;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	for (i = 0; i < 10000; i++)
		madvise(p, PAGE, MADV_DONTNEED);
	umn_read(fd, ev, 128);
	before = unreclaimable_slab_kb();
	for (i = 0; i < 1000000; i++) {
		ASSERT_EQ(madvise(p, PAGE, MADV_DONTNEED), 0);
		if (i % 100000 == 99999) {
			n = umn_read(fd, ev, 128);
			ASSERT_EQ(n, 2);	/* one INVAL, one LAST */
			events += n;
		}
	}
	after = unreclaimable_slab_kb();
	ASSERT_TRUE(*c >= 1010000);
	ASSERT_EQ(events, 20);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live + 1);
	printf("  # SUnreclaim before %ld kB, after %ld kB, counter %llu\n",
	       before, after, (unsigned long long)*c);
	/* 10^6 queued events at 32 bytes would be 31 MB. */
	ASSERT_TRUE(after - before < 1024);
}

TEST(cap_on_ranges_gives_enospc)
{
	long old = read_long_file(MAX_REGIONS);
	int fd = umn_open(), fd2 = umn_open();
	int i, r[16], r16, r16b, rfd2, e16;

	ASSERT_TRUE(old > 0);
	ASSERT_EQ(write_str_file(MAX_REGIONS, "16"), 0);
	for (i = 0; i < 16; i++)
		r[i] = umn_reg(fd, (void *)0x10000, PAGE, i);
	r16 = umn_reg(fd, (void *)0x10000, PAGE, 16);
	e16 = errno;
	rfd2 = umn_reg(fd2, (void *)0x10000, PAGE, 16);	/* per fd */
	umn_unreg(fd, 3);
	r16b = umn_reg(fd, (void *)0x10000, PAGE, 16);
	{
		char s[32];

		snprintf(s, sizeof(s), "%ld", old);
		ASSERT_EQ(write_str_file(MAX_REGIONS, s), 0);
	}
	for (i = 0; i < 16; i++)
		ASSERT_EQ(r[i], 0);
	ASSERT_EQ(r16, -1);
	ASSERT_EQ(e16, ENOSPC);
	ASSERT_EQ(rfd2, 0);
	ASSERT_EQ(r16b, 0);
}

TEST_TIMEOUT(hundred_thousand_ranges_register_report_unregister, 900)
{
	static struct ummunotify_event ev[128];
	const long N = 100000;
	long live = read_long_file(LIVE_REGIONS), i, seen = 0, lasts = 0;
	int fd = umn_open(), n, k;
	char *p = map_pages(N, 0);
	uint64_t t0, t1, t2;
	char *bits = calloc(N, 1);

	t0 = now_ns();
	for (i = 0; i < N; i++)
		ASSERT_EQ(umn_reg(fd, p + i * PAGE, PAGE, i), 0);
	t1 = now_ns();
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live + N);
	ASSERT_EQ(munmap(p, N * PAGE), 0);
	while ((n = umn_read(fd, ev, 128)) > 0) {
		for (k = 0; k < n; k++) {
			if (ev[k].type == UMMUNOTIFY_EVENT_TYPE_LAST) {
				lasts++;
				continue;
			}
			ASSERT_TRUE(ev[k].user_cookie_counter < (uint64_t)N);
			ASSERT_EQ(bits[ev[k].user_cookie_counter], 0);
			bits[ev[k].user_cookie_counter] = 1;
			seen++;
		}
	}
	ASSERT_EQ(n, 0);
	ASSERT_EQ(seen, N);
	ASSERT_EQ(lasts, 1);
	t2 = now_ns();
	for (i = 0; i < N; i++)
		ASSERT_EQ(umn_unreg(fd, i), 0);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live);
	printf("  # register %ld: %.1f ms, unregister: %.1f ms\n", N,
	       (t1 - t0) / 1e6, (now_ns() - t2) / 1e6);
}

/* Register n one-page ranges, half of them already invalidated. */
static void register_many(int fd, long n)
{
	char *p = map_pages(n, 0);
	long i;

	for (i = 0; i < n; i++)
		if (umn_reg(fd, p + i * PAGE, PAGE, i))
			FAIL("register %ld: %s", i, strerror(errno));
	munmap(p, n / 2 * PAGE);
}

TEST(close_with_ranges_registered_frees_everything)
{
	long live = read_long_file(LIVE_REGIONS);
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);

	register_many(fd, 10000);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live + 10000);
	ASSERT_EQ(close(fd), 0);
	/* The counter mapping still holds the file... */
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live + 10000);
	ASSERT_TRUE(*c >= 1);
	/* ...its munmap is the last close. */
	ASSERT_EQ(munmap((void *)c, PAGE), 0);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live);
}

TEST(exit_with_ranges_registered_frees_everything)
{
	long live = read_long_file(LIVE_REGIONS);
	pid_t pid = fork();
	int st;

	if (!pid) {
		int fd = umn_open();

		umn_counter(fd);
		register_many(fd, 10000);
		_exit(read_long_file(LIVE_REGIONS) == live + 10000 ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	wait_live(live);
}

TEST(sigkill_while_blocked_in_read_frees_everything)
{
	long live = read_long_file(LIVE_REGIONS);
	pid_t pid = fork();
	int st;

	if (!pid) {
		struct ummunotify_event ev;
		int fd = umn_open_flags(0);

		register_many(fd, 2);
		read(fd, &ev, sizeof(ev));	/* INVAL */
		read(fd, &ev, sizeof(ev));	/* LAST */
		read(fd, &ev, sizeof(ev));	/* blocks */
		_exit(1);
	}
	usleep(300000);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFSIGNALED(st));
	wait_live(live);
}

TEST(fd_closed_after_opener_exited_frees_everything)
{
	long live = read_long_file(LIVE_REGIONS);
	int sv[2], fd, st;
	pid_t pid;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		int cfd = umn_open();

		umn_counter(cfd);
		register_many(cfd, 1000);
		_exit(umn_send_fd(sv[1], cfd) ? 1 : 0);
	}
	fd = umn_recv_fd(sv[0]);
	ASSERT_TRUE(fd >= 0);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The opener's mm is gone (its exit reported every range)... */
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live + 1000);
	/* ...and the last close still removes the notifiers. */
	ASSERT_EQ(close(fd), 0);
	wait_live(live);
}

TEST(allocations_are_charged_to_memory_cgroup)
{
	const char *root = "/sys/fs/cgroup", *dir = "/sys/fs/cgroup/umn_test";
	char path[256], stat[256], pid[32];
	long before, after;
	int fd, ret;

	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) &&
	    mount("cgroup2", root, "cgroup2", 0, NULL))
		SKIP("cannot mount cgroup2");
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", root);
	if (write_str_file(path, "+memory"))
		SKIP("no memory controller");
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	snprintf(pid, sizeof(pid), "%d", getpid());
	ASSERT_EQ(write_str_file(path, pid), 0);

	snprintf(stat, sizeof(stat), "%s/memory.stat", dir);
	fd = umn_open();
	ret = read_keyed_long(stat, "slab", ' ', &before);
	if (ret)
		FAIL("%s slab: %s", stat, strerror(-ret));
	register_many(fd, 20000);
	ret = read_keyed_long(stat, "slab", ' ', &after);
	if (ret)
		FAIL("%s slab: %s", stat, strerror(-ret));
	printf("  # cgroup slab before %ld, after %ld bytes (%ld per range)\n",
	       before, after, (after - before) / 20000);
	/* Each range is well over 64 bytes of slab. */
	ASSERT_TRUE(after - before >= 20000L * 64);
	close(fd);
}

/* ---- per-user and per-mm bounds (issue 12, item 8) -------------------- */

static long param_or_fail(const char *path)
{
	long v = read_long_file(path);

	if (v <= 0)
		FAIL("%s: missing (%ld)", path, v);
	return v;
}

/* Registers ranges over [p, p + PAGE) until ENOSPC (or @max); returns n. */
static long fill_fd(int fd, void *p, long first_cookie, long max)
{
	long n;

	for (n = 0; n < max; n++) {
		if (umn_reg(fd, p, PAGE, first_cookie + n)) {
			if (errno != ENOSPC)
				FAIL("REGISTER %ld: %s", n, strerror(errno));
			break;
		}
	}
	return n;
}

/*
 * The per-user bound is charged across fds and processes of the same
 * user: with max_user_regions = 100, four fds of one process hold 100
 * ranges in all, a fork child's own fd gets ENOSPC at once, and closing
 * an fd gives its share back.
 */
TEST(user_bound_gives_enospc_across_fds_and_processes)
{
	long old = param_or_fail(MAX_USER_REGIONS);
	long old_mm = param_or_fail(MAX_MM_REGIONS);
	char *p = map_pages(1, 1);
	int fd[4], i, st;
	long n[4], total = 0, again;
	pid_t pid;

	for (i = 0; i < 4; i++)
		fd[i] = umn_open();
	ASSERT_EQ(write_long_file(MAX_MM_REGIONS, 1000000), 0);
	ASSERT_EQ(write_long_file(MAX_USER_REGIONS, 100), 0);
	for (i = 0; i < 4; i++) {
		n[i] = fill_fd(fd[i], p, i * 1000, i < 3 ? 30 : 1000);
		total += n[i];
	}
	pid = fork();
	if (!pid) {
		int cfd = umn_open();

		if (umn_reg(cfd, p, PAGE, 1) != -1 || errno != ENOSPC)
			_exit(1);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	close(fd[0]);
	again = fill_fd(fd[3], p, 5000, 1000);
	ASSERT_EQ(write_long_file(MAX_USER_REGIONS, old), 0);
	ASSERT_EQ(write_long_file(MAX_MM_REGIONS, old_mm), 0);
	ASSERT_EQ(n[0] + n[1] + n[2], 90);
	ASSERT_EQ(n[3], 10);
	ASSERT_EQ(total, 100);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_EQ(again, 30);
}

/*
 * The per-mm bound: two fds of one process share it; another process (a
 * fork child, its own mm) of the same user is not affected by it.
 */
TEST(mm_bound_gives_enospc_across_fds)
{
	long old = param_or_fail(MAX_MM_REGIONS);
	char *p = map_pages(1, 1);
	int fd = umn_open(), fd2 = umn_open(), st;
	long a, b;
	pid_t pid;

	ASSERT_EQ(write_long_file(MAX_MM_REGIONS, 50), 0);
	a = fill_fd(fd, p, 0, 30);
	b = fill_fd(fd2, p, 0, 1000);
	pid = fork();
	if (!pid) {
		int cfd = umn_open();

		_exit(fill_fd(cfd, p, 0, 1000) == 50 ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	ASSERT_EQ(write_long_file(MAX_MM_REGIONS, old), 0);
	ASSERT_EQ(a, 30);
	ASSERT_EQ(b, 20);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static volatile sig_atomic_t sigios;

static void count_sigio(int sig)
{
	sigios++;
}

/*
 * The worst an unprivileged process can do to one invalidation of its own
 * mm: as many ranges as the bounds allow, all over the same page, spread
 * over several fds with SIGIO on.  The munmap of that page runs one
 * callback per range; its time is printed (docs/bench-kmod.md) and must
 * stay bounded.
 */
TEST_TIMEOUT(munmap_with_most_overlapping_ranges_allowed_is_bounded, 900)
{
	long max_mm = param_or_fail(MAX_MM_REGIONS);
	long max_user = param_or_fail(MAX_USER_REGIONS);
	long max_fd = param_or_fail(MAX_REGIONS), n = 0, k, nfull = 0;
	struct ummunotify_event ev[128];
	uint64_t t0, t_reg, t_unmap, t_again;
	int fd[8], nfd = 0, i;
	char *p = map_pages(1, 1);

	signal(SIGIO, count_sigio);
	while (nfd < 8) {
		fd[nfd] = umn_open();
		ASSERT_EQ(fcntl(fd[nfd], F_SETOWN, getpid()), 0);
		ASSERT_EQ(fcntl(fd[nfd], F_SETFL,
				fcntl(fd[nfd], F_GETFL) | O_ASYNC), 0);
		t0 = now_ns();
		k = fill_fd(fd[nfd], p, 0, max_fd + 1);
		t_reg = now_ns() - t0;
		nfd++;
		n += k;
		nfull += k > 0;	/* an fd with ranges ends with a LAST */
		printf("# fd %d: %ld ranges in %.0f ms\n", nfd, k, t_reg / 1e6);
		if (k < max_fd)
			break;
	}
	ASSERT_TRUE(n <= max_mm && n <= max_user);
	t0 = now_ns();
	ASSERT_EQ(munmap(p, PAGE), 0);
	t_unmap = now_ns() - t0;
	/* Again while every range is still queued (no new wake-ups). */
	ASSERT_TRUE(mmap(p, PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE,
			 -1, 0) == p);
	t0 = now_ns();
	ASSERT_EQ(munmap(p, PAGE), 0);
	t_again = now_ns() - t0;
	printf("# munmap of one page under %ld overlapping ranges in %d fds "
	       "(max_mm_regions %ld, max_user_regions %ld): %.1f ms, "
	       "again while queued: %.1f ms, SIGIO handled %d\n",
	       n, nfd, max_mm, max_user, t_unmap / 1e6, t_again / 1e6,
	       (int)sigios);
	ASSERT_TRUE(t_unmap < 20000000000ULL);
	ASSERT_TRUE(t_again < 20000000000ULL);
	/* Everything is reported. */
	for (i = 0, k = 0; i < nfd; i++) {
		int r;

		while ((r = umn_read(fd[i], ev, 128)) > 0)
			k += r;
	}
	ASSERT_EQ(k, n + nfull);
	for (i = 0; i < nfd; i++)
		close(fd[i]);
}

/* ---- bytes per range (issue 13) --------------------------------------- */

/*
 * A range is one object of the module's slab cache, at most 128 bytes,
 * and nothing else: 100,000 ranges add at most 128 bytes each (+ 16 of
 * slack for the rest of the kernel) to the unreclaimable slab.
 */
TEST_TIMEOUT(kernel_memory_per_range_at_most_128_bytes, 600)
{
	long n = 100000, i, objs0, objs1, before, after;
	int fd = umn_open();
	char *p = mmap(NULL, 2 * n * PAGE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	printf("  # object_size %ld slab_size %ld objs_per_slab %ld\n",
	       umn_slab_attr("object_size"), umn_slab_attr("slab_size"),
	       umn_slab_attr("objs_per_slab"));
	ASSERT_TRUE(umn_slab_attr("object_size") > 0);
	ASSERT_TRUE(umn_slab_attr("slab_size") <= 128);
	ASSERT_TRUE(umn_slab_attr("objs_per_slab") * 128 >= 4096);

	objs0 = umn_slab_attr("objects");
	before = unreclaimable_slab_kb();
	for (i = 0; i < n; i++)
		if (umn_reg(fd, p + 2 * i * PAGE, PAGE, i))
			FAIL("register %ld: %s", i, strerror(errno));
	after = unreclaimable_slab_kb();
	objs1 = umn_slab_attr("objects");
	printf("  # %ld ranges: objects %+ld, SUnreclaim %+ld kB (%.1f B per range)\n",
	       n, objs1 - objs0, after - before,
	       (after - before) * 1024.0 / n);
	/* The ranges are objects of this cache (the count is approximate)... */
	ASSERT_TRUE(objs1 - objs0 >= n * 9 / 10);
	/* ...and nothing else of any size is allocated per range. */
	ASSERT_TRUE((after - before) * 1024 <= n * (128 + 16));
	ASSERT_EQ(close(fd), 0);
	munmap(p, 2 * n * PAGE);
}

/*
 * Hints are kept as 32-bit offsets in pages from the start of the range:
 * exact up to 16 TiB; a longer range widens them to whole units of 2^k
 * pages, never narrows them.
 */
TEST(hint_of_range_over_16_tib_covers_the_invalidation)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	uint64_t start = 0x10000, end = ((uint64_t)1 << 47) - 0x10000;
	uint64_t q = (uint64_t)(uintptr_t)p;
	struct ummunotify_register_ioctl r = {
		.start = start, .end = end, .user_cookie = 7,
	};

	ASSERT_TRUE(q > start && q + PAGE < end);
	/* NUMA hinting may change protections anywhere: not reported. */
	ASSERT_EQ(umn_features(fd, UMMUNOTIFY_FEATURE_FILTER, NULL), 0);
	ASSERT_EQ(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r), 0);
	/* 1 TiB around the page: exact. */
	ASSERT_EQ(umn_reg(fd, (void *)(uintptr_t)(q - (1ULL << 39)),
			  1ULL << 40, 8), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(umn_read(fd, ev, 4), 3);
	ASSERT_EQ(ev[0].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	ASSERT_EQ(ev[1].type, UMMUNOTIFY_EVENT_TYPE_INVAL);
	ASSERT_EQ(ev[2].type, UMMUNOTIFY_EVENT_TYPE_LAST);
	if (ev[0].user_cookie_counter != 7) {
		struct ummunotify_event t = ev[0];

		ev[0] = ev[1];
		ev[1] = t;
	}
	ASSERT_EQ(ev[0].user_cookie_counter, 7);
	ASSERT_EQ(ev[0].flags, UMMUNOTIFY_EVENT_FLAG_HINT);
	printf("  # 128 TiB range: hint [%#llx, %#llx) for [%#llx, %#llx)\n",
	       (unsigned long long)ev[0].hint_start,
	       (unsigned long long)ev[0].hint_end, (unsigned long long)q,
	       (unsigned long long)(q + PAGE));
	ASSERT_TRUE(ev[0].hint_start <= q && ev[0].hint_end >= q + PAGE);
	ASSERT_TRUE(ev[0].hint_start >= start && ev[0].hint_end <= end);
	/* units of 2^(47 - 32) bytes at most */
	ASSERT_TRUE(ev[0].hint_end - ev[0].hint_start <= 2 * (1ULL << 15));
	ASSERT_EQ(ev[1].user_cookie_counter, 8);
	ASSERT_EQ(ev[1].flags, UMMUNOTIFY_EVENT_FLAG_HINT);
	ASSERT_EQ(ev[1].hint_start, q);
	ASSERT_EQ(ev[1].hint_end, q + PAGE);
	close(fd);
}
