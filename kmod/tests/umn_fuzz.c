// SPDX-License-Identifier: GPL-2.0
/*
 * Fuzz: a bounded, seeded (replayable) random sequence of ioctls with
 * random numbers and arguments, reads of random sizes into good and bad
 * buffers, mmaps with random parameters, munmap/mremap/madvise/mprotect of
 * watched memory, closes, reopens and forks.  The kernel must not warn (the
 * harness checks its log); forked children must get EIO from every call.
 *
 *   UMN_FUZZ_SEED=n UMN_FUZZ_STEPS=m umn_fuzz   # replay one sequence
 */
#define _GNU_SOURCE
#include <poll.h>

#include "harness.h"
#include "umn_util.h"

#define NFD	4
#define POOL_PAGES 64
#define GUARD_PAGES 4
#define MAX_JOBS 8	/* sequences running at once, at most */

static uint64_t rs;

static uint64_t r64(void)
{
	/* splitmix64 */
	uint64_t z = (rs += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned int rn(unsigned int n)
{
	return r64() % n;
}

static char *pool;
static int fds[NFD];

static uint64_t rand_addr(void)
{
	switch (rn(8)) {
	case 0:
		return 0;
	case 1:
		return r64();
	case 2:
		return 0xffff888000000000ULL + rn(1 << 20) * 4096ULL;
	case 3:
		return (1ULL << 47) - rn(4) * 4096;
	default:
		return (uintptr_t)pool + rn(POOL_PAGES + GUARD_PAGES) * PAGE +
		       (rn(4) ? 0 : rn(PAGE));
	}
}

/*
 * A pointer the kernel may write to: NULL, kernel or non-canonical
 * addresses, the guard pages after the pool, somewhere in the pool (the
 * guard pages catch a page-sized overrun), or the real buffer.
 */
static void *rand_ptr(void *good)
{
	switch (rn(8)) {
	case 0:
		return NULL;
	case 1:
		return (void *)(0xffff888000000000ULL + rn(1 << 20) * 4096ULL);
	case 2:
		return (void *)((1ULL << 47) - rn(4) * 4096);
	case 3:
		return pool + (POOL_PAGES + rn(GUARD_PAGES)) * PAGE;
	case 4:
		return pool + rn(POOL_PAGES) * PAGE + rn(PAGE);
	default:
		return good;
	}
}

static unsigned int rand_cmd(void)
{
	static const unsigned int cmds[] = {
		UMMUNOTIFY_EXCHANGE_FEATURES, UMMUNOTIFY_REGISTER_REGION,
		UMMUNOTIFY_UNREGISTER_REGION, UMMUNOTIFY_ARM_REGION,
		UMMUNOTIFY_CHECK_REGION,
	};

	switch (rn(6)) {
	case 0:
		return (unsigned int)r64();
	case 1:
		return _IOC(rn(4), UMMUNOTIFY_MAGIC, rn(8), rn(64));
	default:
		return cmds[rn(5)];
	}
}

static void fuzz_ioctl(int fd)
{
	union {
		struct ummunotify_register_ioctl reg;
		uint64_t cookie;
		uint32_t features;
		char raw[64];
	} a;
	uint64_t start;

	memset(&a, 0, sizeof(a));
	start = rand_addr();
	a.reg.start = start;
	a.reg.end = rn(4) ? start + (1 + rn(8)) * PAGE : rand_addr();
	a.reg.user_cookie = rn(4) ? rn(32) : r64();
	if (!rn(8))
		a.reg.flags = r64();
	if (!rn(8))
		a.reg.reserved = r64();
	if (!rn(10))
		for (size_t i = 0; i < sizeof(a.raw); i++)
			a.raw[i] = r64();
	ioctl(fd, rand_cmd(), rand_ptr(&a));
}

static void fuzz_read(int fd)
{
	static char buf[3 * 4096];
	size_t len;

	switch (rn(4)) {
	case 0:
		len = rn(64);
		break;
	case 1:
		len = sizeof(buf);
		break;
	default:
		len = rn(sizeof(buf));
	}
	read(fd, rand_ptr(buf), len);
}

static void fuzz_mmap(int fd)
{
	static const int prots[] = { PROT_READ, PROT_READ | PROT_WRITE,
				     PROT_READ | PROT_EXEC, PROT_NONE,
				     PROT_WRITE };
	static const int flags[] = { MAP_SHARED, MAP_PRIVATE,
				     MAP_SHARED | MAP_POPULATE,
				     MAP_SHARED | MAP_LOCKED };
	size_t len = rn(3) ? PAGE : rn(4) * PAGE + rn(2);
	off_t off = rn(3) ? 0 : (off_t)rn(4) * PAGE;
	void *p = mmap(NULL, len, prots[rn(5)], flags[rn(4)], fd, off);

	if (p != MAP_FAILED) {
		if (!rn(3))
			mprotect(p, len, PROT_READ | PROT_WRITE);
		if (!rn(3) && !mprotect(p, len, PROT_READ)) {
			madvise(p, len, MADV_DONTNEED);
			(void)*(volatile char *)p;	/* faults it back in */
		}
		if (!rn(3))
			mremap(p, len, len + PAGE, MREMAP_MAYMOVE);
		else if (rn(2))
			munmap(p, len);
		/* else leave it mapped: keeps the file alive */
	}
}

static void fuzz_memory(void)
{
	char *p = pool + rn(POOL_PAGES) * PAGE;
	size_t len = (1 + rn(4)) * PAGE;

	if (p + len > pool + POOL_PAGES * PAGE)
		len = pool + POOL_PAGES * PAGE - p;
	switch (rn(5)) {
	case 0:
		munmap(p, len);
		mmap(p, len, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		break;
	case 1:
		madvise(p, len, MADV_DONTNEED);
		break;
	case 2:
		mprotect(p, len, rn(2) ? PROT_READ : PROT_READ | PROT_WRITE);
		break;
	case 3:
	case 4:
		mprotect(p, len, PROT_READ | PROT_WRITE);
		memset(p, 2, len);
		break;
	}
}

/* A child: a different mm, every fd call must fail with EIO. */
static int fuzz_child(void)
{
	char buf[64];
	int i, fd;

	for (i = 0; i < 20; i++) {
		fd = fds[rn(NFD)];
		if (fd < 0)
			continue;
		errno = 0;
		switch (rn(3)) {
		case 0:
			/* Only ours: generic VFS ioctls (FIOCLEX...) work. */
			if (ioctl(fd, _IOC(rn(4), UMMUNOTIFY_MAGIC, rn(8), rn(64)),
				  buf) != -1 || errno != EIO)
				return 1;
			break;
		case 1:
			if (read(fd, buf, sizeof(buf)) != -1 || errno != EIO)
				return 2;
			break;
		case 2:
			if (mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0) !=
			    MAP_FAILED || errno != EIO)
				return 3;
			break;
		}
	}
	return 0;
}

static void fuzz_run(uint64_t seed, long steps)
{
	long i;
	int k, st;
	pid_t pid;

	rs = seed;
	pool = mmap(NULL, (POOL_PAGES + GUARD_PAGES) * PAGE,
		    PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_TRUE(pool != MAP_FAILED);
	ASSERT_EQ(mprotect(pool + POOL_PAGES * PAGE, GUARD_PAGES * PAGE,
			   PROT_NONE), 0);
	for (k = 0; k < NFD; k++)
		fds[k] = umn_open();

	for (i = 0; i < steps; i++) {
		k = rn(NFD);
		if (fds[k] < 0) {
			fds[k] = umn_open();
			continue;
		}
		switch (rn(100)) {
		case 0 ... 49:
			fuzz_ioctl(fds[k]);
			break;
		case 50 ... 64:
			fuzz_read(fds[k]);
			break;
		case 65 ... 72:
			fuzz_mmap(fds[k]);
			break;
		case 73 ... 92:
			fuzz_memory();
			break;
		case 93 ... 96:
			close(fds[k]);
			fds[k] = -1;
			break;
		case 97: {
			struct pollfd pfd = { .fd = fds[k], .events = POLLIN };

			poll(&pfd, 1, 0);
			break;
		}
		default:
			pid = fork();
			ASSERT_TRUE(pid >= 0);
			if (!pid) {
				int rc = fuzz_child();

				/* Exit with ranges of the parent's fds. */
				if (rn(2))
					_exit(rc);
				for (k = 0; k < NFD; k++)
					if (fds[k] >= 0)
						close(fds[k]);
				_exit(rc);
			}
			waitpid(pid, &st, 0);
			if (!WIFEXITED(st) || WEXITSTATUS(st))
				FAIL("seed %llu step %ld: child status %#x",
				     (unsigned long long)seed, i, st);
			break;
		}
	}
}

static uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v ? strtoull(v, NULL, 0) : def;
}

/* Stops the sequences still running (a failure ends the test) and reaps them. */
static void kill_all(const pid_t *pids, int n)
{
	int j;

	for (j = 0; j < n; j++) {
		if (pids[j] > 0) {
			kill(pids[j], SIGKILL);
			waitpid(pids[j], NULL, 0);
		}
	}
}

TEST_TIMEOUT(random_operations_do_not_upset_the_kernel, 600)
{
	uint64_t seed = env_u64("UMN_FUZZ_SEED", 0);
	long steps = env_u64("UMN_FUZZ_STEPS", 20000);
	int runs = env_u64("UMN_FUZZ_RUNS", 16), r, j, live = 0;
	/*
	 * One sequence per CPU at a time: each is one thread, and the CPU one
	 * sequence left idle was half this test's wall time in the 2-CPU guest.
	 */
	long jobs = env_u64("UMN_FUZZ_JOBS", sysconf(_SC_NPROCESSORS_ONLN));
	pid_t pids[MAX_JOBS] = { 0 };
	uint64_t seeds[MAX_JOBS] = { 0 };

	if (jobs < 1)
		jobs = 1;
	if (jobs > MAX_JOBS)
		jobs = MAX_JOBS;
	if (!seed)
		seed = (uint64_t)time(NULL);
	for (r = 0; r < runs || live; ) {
		pid_t pid;
		int st;

		if (r < runs && live < jobs) {
			printf("  # fuzz seed %llu, %ld steps (replay: UMN_FUZZ_SEED=%llu UMN_FUZZ_RUNS=1)\n",
			       (unsigned long long)(seed + r), steps,
			       (unsigned long long)(seed + r));
			fflush(stdout);
			/* Each sequence in its own process: exit cleans up the rest. */
			pid = fork();
			if (!pid) {
				fuzz_run(seed + r, steps);
				_exit(0);
			}
			if (pid < 0) {
				int e = errno;

				kill_all(pids, jobs);
				FAIL("fork: %s", strerror(e));
			}
			for (j = 0; pids[j]; j++)
				;
			pids[j] = pid;
			seeds[j] = seed + r;
			live++;
			r++;
			continue;
		}
		pid = waitpid(-1, &st, 0);
		for (j = 0; j < jobs && pids[j] != pid; j++)
			;
		if (j == jobs) {	/* -1, or not one of ours */
			int e = errno;

			kill_all(pids, jobs);
			FAIL("waitpid: %d (%s)", pid, strerror(e));
		}
		pids[j] = 0;
		live--;
		if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			kill_all(pids, jobs);
			FAIL("seed %llu: status %#x", (unsigned long long)seeds[j], st);
		}
	}
	/* Everything the sequences left behind was freed at exit. */
	for (r = 0; r < 200 && read_long_file(LIVE_REGIONS); r++)
		usleep(10000);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), 0);
}
