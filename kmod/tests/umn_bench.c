// SPDX-License-Identifier: GPL-2.0
/*
 * Micro-benchmarks of the ummunotify module (run in the guest):
 *  - munmap of a watched page vs an unwatched one, FILTER off and on, with
 *    1 and 10,000 ranges on the fd (kernel-side cost of the notifier);
 *  - mprotect of a watched page, FILTER off and on;
 *  - REGISTER and UNREGISTER with 1, 1,000 and 100,000 ranges registered.
 * Prints medians in ns and ratios.  UMN_BENCH_ITERS sets the repetitions.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "harness.h"
#include "umn_util.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double median(uint64_t *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static void drain(int fd)
{
	struct ummunotify_event ev[128];

	while (umn_read(fd, ev, 128) > 0)
		;
}

/* Background ranges far from anything mapped, never invalidated. */
static void add_background(int fd, long n, uint64_t cookie0)
{
	char *base = mmap(NULL, n * PAGE, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	long i;

	if (base == MAP_FAILED)
		FAIL("mmap background");
	for (i = 0; i < n; i++)
		if (umn_reg(fd, base + i * PAGE, PAGE, cookie0 + i))
			FAIL("register background %ld: %s", i, strerror(errno));
}

enum { M_NONE, M_PLAIN, M_OFF, M_ON, M_OFF_10K, M_ON_10K, NMODES };
static const char *const mode_names[NMODES] = {
	"process without ummunotify", "unwatched page",
	"watched, FILTER off", "watched, FILTER on",
	"watched among 10k, FILTER off", "watched among 10k, FILTER on",
};

static uint64_t munmap_one(void)
{
	char *p = map_pages(1, 1);
	uint64_t t0 = now_ns();

	munmap(p, PAGE);
	return now_ns() - t0;
}

/*
 * The baseline runs in a fork child: its mm has no MMU notifier at all,
 * whereas in this process every munmap walks the (non-empty) interval tree.
 */
static void measure_in_clean_mm(uint64_t *out, int n)
{
	pid_t pid = fork();
	int i, st;

	if (!pid) {
		for (i = 0; i < n; i++)
			out[i] = munmap_one();
		_exit(0);
	}
	waitpid(pid, &st, 0);
}

static void bench_munmap(int iters)
{
	uint64_t *t[NMODES], *mp[2];
	int fd[NMODES], m, i, k;
	double med[NMODES], mpm[2];

	for (m = 0; m < NMODES; m++) {
		t[m] = mmap(NULL, iters * sizeof(uint64_t),
			    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			    -1, 0);
		fd[m] = -1;
		if (m <= M_PLAIN)
			continue;
		fd[m] = umn_open();
		if (umn_features(fd[m], (m == M_ON || m == M_ON_10K) ?
				 UMMUNOTIFY_FEATURE_FILTER : 0, NULL))
			FAIL("features");
		if (m >= M_OFF_10K)
			add_background(fd[m], 10000, 1000000);
	}
	for (i = 0; i < iters; i++) {
		if (i % 100 == 0)
			measure_in_clean_mm(t[M_NONE] + i,
					    iters - i < 100 ? iters - i : 100);
		/* Rotate the order so that no case always follows another. */
		for (k = 0; k < NMODES - M_PLAIN; k++) {
			char *p = map_pages(1, 1);
			uint64_t t0;

			m = M_PLAIN + (i + k) % (NMODES - M_PLAIN);
			if (fd[m] >= 0 && umn_reg(fd[m], p, PAGE, 1))
				FAIL("register");
			t0 = now_ns();
			munmap(p, PAGE);
			t[m][i] = now_ns() - t0;
			if (fd[m] >= 0) {
				umn_unreg(fd[m], 1);
				drain(fd[m]);
			}
		}
	}
	for (m = 0; m < NMODES; m++)
		med[m] = median(t[m], iters);

	/* mprotect RW -> RO of a watched page: FILTER drops the event. */
	for (m = 0; m < 2; m++) {
		int f = fd[m ? M_ON : M_OFF];
		char *p = map_pages(1, 1);
		volatile uint64_t *c;
		uint64_t before;

		mp[m] = calloc(iters, sizeof(uint64_t));
		if (umn_reg(f, p, PAGE, 2))
			FAIL("register");
		c = umn_counter(f);
		before = *c;
		for (i = 0; i < iters; i++) {
			uint64_t t0 = now_ns();

			mprotect(p, PAGE, PROT_READ);
			mp[m][i] = now_ns() - t0;
			mprotect(p, PAGE, PROT_READ | PROT_WRITE);
			drain(f);
		}
		mpm[m] = median(mp[m], iters);
		printf("mprotect watched page, FILTER %s: median %.0f ns, "
		       "counter moved %llu times in %d iterations\n",
		       m ? "on " : "off", mpm[m],
		       (unsigned long long)(*c - before), 2 * iters);
	}

	printf("\nmunmap of one populated 4 KiB page (%d iterations, cases interleaved, order rotated)\n",
	       iters);
	printf("%-32s %12s %8s\n", "case", "median ns", "ratio");
	/* ratio: to the same munmap in a process without any notifier */
	for (m = 0; m < NMODES; m++)
		printf("%-32s %12.0f %8.2f\n", mode_names[m], med[m],
		       med[m] / med[M_NONE]);
	printf("%-32s %12.0f %8.2f\n", "mprotect watched, FILTER off",
	       mpm[0], 1.0);
	printf("%-32s %12.0f %8.2f\n", "mprotect watched, FILTER on",
	       mpm[1], mpm[1] / mpm[0]);
	for (m = 0; m < NMODES; m++)
		if (fd[m] >= 0)
			close(fd[m]);
}

static void bench_register(int iters)
{
	static const long sizes[] = { 1, 1000, 100000 };
	double reg[3], unreg[3];
	uint64_t *tr = calloc(iters, sizeof(uint64_t));
	uint64_t *tu = calloc(iters, sizeof(uint64_t));
	char *p = map_pages(1, 1);
	int s, i;

	for (s = 0; s < 3; s++) {
		int fd = umn_open();

		/* n ranges in total while the measured one is registered */
		if (sizes[s] > 1)
			add_background(fd, sizes[s] - 1, 1000);
		for (i = 0; i < iters; i++) {
			uint64_t t0 = now_ns(), t1;

			if (umn_reg(fd, p, PAGE, 1))
				FAIL("register");
			t1 = now_ns();
			if (umn_unreg(fd, 1))
				FAIL("unregister");
			tu[i] = now_ns() - t1;
			tr[i] = t1 - t0;
		}
		reg[s] = median(tr, iters);
		unreg[s] = median(tu, iters);
		close(fd);
	}
	printf("\nREGISTER / UNREGISTER of one range (%d iterations)\n", iters);
	printf("%-22s %14s %8s %14s %8s\n", "ranges registered",
	       "register ns", "ratio", "unregister ns", "ratio");
	for (s = 0; s < 3; s++)
		printf("%-22ld %14.0f %8.2f %14.0f %8.2f\n", sizes[s], reg[s],
		       reg[s] / reg[0], unreg[s], unreg[s] / unreg[0]);
}

TEST_TIMEOUT(bench, 1200)
{
	const char *e = getenv("UMN_BENCH_ITERS");
	int iters = e ? atoi(e) : 2000;

	printf("kernel: ");
	fflush(stdout);
	system("uname -r");
	bench_munmap(iters);
	bench_register(iters);
}
