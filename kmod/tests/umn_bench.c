// SPDX-License-Identifier: GPL-2.0
/*
 * Micro-benchmarks of the ummunotify module (run in the guest):
 *  - munmap of a watched page vs an unwatched one, FILTER off and on, with
 *    1 and 10,000 ranges on the fd (kernel-side cost of the notifier);
 *  - mprotect of a watched page, FILTER off and on;
 *  - REGISTER and UNREGISTER with 1, 1,000 and 100,000 ranges registered;
 *  - scale (test "scale", issue 13): one fd with 10^6 ranges
 *    (UMN_BENCH_SCALE): REGISTER at 10^3 vs 10^6 present, munmap of a
 *    watched page among 10^6 vs among 1, UNREGISTER of all, close, and the
 *    kernel memory per range (the slab cache and SUnreclaim).
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

struct mem_snap {
	long sunreclaim_kb, slab_kb, memfree_kb, objects, slabs;
};

static void mem_snap(struct mem_snap *m)
{
	static const char *const key[] = { "SUnreclaim", "Slab", "MemFree" };
	long *kb[] = { &m->sunreclaim_kb, &m->slab_kb, &m->memfree_kb };
	int i, ret;

	sync();
	write_str_file("/proc/sys/vm/drop_caches", "3");
	for (i = 0; i < 3; i++) {
		ret = read_keyed_long(MEMINFO, key[i], ':', kb[i]);
		if (ret)
			FAIL(MEMINFO " %s: %s", key[i], strerror(-ret));
	}
	m->objects = umn_slab_attr("objects");
	m->slabs = umn_slab_attr("slabs");
}

static void set_limit(const char *path, long v)
{
	char s[32];

	snprintf(s, sizeof(s), "%ld", v);
	if (write_str_file(path, s))
		FAIL("write %s: %s", path, strerror(errno));
}

/* n ranges, one page each, every other page of @base; times each call. */
static void fill(int fd, char *base, long n, uint64_t *t)
{
	long i;

	for (i = 0; i < n; i++) {
		uint64_t t0 = now_ns();

		if (umn_reg(fd, base + 2 * i * PAGE, PAGE, 1000 + i))
			FAIL("register %ld: %s", i, strerror(errno));
		t[i] = now_ns() - t0;
	}
}

/* munmap() of a freshly mapped, populated page watched by @fd (cookie 1). */
static uint64_t munmap_watched_one(int fd)
{
	char *p = map_pages(1, 1);
	uint64_t t0, t;

	if (umn_reg(fd, p, PAGE, 1))
		FAIL("register");
	t0 = now_ns();
	munmap(p, PAGE);
	t = now_ns() - t0;
	if (umn_unreg(fd, 1))
		FAIL("unregister");
	drain(fd);
	return t;
}

/*
 * A process of its own (its own mm and fd, no other range) that times one
 * munmap_watched_one() per byte written to *@to and answers on *@from;
 * it exits when *@to is closed.
 */
static void spawn_alone(int *to, int *from)
{
	int a[2], b[2];
	pid_t pid;

	if (pipe(a) || pipe(b))
		FAIL("pipe");
	pid = fork();
	if (pid < 0)
		FAIL("fork");
	if (!pid) {
		int fd = umn_open();
		uint64_t t;
		char c;

		close(a[1]);
		close(b[0]);
		while (read(a[0], &c, 1) == 1) {
			t = munmap_watched_one(fd);
			if (write(b[1], &t, sizeof(t)) != sizeof(t))
				_exit(1);
		}
		_exit(0);
	}
	close(a[0]);
	close(b[1]);
	*to = a[1];
	*from = b[0];
}

/*
 * Medians of munmap of a watched page in the other process (alone) and in
 * this one (@fd), interleaved: *@alone and the return value.
 */
static double munmap_interleaved(int to, int from, int fd, int iters,
				 uint64_t *ta, uint64_t *tb, double *alone)
{
	int i;

	for (i = 0; i < iters; i++) {
		char c = 1;

		if (write(to, &c, 1) != 1 ||
		    read(from, &ta[i], sizeof(ta[i])) != sizeof(ta[i]))
			FAIL("helper process");
		tb[i] = munmap_watched_one(fd);
	}
	*alone = median(ta, iters);
	return median(tb, iters);
}

/*
 * One fd, n = 10^6 ranges.  The limits are raised for the run and put
 * back (a fresh module load resets them anyway).
 */
TEST_TIMEOUT(scale, 1800)
{
	const char *e = getenv("UMN_BENCH_SCALE");
	long n = e ? atol(e) : 1000000, i, k = 1000;
	long old[3] = { read_long_file(MAX_REGIONS),
			read_long_file(MAX_USER_REGIONS),
			read_long_file(MAX_MM_REGIONS) };
	int iters = 500, fd, to, from;
	uint64_t *t, *tm = calloc(iters, sizeof(uint64_t));
	uint64_t *ta = calloc(iters, sizeof(uint64_t));
	double reg_k, reg_n, unreg_n, unreg_k, a0, w0, a1, w1;
	double fill_ns, unreg_all_ns, close_ns;
	struct mem_snap m0, m1, m2;
	char *base;
	uint64_t t0;

	if (n < 2 * k)
		FAIL("UMN_BENCH_SCALE %ld: at least %ld", n, 2 * k);
	t = mmap(NULL, n * sizeof(*t), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	base = mmap(NULL, 2 * n * PAGE, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (t == MAP_FAILED || base == MAP_FAILED || !tm || !ta)
		FAIL("mmap");
	for (i = 0; i < 3; i++)
		if (old[i] <= 0)
			FAIL("limits not readable");
	set_limit(MAX_REGIONS, 2 * n);
	set_limit(MAX_USER_REGIONS, 2 * n);
	set_limit(MAX_MM_REGIONS, 2 * n);

	printf("scale: %ld ranges on one fd (one page each, every other page)\n",
	       n);
	printf("slab cache %s: object_size %ld slab_size %ld objs_per_slab %ld order %ld aliases %ld\n",
	       UMN_SLAB_DIR, umn_slab_attr("object_size"), umn_slab_attr("slab_size"),
	       umn_slab_attr("objs_per_slab"), umn_slab_attr("order"),
	       umn_slab_attr("aliases"));

	/*
	 * munmap of a watched page in another process whose fd has no other
	 * range, interleaved with the same in this one: with one range here
	 * too (control), then among 10^6.
	 */
	spawn_alone(&to, &from);
	fd = umn_open();
	w0 = munmap_interleaved(to, from, fd, iters, ta, tm, &a0);

	mem_snap(&m0);
	t0 = now_ns();
	fill(fd, base, n, t);
	fill_ns = (double)(now_ns() - t0) / n;
	reg_k = median(t + k, k);	/* 10^3 .. 2*10^3 present */
	reg_n = median(t + n - k, k);	/* the last 10^3 */
	mem_snap(&m1);
	w1 = munmap_interleaved(to, from, fd, iters, ta, tm, &a1);
	close(to);
	close(from);

	/* UNREGISTER of every range, in order: each finds 10^6 .. 1 */
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		uint64_t t1 = now_ns();

		if (umn_unreg(fd, 1000 + i))
			FAIL("unregister %ld: %s", i, strerror(errno));
		t[i] = now_ns() - t1;
	}
	unreg_all_ns = (double)(now_ns() - t0) / n;
	unreg_n = median(t, k);
	unreg_k = median(t + n - 2 * k, k);
	mem_snap(&m2);
	if (m2.sunreclaim_kb - m0.sunreclaim_kb > (m1.sunreclaim_kb - m0.sunreclaim_kb) / 10)
		printf("  # note: SUnreclaim did not come back after UNREGISTER (%ld kB above)\n",
		       m2.sunreclaim_kb - m0.sunreclaim_kb);

	/* close() with 10^6 ranges */
	fill(fd, base, n, t);
	t0 = now_ns();
	close(fd);
	close_ns = (double)(now_ns() - t0) / n;

	set_limit(MAX_REGIONS, old[0]);
	set_limit(MAX_USER_REGIONS, old[1]);
	set_limit(MAX_MM_REGIONS, old[2]);

	printf("\n%-46s %12s %8s\n", "scale case", "ns", "ratio");
	printf("%-46s %12.0f %8.2f\n", "REGISTER, 10^3 present (median)", reg_k,
	       1.0);
	printf("%-46s %12.0f %8.2f\n", "REGISTER, 10^6 present (median)", reg_n,
	       reg_n / reg_k);
	printf("%-46s %12.0f\n", "REGISTER, mean over the whole fill", fill_ns);
	printf("%-46s %12.0f %8.2f\n",
	       "munmap watched page, other process, 1 range", a0, 1.0);
	printf("%-46s %12.0f %8.2f\n",
	       "  interleaved: this process, 1 range", w0, w0 / a0);
	printf("%-46s %12.0f %8.2f\n",
	       "munmap watched page, other process, 1 range", a1, 1.0);
	printf("%-46s %12.0f %8.2f\n",
	       "  interleaved: this process, among 10^6", w1, w1 / a1);
	printf("%-46s %12.0f %8.2f\n", "UNREGISTER, 10^6 present (median)",
	       unreg_n, 1.0);
	printf("%-46s %12.0f %8.2f\n", "UNREGISTER, 10^3 present (median)",
	       unreg_k, unreg_k / unreg_n);
	printf("%-46s %12.0f\n", "UNREGISTER all, mean per range", unreg_all_ns);
	printf("%-46s %12.0f\n", "close() with 10^6 ranges, per range", close_ns);

	printf("\nkernel memory for %ld ranges (after - before the fill)\n", n);
	printf("  slab objects %+ld, slabs %+ld (x PAGE_SIZE << order = %.1f B per range)\n",
	       m1.objects - m0.objects, m1.slabs - m0.slabs,
	       (double)(m1.slabs - m0.slabs) * (PAGE << umn_slab_attr("order")) / n);
	printf("  SUnreclaim %+ld kB = %.1f B per range\n",
	       m1.sunreclaim_kb - m0.sunreclaim_kb,
	       (m1.sunreclaim_kb - m0.sunreclaim_kb) * 1024.0 / n);
	printf("  Slab %+ld kB = %.1f B per range\n", m1.slab_kb - m0.slab_kb,
	       (m1.slab_kb - m0.slab_kb) * 1024.0 / n);
	printf("  MemFree %+ld kB = %.1f B per range (all kernel memory, incl. vmalloc)\n",
	       m1.memfree_kb - m0.memfree_kb,
	       (m0.memfree_kb - m1.memfree_kb) * 1024.0 / n);
	printf("  after UNREGISTER of all: SUnreclaim %+ld kB from before the fill\n",
	       m2.sunreclaim_kb - m0.sunreclaim_kb);
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
