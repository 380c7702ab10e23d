// SPDX-License-Identifier: GPL-2.0
/*
 * UMMUNOTIFY_FEATURE_REVALIDATE: ARM_REGION / CHECK_REGION.
 *
 * False positives: events that move the counter and report the range
 * without changing its frames (a neighbour's mprotect/mlock/DONTFORK, the
 * same on the range itself, a THP split) -> CHECK says UNCHANGED.  Real
 * changes (munmap, remap, MAP_FIXED, mremap, DONTNEED, FREE + discard,
 * shmem, copy-on-write after fork, collapse, migration, reduced access)
 * -> CHANGED.  Bad input -> the documented errno.  The ground truth is
 * cross-checked with /proc/self/pagemap (the guest runs as root, so it
 * shows frame numbers).
 *
 * Ranges that model a registration are pinned with io_uring buffer
 * registration (FOLL_PIN | FOLL_LONGTERM, as an RDMA registration or the
 * software NIC): pinned frames cannot be freed and reused, which is what
 * makes "same frame number" mean "same page".  Copy-on-write after fork,
 * collapse and migration only happen to unpinned pages: those tests arm
 * unpinned ranges.
 */
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <linux/mempolicy.h>
#include <sched.h>
#include <stddef.h>
#include <sys/syscall.h>

#include "harness.h"
#include "umn_util.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#define UNCH UMMUNOTIFY_REVAL_UNCHANGED
#define CHGD UMMUNOTIFY_REVAL_CHANGED
#define NARM UMMUNOTIFY_REVAL_NOT_ARMED

#define MIB (1024UL * 1024)
#define HPAGE (2 * MIB)

/* An fd with REVALIDATE (and @more) negotiated. */
static int reval_open(uint32_t more)
{
	int fd = umn_open();
	uint32_t want = UMMUNOTIFY_FEATURE_REVALIDATE | more, got;

	if (umn_features(fd, want, &got) || got != want)
		FAIL("EXCHANGE_FEATURES(%#x) gave %#x", want, got);
	return fd;
}

/* The result, or -1/errno. */
static int reval_ioctl(int fd, unsigned long cmd, uint64_t cookie,
		       uint32_t flags, uint64_t counter)
{
	struct ummunotify_revalidate_ioctl r = {
		.user_cookie = cookie, .flags = flags, .counter = counter,
		.result = 0xdead,
	};

	if (ioctl(fd, cmd, &r))
		return -1;
	return r.result;
}

static int arm(int fd, uint64_t cookie)
{
	return reval_ioctl(fd, UMMUNOTIFY_ARM_REGION, cookie, 0, 0);
}

static int check(int fd, uint64_t cookie)
{
	return reval_ioctl(fd, UMMUNOTIFY_CHECK_REGION, cookie, 0, 0);
}

/* Pins [p, p + len) like a registration; close the fd to unpin. */
static int pin(void *p, size_t len)
{
	struct io_uring_params prm;
	struct iovec iov = { .iov_base = p, .iov_len = len };
	int ring;

	memset(&prm, 0, sizeof(prm));
	ring = syscall(__NR_io_uring_setup, 4, &prm);
	if (ring < 0)
		SKIP("io_uring_setup: %s", strerror(errno));
	if (syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS,
		    &iov, 1))
		FAIL("IORING_REGISTER_BUFFERS: %s", strerror(errno));
	return ring;
}

/* Frame number of the page at p, 0 if not present. */
static uint64_t pfn_of(const void *p)
{
	static int fd = -1;
	uint64_t e;

	if (fd < 0)
		fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || pread(fd, &e, 8, (uintptr_t)p / PAGE * 8) != 8)
		FAIL("pagemap: %s", strerror(errno));
	return (e >> 63) ? e & ((1ULL << 55) - 1) : 0;
}

/* 8 MiB of populated private anonymous memory, 2 MiB aligned. */
static char *map_8m(void)
{
	size_t len = 8 * MIB + HPAGE;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	ASSERT_TRUE(p != MAP_FAILED);
	a = (char *)(((uintptr_t)p + HPAGE - 1) & ~(HPAGE - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + 8 * MIB, p + len - (a + 8 * MIB));
	memset(a, 1, 8 * MIB);
	return a;
}

/*
 * The false-positive scenario of issue 11: a pinned, armed 4 KiB range in
 * the middle of 8 MiB; @disturb(range, neighbour) must move the counter
 * and leave the frames alone, and CHECK must say UNCHANGED.
 */
static void noise_is_unchanged(uint32_t features,
			       void (*disturb)(char *range, char *nb))
{
	int fd = reval_open(features);
	volatile uint64_t *c = umn_counter(fd);
	char *m = map_8m();
	char *r = m + 3 * MIB + 5 * PAGE, *nb = r + 64 * 1024;
	uint64_t before, pfn = pfn_of(r);
	int ring = pin(r, PAGE);

	ASSERT_NE(pfn, 0);
	ASSERT_EQ(umn_reg(fd, r, PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
	before = *c;
	disturb(r, nb);
	if (*c == before)
		fprintf(stderr, "  note: the counter did not move\n");
	ASSERT_EQ(pfn_of(r), pfn);
	ASSERT_EQ(check(fd, 1), UNCH);
	/* Still watched: a real change afterwards is still CHANGED. */
	ASSERT_EQ(munmap(r, PAGE), 0);
	ASSERT_EQ(check(fd, 1), CHGD);
	close(ring);
}

/* ---- ABI ---------------------------------------------------------------- */

TEST(reval_numbers_and_layout)
{
	ASSERT_EQ(UMMUNOTIFY_FEATURE_REVALIDATE, 2);
	ASSERT_EQ(UMMUNOTIFY_ARM_REGION, 0xC0185504);
	ASSERT_EQ(UMMUNOTIFY_CHECK_REGION, 0xC0185505);
	ASSERT_EQ(sizeof(struct ummunotify_revalidate_ioctl), 24);
	ASSERT_EQ(offsetof(struct ummunotify_revalidate_ioctl, counter), 8);
	ASSERT_EQ(offsetof(struct ummunotify_revalidate_ioctl, flags), 16);
	ASSERT_EQ(offsetof(struct ummunotify_revalidate_ioctl, result), 20);
	ASSERT_EQ(UMMUNOTIFY_ARM_SINCE, 1);
	ASSERT_EQ(UNCH, 0);
	ASSERT_EQ(CHGD, 1);
	ASSERT_EQ(NARM, 2);
}

TEST(reval_feature_is_granted_alone_and_with_filter)
{
	int fd = umn_open();
	uint32_t got;

	ASSERT_EQ(umn_features(fd, UMMUNOTIFY_FEATURE_REVALIDATE, &got), 0);
	ASSERT_EQ(got, UMMUNOTIFY_FEATURE_REVALIDATE);
	ASSERT_EQ(umn_features(fd, ~0U, &got), 0);
	ASSERT_EQ(got, UMMUNOTIFY_FEATURE_FILTER |
		  UMMUNOTIFY_FEATURE_REVALIDATE | UMMUNOTIFY_FEATURE_RING);
}

TEST(reval_not_negotiated_enotty)
{
	int fd = umn_open(), fd2 = umn_open();
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_ERRNO(arm(fd, 1), ENOTTY);
	ASSERT_ERRNO(check(fd, 1), ENOTTY);
	/* FILTER alone does not enable it either. */
	ASSERT_EQ(umn_features(fd2, UMMUNOTIFY_FEATURE_FILTER, NULL), 0);
	ASSERT_EQ(umn_reg(fd2, p, PAGE, 1), 0);
	ASSERT_ERRNO(arm(fd2, 1), ENOTTY);
	ASSERT_ERRNO(check(fd2, 1), ENOTTY);
}

TEST(reval_unknown_cookie_einval)
{
	int fd = reval_open(0);
	char *p = map_pages(1, 1);

	ASSERT_ERRNO(arm(fd, 1), EINVAL);
	ASSERT_ERRNO(check(fd, 1), EINVAL);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_ERRNO(arm(fd, 2), EINVAL);
	ASSERT_ERRNO(check(fd, 2), EINVAL);
	ASSERT_EQ(umn_unreg(fd, 1), 0);
	ASSERT_ERRNO(check(fd, 1), EINVAL);
}

TEST(reval_bad_flags_einval)
{
	int fd = reval_open(0);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_ERRNO(reval_ioctl(fd, UMMUNOTIFY_ARM_REGION, 1, 2, 0), EINVAL);
	ASSERT_ERRNO(reval_ioctl(fd, UMMUNOTIFY_CHECK_REGION, 1,
				 UMMUNOTIFY_ARM_SINCE, 0), EINVAL);
	/* Refused input changed nothing. */
	ASSERT_EQ(check(fd, 1), NARM);
}

TEST(reval_bad_pointer_efault)
{
	int fd = reval_open(0);

	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_ARM_REGION, NULL), EFAULT);
	ASSERT_ERRNO(ioctl(fd, UMMUNOTIFY_CHECK_REGION, (void *)1), EFAULT);
}

TEST(reval_wrong_size_enotty)
{
	int fd = reval_open(0);
	uint64_t v = 1;

	ASSERT_ERRNO(ioctl(fd, _IOWR(UMMUNOTIFY_MAGIC, 4, uint64_t), &v),
		     ENOTTY);
	ASSERT_ERRNO(ioctl(fd, _IOW(UMMUNOTIFY_MAGIC, 5,
				    struct ummunotify_revalidate_ioctl), &v),
		     ENOTTY);
}

/* 0 if ARM and CHECK fail with EIO here (another mm). */
static int foreign_reval_eio(int fd)
{
	errno = 0;
	if (arm(fd, 1) != -1 || errno != EIO)
		return 1;
	if (check(fd, 1) != -1 || errno != EIO)
		return 2;
	return 0;
}

TEST(reval_fork_child_eio)
{
	int fd = reval_open(0), st;
	char *p = map_pages(1, 1);
	pid_t pid;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	pid = fork();
	if (!pid)
		_exit(foreign_reval_eio(fd));
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	/* The opener's state did not move. */
	p[0] = 2;	/* fork write-protected it: the copy is the parent's */
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
}

TEST(reval_fd_over_unix_socket_eio)
{
	int sv[2], fd = reval_open(0), st;
	char *p;
	pid_t pid;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		int r;

		close(fd);
		/* Another mm receives the opener's fd. */
		r = umn_recv_fd(sv[1]);
		if (r < 0)
			_exit(10);
		_exit(foreign_reval_eio(r));
	}
	/* Mapped after fork: the child shares nothing of it. */
	p = map_pages(1, 1);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(umn_send_fd(sv[0], fd), 0);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	ASSERT_EQ(check(fd, 1), UNCH);
}

TEST(reval_check_before_arm_not_armed)
{
	int fd = reval_open(0);
	char *p = map_pages(1, 1);

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(check(fd, 1), NARM);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
	/* UNREGISTER drops the state with the range. */
	ASSERT_EQ(umn_unreg(fd, 1), 0);
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(check(fd, 1), NARM);
}

TEST(reval_arm_since_counter)
{
	int fd = reval_open(0);
	volatile uint64_t *c = umn_counter(fd);
	char *m = map_8m();
	char *p = m + 3 * MIB, *q = m + 6 * MIB;	/* other 2 MiB blocks */
	uint64_t seen;

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	seen = *c;
	/* Not hit since "seen": armed. */
	ASSERT_EQ(reval_ioctl(fd, UMMUNOTIFY_ARM_REGION, 1,
			      UMMUNOTIFY_ARM_SINCE, seen), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
	/* Hit after "seen" (even without a frame change): armed as changed. */
	ASSERT_EQ(mprotect(p, PAGE, PROT_READ), 0);
	ASSERT_EQ(mprotect(p, PAGE, PROT_READ | PROT_WRITE), 0);
	ASSERT_TRUE(*c > seen);
	ASSERT_EQ(reval_ioctl(fd, UMMUNOTIFY_ARM_REGION, 1,
			      UMMUNOTIFY_ARM_SINCE, seen), CHGD);
	ASSERT_EQ(check(fd, 1), CHGD);
	/* Hits of other ranges do not count. */
	ASSERT_EQ(umn_reg(fd, q, PAGE, 2), 0);
	seen = *c;
	ASSERT_EQ(munmap(q, PAGE), 0);
	ASSERT_TRUE(*c > seen);
	ASSERT_EQ(reval_ioctl(fd, UMMUNOTIFY_ARM_REGION, 1,
			      UMMUNOTIFY_ARM_SINCE, seen), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
}

TEST(reval_unpopulated_or_partial_is_changed)
{
	int fd = reval_open(0);
	char *p = map_pages(6, 0);

	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), CHGD);
	ASSERT_EQ(check(fd, 1), CHGD);
	p[0] = 1;
	p[2 * PAGE] = 1;
	ASSERT_EQ(arm(fd, 1), CHGD);
	p[PAGE] = 1;
	p[3 * PAGE] = 1;
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
	/* A range over a hole. */
	p[5 * PAGE] = 1;
	ASSERT_EQ(munmap(p + 4 * PAGE, PAGE), 0);
	ASSERT_EQ(umn_reg(fd, p + 3 * PAGE, 3 * PAGE, 2), 0);
	ASSERT_EQ(arm(fd, 2), CHGD);
	ASSERT_EQ(check(fd, 2), CHGD);
}

TEST(reval_unaligned_range_covers_its_pages)
{
	int fd = reval_open(0);
	char *p = map_pages(3, 1);
	int ring = pin(p, 3 * PAGE);

	/* [p + 100, p + PAGE + 1): pages 0 and 1. */
	ASSERT_EQ(umn_reg(fd, p + 100, PAGE - 99, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(madvise(p + 2 * PAGE, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(check(fd, 1), UNCH);
	ASSERT_EQ(madvise(p + PAGE, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(check(fd, 1), CHGD);
	close(ring);
}

/* ---- false positives: UNCHANGED though the counter moved ---------------- */

static void nb_mprotect(char *r, char *nb)
{
	ASSERT_EQ(mprotect(nb, PAGE, PROT_READ), 0);
}

static void nb_mlock(char *r, char *nb)
{
	ASSERT_EQ(mlock(nb, PAGE), 0);
}

static void nb_dontfork(char *r, char *nb)
{
	ASSERT_EQ(madvise(nb, PAGE, MADV_DONTFORK), 0);
}

static void range_mlock(char *r, char *nb)
{
	ASSERT_EQ(mlock(r, PAGE), 0);
}

static void range_dontfork(char *r, char *nb)
{
	ASSERT_EQ(madvise(r, PAGE, MADV_DONTFORK), 0);
}

static void range_mprotect_rwx(char *r, char *nb)
{
	/* More access, not less: a split, same frames. */
	ASSERT_EQ(mprotect(r, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC), 0);
}

TEST(noise_neighbour_mprotect_unchanged)
{
	noise_is_unchanged(0, nb_mprotect);
}

TEST(noise_neighbour_mprotect_unchanged_filter)
{
	noise_is_unchanged(UMMUNOTIFY_FEATURE_FILTER, nb_mprotect);
}

TEST(noise_neighbour_mlock_unchanged)
{
	noise_is_unchanged(0, nb_mlock);
}

TEST(noise_neighbour_dontfork_unchanged)
{
	noise_is_unchanged(0, nb_dontfork);
}

TEST(noise_range_mlock_unchanged)
{
	noise_is_unchanged(0, range_mlock);
}

TEST(noise_range_dontfork_unchanged)
{
	noise_is_unchanged(0, range_dontfork);
}

TEST(noise_range_mprotect_more_access_unchanged)
{
	noise_is_unchanged(0, range_mprotect_rwx);
}

TEST(noise_neighbour_mprotect_counter_moves)
{
	/* The premise of the tests above (issue 11), checked once. */
	int fd = reval_open(0);
	volatile uint64_t *c = umn_counter(fd);
	char *m = map_8m();
	char *r = m + 3 * MIB + 5 * PAGE;

	ASSERT_EQ(umn_reg(fd, r, PAGE, 1), 0);
	ASSERT_EQ(mprotect(r + 64 * 1024, PAGE, PROT_READ), 0);
	ASSERT_TRUE(*c > 0);
}

/* Whether the huge page at @p is mapped by a PMD (from smaps). */
static int thp_mapped(void *p)
{
	char line[256], want[64];
	FILE *f = fopen("/proc/self/smaps", "r");
	int in = 0, kb = -1;

	ASSERT_TRUE(f);
	snprintf(want, sizeof(want), "%lx-", (unsigned long)p);
	while (fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' ')) {
			unsigned long s, e;

			in = sscanf(line, "%lx-%lx", &s, &e) == 2 &&
			     s <= (unsigned long)p && (unsigned long)p < e;
		} else if (in && sscanf(line, "AnonHugePages: %d kB",
					&kb) == 1) {
			break;
		}
	}
	fclose(f);
	return kb > 0;
}

/* A 2 MiB huge page, or SKIP. */
static char *map_thp(void)
{
	char *m = map_8m();

	madvise(m, 8 * MIB, MADV_HUGEPAGE);
	if (!thp_mapped(m)) {
		/* Populated before MADV_HUGEPAGE: make it again. */
		madvise(m, 8 * MIB, MADV_DONTNEED);
		memset(m, 1, 8 * MIB);
	}
	if (!thp_mapped(m))
		SKIP("no transparent huge page here");
	return m;
}

static void thp_split_unchanged(int how)
{
	int fd = reval_open(0);
	char *h = map_thp();
	uint64_t pfn = pfn_of(h);
	int ring = pin(h, HPAGE / 2);

	ASSERT_EQ(umn_reg(fd, h, HPAGE / 2, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	if (how == 0)
		ASSERT_EQ(mprotect(h + HPAGE - PAGE, PAGE, PROT_READ), 0);
	else
		ASSERT_EQ(madvise(h + HPAGE / 2, HPAGE / 2, MADV_NOHUGEPAGE),
			  0);
	ASSERT_TRUE(!thp_mapped(h));	/* the PMD was split */
	ASSERT_EQ(pfn_of(h), pfn);
	ASSERT_EQ(check(fd, 1), UNCH);
	close(ring);
}

TEST(noise_thp_split_by_mprotect_unchanged)
{
	thp_split_unchanged(0);
}

TEST(noise_thp_split_by_nohugepage_unchanged)
{
	thp_split_unchanged(1);
}

TEST(noise_madv_free_keeps_frames_unchanged)
{
	/* MADV_FREE only marks the pages lazily freeable: same frames. */
	int fd = reval_open(0);
	char *p = map_pages(4, 1);
	int ring = pin(p, 4 * PAGE);

	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(madvise(p, 4 * PAGE, MADV_FREE), 0);
	ASSERT_EQ(check(fd, 1), UNCH);
	p[0] = 3;	/* write after FREE: the page stays */
	ASSERT_EQ(check(fd, 1), UNCH);
	close(ring);
}

TEST(noise_pinned_fork_keeps_parent_frames)
{
	/* Pinned pages are copied for the child at fork (anon-exclusive). */
	int fd = reval_open(0);
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(4, 1);
	int ring = pin(p, 4 * PAGE), st, pfd[2];
	uint64_t pfn = pfn_of(p), before = *c;
	pid_t pid;

	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(pipe(pfd), 0);
	pid = fork();
	if (!pid) {
		memset(p, 9, 4 * PAGE);	/* the child writes its copy */
		_exit(read(pfd[0], &st, 1) == 1 ? 0 : 1);
	}
	p[1] = 7;	/* the parent writes while the child lives */
	ASSERT_EQ(pfn_of(p), pfn);
	if (*c == before)
		fprintf(stderr, "  note: fork did not move the counter\n");
	ASSERT_EQ(check(fd, 1), UNCH);
	ASSERT_EQ(write(pfd[1], "x", 1), 1);
	waitpid(pid, &st, 0);
	ASSERT_EQ(check(fd, 1), UNCH);
	close(ring);
}

TEST(noise_collapse_of_pinned_range_unchanged)
{
	/*
	 * khugepaged or MADV_COLLAPSE over a pinned range: collapse clears the PMD (the range
	 * is reported) before it finds the pinned pages' extra references, then gives up and
	 * restores it: the same frames stay mapped.
	 */
	int fd = reval_open(0);
	volatile uint64_t *c = umn_counter(fd);
	char *m = map_8m();
	char *h = m + 2 * MIB;
	uint64_t pfn, before;
	int ring, rc;

	ASSERT_EQ(madvise(h, HPAGE, MADV_NOHUGEPAGE), 0);
	ASSERT_EQ(madvise(h, HPAGE, MADV_DONTNEED), 0);
	memset(h, 2, HPAGE);	/* 512 small pages */
	ASSERT_EQ(madvise(h, HPAGE, MADV_HUGEPAGE), 0);
	ring = pin(h, 64 * PAGE);
	pfn = pfn_of(h);
	ASSERT_EQ(umn_reg(fd, h, 64 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	before = *c;
	rc = madvise(h, HPAGE, MADV_COLLAPSE);
	if (rc && errno == EINVAL)
		SKIP("no MADV_COLLAPSE here");
	/* Pinned pages are never collapsed away. */
	ASSERT_EQ(pfn_of(h), pfn);
	if (*c == before)
		fprintf(stderr, "  note: MADV_COLLAPSE (rc %d) did not move the counter\n", rc);
	ASSERT_EQ(check(fd, 1), UNCH);
	close(ring);
}

/* ---- real changes: CHANGED ---------------------------------------------- */

struct armed {
	int fd, ring;
	volatile uint64_t *c;
	char *p;
	uint64_t pfn;
};

/* A pinned, armed, populated range of @n pages. */
static struct armed arm_pinned(size_t n)
{
	struct armed a;

	a.fd = reval_open(0);
	a.c = umn_counter(a.fd);
	a.p = map_pages(n, 1);
	a.ring = pin(a.p, n * PAGE);
	a.pfn = pfn_of(a.p);
	ASSERT_EQ(umn_reg(a.fd, a.p, n * PAGE, 1), 0);
	ASSERT_EQ(arm(a.fd, 1), UNCH);
	return a;
}

static void expect_changed(struct armed *a)
{
	ASSERT_TRUE(*a->c > 0);
	ASSERT_EQ(check(a->fd, 1), CHGD);
	/* ARM again describes the new state; CHECK agrees with it. */
	if (arm(a->fd, 1) == UNCH)
		ASSERT_EQ(check(a->fd, 1), UNCH);
	close(a->ring);
}

static void *map_at(void *p, size_t len, int flags)
{
	void *q = mmap(p, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | flags,
		       -1, 0);

	ASSERT_TRUE(q == p);
	return q;
}

TEST(real_munmap_changed)
{
	struct armed a = arm_pinned(4);

	ASSERT_EQ(munmap(a.p + PAGE, PAGE), 0);
	expect_changed(&a);
}

TEST(real_munmap_mmap_same_address_changed)
{
	struct armed a = arm_pinned(4);

	ASSERT_EQ(munmap(a.p, 4 * PAGE), 0);
	map_at(a.p, 4 * PAGE, MAP_FIXED_NOREPLACE);
	ASSERT_NE(pfn_of(a.p), a.pfn);
	expect_changed(&a);
}

TEST(real_map_fixed_over_changed)
{
	struct armed a = arm_pinned(4);

	map_at(a.p + 2 * PAGE, PAGE, MAP_FIXED);
	expect_changed(&a);
}

TEST(real_mremap_move_changed)
{
	struct armed a = arm_pinned(4);
	char *dst = map_pages(4, 0);

	ASSERT_TRUE(mremap(a.p, 4 * PAGE, 4 * PAGE,
			   MREMAP_MAYMOVE | MREMAP_FIXED, dst) == dst);
	ASSERT_EQ(check(a.fd, 1), CHGD);
	/* Something else mapped at the old address: still CHANGED. */
	map_at(a.p, 4 * PAGE, MAP_FIXED_NOREPLACE);
	expect_changed(&a);
}

TEST(real_dontneed_changed)
{
	struct armed a = arm_pinned(4);

	ASSERT_EQ(madvise(a.p + 3 * PAGE, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(check(a.fd, 1), CHGD);
	a.p[3 * PAGE] = 1;	/* a new page */
	expect_changed(&a);
}

TEST(real_dontneed_refault_same_address_changed)
{
	struct armed a = arm_pinned(1);

	ASSERT_EQ(madvise(a.p, PAGE, MADV_DONTNEED), 0);
	a.p[0] = 1;
	ASSERT_NE(pfn_of(a.p), a.pfn);
	expect_changed(&a);
}

TEST(real_mprotect_read_of_writable_changed)
{
	struct armed a = arm_pinned(4);

	ASSERT_EQ(mprotect(a.p + PAGE, PAGE, PROT_READ), 0);
	ASSERT_EQ(pfn_of(a.p), a.pfn);
	expect_changed(&a);
	/* Armed read-only, read-only stays UNCHANGED; writable again too. */
	ASSERT_EQ(arm(a.fd, 1), UNCH);
	ASSERT_EQ(check(a.fd, 1), UNCH);
}

TEST(real_mprotect_none_changed)
{
	struct armed a = arm_pinned(4);

	ASSERT_EQ(mprotect(a.p, 4 * PAGE, PROT_NONE), 0);
	ASSERT_EQ(check(a.fd, 1), CHGD);
	ASSERT_EQ(arm(a.fd, 1), CHGD);
	close(a.ring);
}

TEST(real_zero_page_then_write_changed)
{
	int fd = reval_open(0);
	char *p = map_pages(1, 0);
	volatile char x = p[0];	/* maps the shared zero page, read-only */

	(void)x;
	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
	p[0] = 1;		/* copy-on-write: a new page */
	ASSERT_EQ(check(fd, 1), CHGD);
}

TEST(real_shmem_is_never_unchanged)
{
	/* File-backed (here shmem): ARM answers CHANGED, so does CHECK. */
	int fd = reval_open(0);
	char *p = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	memset(p, 1, 4 * PAGE);
	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), CHGD);
	ASSERT_EQ(check(fd, 1), CHGD);
	ASSERT_EQ(madvise(p, PAGE, MADV_REMOVE), 0);
	ASSERT_EQ(check(fd, 1), CHGD);
}

TEST(real_fork_then_parent_write_changed)
{
	/* Unpinned: fork shares the page; the parent's write copies it. */
	int fd = reval_open(0);
	char *p = map_pages(2, 1);
	uint64_t pfn = pfn_of(p);
	int st, pfd[2];
	pid_t pid;

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(pipe(pfd), 0);
	pid = fork();
	if (!pid)
		_exit(read(pfd[0], &st, 1) == 1 ? 0 : 1);
	/* Armed after fork: the frames are shared, read-only. */
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(check(fd, 1), UNCH);
	p[0] = 1;
	ASSERT_NE(pfn_of(p), pfn);
	ASSERT_EQ(check(fd, 1), CHGD);
	ASSERT_EQ(write(pfd[1], "x", 1), 1);
	waitpid(pid, &st, 0);
}

TEST(real_fork_then_child_write_changed)
{
	/*
	 * Unpinned, armed writable before fork: fork write-protects the
	 * parent's pages (less access: CHANGED).  The child's write copies
	 * the page in the child; the parent keeps its frame.
	 */
	int fd = reval_open(0);
	char *p = map_pages(2, 1);
	uint64_t pfn = pfn_of(p);
	int st;
	pid_t pid;

	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	pid = fork();
	if (!pid) {
		p[0] = 5;
		_exit(0);
	}
	waitpid(pid, &st, 0);
	ASSERT_EQ(pfn_of(p), pfn);
	ASSERT_EQ(check(fd, 1), CHGD);
}

TEST(real_collapse_changed)
{
	/* Unpinned small pages collapsed into a huge page: new frames. */
	int fd = reval_open(0);
	char *m = map_8m();
	char *h = m + 2 * MIB;
	uint64_t pfn;

	ASSERT_EQ(madvise(h, HPAGE, MADV_NOHUGEPAGE), 0);
	ASSERT_EQ(madvise(h, HPAGE, MADV_DONTNEED), 0);
	memset(h, 2, HPAGE);	/* 512 small pages */
	ASSERT_EQ(madvise(h, HPAGE, MADV_HUGEPAGE), 0);
	pfn = pfn_of(h);
	ASSERT_EQ(umn_reg(fd, h, 64 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	if (madvise(h, HPAGE, MADV_COLLAPSE)) {
		if (errno == EINVAL)
			SKIP("no MADV_COLLAPSE here");
		SKIP("MADV_COLLAPSE: %s", strerror(errno));
	}
	ASSERT_TRUE(thp_mapped(h));
	ASSERT_NE(pfn_of(h), pfn);
	ASSERT_EQ(check(fd, 1), CHGD);
}

/* Writes @v to a KSM knob under /sys/kernel/mm/ksm; 0 if it is not there. */
static int ksm_set(const char *knob, long v)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/mm/ksm/%s", knob);
	f = fopen(path, "w");
	if (!f)
		return 0;
	fprintf(f, "%ld\n", v);
	return fclose(f) == 0;
}

static long ksm_get(const char *knob)
{
	char path[64];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/mm/ksm/%s", knob);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/*
 * @n identical pages at @p made mergeable, then two full ksmd scans (at
 * most 30 s); ksmd is stopped again and merged pages kept (run = 0).
 */
static void ksm_merge(char *p, size_t n)
{
	long scans;
	int i;

	memset(p, 0x5a, n * PAGE);
	if (madvise(p, n * PAGE, MADV_MERGEABLE))
		SKIP("MADV_MERGEABLE: %s", strerror(errno));
	if (!ksm_set("sleep_millisecs", 0) || !ksm_set("pages_to_scan", 10000))
		SKIP("no KSM here");
	scans = ksm_get("full_scans");
	if (!ksm_set("run", 1))
		SKIP("cannot start ksmd");
	for (i = 0; i < 3000 && ksm_get("full_scans") < scans + 2; i++)
		usleep(10000);
	ksm_set("run", 0);
	if (ksm_get("full_scans") < scans + 2)
		SKIP("ksmd did not scan twice in 30 s");
}

TEST(noise_ksm_skips_pinned_unchanged)
{
	/* ksmd never merges pages pinned for DMA: same frames. */
	struct armed a;
	uint64_t pfn1;

	a.fd = reval_open(0);
	a.p = map_pages(4, 1);
	memset(a.p, 0x5a, 4 * PAGE);
	a.ring = pin(a.p, 4 * PAGE);
	a.pfn = pfn_of(a.p);
	pfn1 = pfn_of(a.p + PAGE);
	ASSERT_EQ(umn_reg(a.fd, a.p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(a.fd, 1), UNCH);
	ksm_merge(a.p, 4);
	ASSERT_EQ(pfn_of(a.p), a.pfn);
	ASSERT_EQ(pfn_of(a.p + PAGE), pfn1);
	ASSERT_EQ(check(a.fd, 1), UNCH);
	madvise(a.p, 4 * PAGE, MADV_UNMERGEABLE);
	close(a.ring);
}

TEST(real_ksm_merge_changed)
{
	/* Unpinned identical pages merged into one KSM page: new frames. */
	int fd = reval_open(0);
	char *p = map_pages(4, 1);
	uint64_t pfn[4];
	int i, moved = 0;

	memset(p, 0x5a, 4 * PAGE);
	for (i = 0; i < 4; i++)
		pfn[i] = pfn_of(p + i * PAGE);
	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ksm_merge(p, 4);
	if (pfn_of(p + PAGE) != pfn_of(p)) {
		madvise(p, 4 * PAGE, MADV_UNMERGEABLE);
		SKIP("ksmd merged nothing");
	}
	/* One of the frames became the KSM page; the others were replaced. */
	for (i = 0; i < 4; i++)
		moved += pfn_of(p + i * PAGE) != pfn[i];
	ASSERT_TRUE(moved >= 1);
	ASSERT_EQ(check(fd, 1), CHGD);
	madvise(p, 4 * PAGE, MADV_UNMERGEABLE);
}

static int numa_nodes(void)
{
	char path[64];
	int n = 0;

	for (;;) {
		snprintf(path, sizeof(path), "/sys/devices/system/node/node%d",
			 n);
		if (access(path, F_OK))
			return n;
		n++;
	}
}

TEST(real_move_pages_changed)
{
	/* Unpinned, migrated to another node: new frames. */
	int fd = reval_open(0);
	char *p = map_pages(4, 1);
	void *pages[4];
	int nodes[4], status[4], i;

	if (numa_nodes() < 2)
		SKIP("one NUMA node: no migration target");
	ASSERT_EQ(umn_reg(fd, p, 4 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	for (i = 0; i < 4; i++)
		pages[i] = p + i * PAGE;
	/* Where the pages are (nodes NULL), then to the other node. */
	ASSERT_EQ(syscall(__NR_move_pages, 0, 4, pages, NULL, status, 0), 0);
	for (i = 0; i < 4; i++) {
		ASSERT_TRUE(status[i] >= 0);
		nodes[i] = !status[i];
	}
	ASSERT_EQ(syscall(__NR_move_pages, 0, 4, pages, nodes, status, 0), 0);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(status[i], nodes[i]);
	ASSERT_EQ(check(fd, 1), CHGD);
}

TEST(noise_move_pages_of_pinned_range_unchanged)
{
	/* Pinned pages are not migrated (move_pages reports -EBUSY or leaves them): same frames. */
	struct armed a;
	void *pages[4];
	int nodes[4], status[4], i;

	if (numa_nodes() < 2)
		SKIP("one NUMA node: no migration target");
	a = arm_pinned(4);
	for (i = 0; i < 4; i++)
		pages[i] = a.p + i * PAGE;
	ASSERT_EQ(syscall(__NR_move_pages, 0, 4, pages, NULL, status, 0), 0);
	for (i = 0; i < 4; i++)
		nodes[i] = !status[i];
	syscall(__NR_move_pages, 0, 4, pages, nodes, status, 0);
	ASSERT_EQ(pfn_of(a.p), a.pfn);
	ASSERT_EQ(check(a.fd, 1), UNCH);
	close(a.ring);
}

TEST(real_madv_free_discarded_changed)
{
	/* Unpinned lazily freed pages, reclaimed: not present any more. */
	int fd = reval_open(0);
	char *p = map_pages(8, 1);

	ASSERT_EQ(umn_reg(fd, p, 8 * PAGE, 1), 0);
	ASSERT_EQ(arm(fd, 1), UNCH);
	ASSERT_EQ(madvise(p, 8 * PAGE, MADV_FREE), 0);
	if (madvise(p, 8 * PAGE, MADV_PAGEOUT))
		SKIP("MADV_PAGEOUT: %s", strerror(errno));
	if (pfn_of(p))
		SKIP("MADV_PAGEOUT left the lazily freed page mapped");
	ASSERT_EQ(check(fd, 1), CHGD);
}

/* ---- cost --------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t median_ns(int fd, unsigned long cmd, void *arg, int n)
{
	uint64_t *t = calloc(n, sizeof(*t)), m;
	int i;

	for (i = 0; i < n; i++) {
		uint64_t t0 = now_ns();

		ioctl(fd, cmd, arg);
		t[i] = now_ns() - t0;
	}
	qsort(t, n, sizeof(*t), cmp_u64);
	m = t[n / 2];
	free(t);
	return m;
}

TEST_TIMEOUT(reval_check_cost, 300)
{
	static const size_t sizes[] = { 4096, MIB, 64 * MIB };
	int fd = reval_open(0);
	uint64_t plain, chk, arm_ns;
	unsigned int i;

	plain = median_ns(fd, _IO(UMMUNOTIFY_MAGIC, 99), NULL, 1001);
	for (i = 0; i < 3; i++) {
		size_t len = sizes[i];
		int n = len > MIB ? 21 : 201;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
			       -1, 0);
		struct ummunotify_revalidate_ioctl r = { .user_cookie = i };

		ASSERT_TRUE(p != MAP_FAILED);
		/*
		 * A policy of its own (no MPOL_F_MOF) keeps NUMA balancing's
		 * scanner off the buffer: after ~1 s of this test's CPU time
		 * it makes the PTEs/PMDs of private memory PROT_NONE hinting
		 * entries (pinned huge pages too), which ARM rightly calls
		 * CHANGED (the suite's guests have two nodes).
		 */
		ASSERT_EQ(syscall(__NR_mbind, p, len, MPOL_LOCAL, NULL, 0, 0), 0);
		memset(p, 1, len);
		ASSERT_EQ(umn_reg(fd, p, len, i), 0);
		arm_ns = median_ns(fd, UMMUNOTIFY_ARM_REGION, &r, n);
		ASSERT_EQ(r.result, UNCH);
		chk = median_ns(fd, UMMUNOTIFY_CHECK_REGION, &r, n);
		ASSERT_EQ(r.result, UNCH);
		printf("# cost %s: CHECK %zu KiB median %llu ns (ARM %llu ns), "
		       "plain ioctl %llu ns, ratio %.1f, n=%d\n",
		       getenv("VMTEST_KVER") ? getenv("VMTEST_KVER") : "",
		       len / 1024, (unsigned long long)chk,
		       (unsigned long long)arm_ns, (unsigned long long)plain,
		       (double)chk / plain, n);
		munmap(p, len);
	}
}
