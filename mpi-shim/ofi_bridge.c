/*
 * ofi_bridge.c - ummunotify as libfabric's imported memory monitor (see ofi_bridge.h).
 *
 * Locking. libfabric calls subscribe/unsubscribe/valid with its global mm_lock held, and
 * import_ops->notify() takes mm_lock (and unsubscribe may be called from inside notify). The
 * bridge's own mutex `b.lock` is therefore always taken after mm_lock, never before: the helper
 * thread collects ranges under b.lock, drops it, then calls notify(). munmap() never waits for
 * the bridge (ummunotify only queues a record and bumps the counter), so the helper may take
 * libfabric's locks without the free()-hangs-in-the-monitor deadlock of userfaultfd monitors.
 *
 * Built twice: into libregcache_ofi.so (regcache_ofi_import() calls libfabric's fi_open) and,
 * with -DOFI_BRIDGE_IN_SHIM, into libregcache_shim.so (ofi_attach.c passes the fi_open of the
 * libfabric the process loaded; nothing here links against libfabric then).
 *
 * Subscriptions. Each subscribe(addr, len) registers its own ummunotify range (page-aligned
 * outward) whose cookie is the address of its `struct sub`; an INVAL record marks that sub
 * stale. valid(addr, len) is false when no sub for exactly [addr, addr+len) exists or any of
 * them is stale. Subs are in a hash table keyed by addr (libfabric's cache keeps one entry per
 * range; duplicates are tolerated).
 */
#define _GNU_SOURCE
#include "ofi_bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_ext.h>

#include "../kmod/include/uapi/linux/ummunotify.h"

#define PAGE 4096UL
#define NBUCKETS 4096
#define BATCH 1024

struct sub {
	uintptr_t addr;   /* as libfabric gave it */
	size_t len;
	bool stale;
	struct sub *next; /* hash chain */
};

struct range {
	uintptr_t addr;
	size_t len;
};

static int no_helper; /* REGCACHE_OFI_NO_HELPER=1: only valid() drops stale entries */

static struct {
	struct fid_mem_monitor mon;
	pthread_mutex_t lock;
	int fd;                       /* /dev/ummunotify, O_NONBLOCK */
	int wake;                     /* eventfd: stop the helper */
	const volatile uint64_t *counter;
	uint64_t last;                /* counter value of the last LAST record */
	struct sub *buckets[NBUCKETS];
	uint64_t nstale;              /* subs marked stale and still in the table */
	pthread_t helper;
	bool helper_running;
	bool imported;
	int danger;
	struct regcache_ofi_stats st;
} b = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.fd = -1,
	.wake = -1,
};

static unsigned bucket(uintptr_t addr)
{
	return (unsigned)((addr >> 12) ^ (addr >> 24)) % NBUCKETS;
}

/* Reads every queued record. b.lock held. */
static void drain_locked(void)
{
	struct ummunotify_event ev[128];
	ssize_t n;

	b.st.drains++;
	for (;;) {
		n = read(b.fd, ev, sizeof(ev));
		if (n <= 0)
			break;
		for (size_t i = 0; i < (size_t)n / sizeof(ev[0]); i++) {
			if (ev[i].type == UMMUNOTIFY_EVENT_TYPE_LAST) {
				b.last = ev[i].user_cookie_counter;
				continue;
			}
			struct sub *s = (struct sub *)(uintptr_t)ev[i].user_cookie_counter;
			b.st.invalidations++;
			if (!s->stale)
				b.nstale++;
			s->stale = true;
		}
	}
}

static void check_locked(void)
{
	if (__atomic_load_n(b.counter, __ATOMIC_ACQUIRE) != b.last)
		drain_locked();
}

/* Unlinks *pp, unregisters and frees it. b.lock held. */
static void remove_locked(struct sub **pp)
{
	struct sub *s = *pp;
	uint64_t cookie = (uintptr_t)s;

	ioctl(b.fd, UMMUNOTIFY_UNREGISTER_REGION, &cookie);
	*pp = s->next;
	if (s->stale)
		b.nstale--;
	free(s);
	b.st.live--;
}

/* Removes every stale sub for exactly [addr, addr+len). b.lock held. */
static void remove_stale_locked(uintptr_t addr, size_t len)
{
	struct sub **pp = &b.buckets[bucket(addr)];
	while (*pp) {
		if ((*pp)->addr == addr && (*pp)->len == len && (*pp)->stale)
			remove_locked(pp);
		else
			pp = &(*pp)->next;
	}
}

static int mon_start(struct fid_mem_monitor *m)
{
	(void)m;
	return 0;
}

static void mon_stop(struct fid_mem_monitor *m)
{
	(void)m;
}

static int mon_subscribe(struct fid_mem_monitor *m, const void *addr, size_t len)
{
	struct sub *s;
	struct ummunotify_register_ioctl r;
	(void)m;

	if (!len)
		return -FI_EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -FI_ENOMEM;
	s->addr = (uintptr_t)addr;
	s->len = len;
	memset(&r, 0, sizeof(r));
	r.start = s->addr & ~(PAGE - 1);
	r.end = (s->addr + len + PAGE - 1) & ~(PAGE - 1);
	r.user_cookie = (uintptr_t)s;
	pthread_mutex_lock(&b.lock);
	if (ioctl(b.fd, UMMUNOTIFY_REGISTER_REGION, &r) != 0) {
		int e = errno;
		pthread_mutex_unlock(&b.lock);
		free(s);
		return -e;
	}
	s->next = b.buckets[bucket(s->addr)];
	b.buckets[bucket(s->addr)] = s;
	b.st.subscribes++;
	b.st.live++;
	pthread_mutex_unlock(&b.lock);
	return 0;
}

static void mon_unsubscribe(struct fid_mem_monitor *m, const void *addr, size_t len)
{
	struct sub **pp, *s, **victim = NULL;
	(void)m;

	pthread_mutex_lock(&b.lock);
	/* Prefer a stale duplicate: it is the one whose entry was just dropped. */
	for (pp = &b.buckets[bucket((uintptr_t)addr)]; (s = *pp); pp = &s->next) {
		if (s->addr == (uintptr_t)addr && s->len == len) {
			if (!victim || s->stale)
				victim = pp;
			if (s->stale)
				break;
		}
	}
	if (victim) {
		remove_locked(victim);
		b.st.unsubscribes++;
	}
	pthread_mutex_unlock(&b.lock);
}

/*
 * The newest sub for exactly [addr, addr+len) belongs to the entry libfabric asks about: its
 * cache holds one entry per range and purges overlapping ones before creating another, which
 * then subscribes again (subs are pushed at the chain's head). No sub: not valid. When the
 * answer is "stale", libfabric uncaches the entry right away, so the sub is freed here.
 */
static bool mon_valid(struct fid_mem_monitor *m, const void *addr, size_t len)
{
	struct sub **pp;
	bool ok = false;
	(void)m;

	pthread_mutex_lock(&b.lock);
	b.st.valid_calls++;
	if (__atomic_load_n(&b.danger, __ATOMIC_RELAXED)) {
		pthread_mutex_unlock(&b.lock);
		return true;
	}
	check_locked();
	for (pp = &b.buckets[bucket((uintptr_t)addr)]; *pp; pp = &(*pp)->next) {
		if ((*pp)->addr == (uintptr_t)addr && (*pp)->len == len) {
			ok = !(*pp)->stale;
			if (!ok)
				remove_stale_locked((uintptr_t)addr, len);
			break;
		}
	}
	if (!ok)
		b.st.valid_false++;
	if (b.nstale && !no_helper) {
		/* This drain found ranges nobody looked up yet: let the helper flush them. */
		uint64_t one = 1;
		if (write(b.wake, &one, sizeof(one)) < 0) {
			/* eventfd saturated: the helper is awake anyway */
		}
	}
	pthread_mutex_unlock(&b.lock);
	return ok;
}

static volatile int helper_stop;

/*
 * The helper: wakes when the device is readable (or valid() drained something), collects the
 * stale subs, tells libfabric with notify() (outside b.lock: notify takes mm_lock), then frees
 * those subs: notify() has uncached every entry overlapping the range by then.
 */
static void *helper_main(void *arg)
{
	struct range *batch = malloc(sizeof(struct range) * BATCH);
	(void)arg;

	if (!batch)
		return NULL;
	while (!helper_stop) {
		struct pollfd p[2] = { { .fd = b.fd, .events = POLLIN },
				       { .fd = b.wake, .events = POLLIN } };
		size_t n;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents & POLLIN) {
			uint64_t v;
			if (read(b.wake, &v, sizeof(v)) < 0) {
				/* nothing to clear */
			}
		}
		do {
			if (helper_stop)
				break;
			n = 0;
			pthread_mutex_lock(&b.lock);
			check_locked();
			/* Negative control: drain (else poll() spins) but tell libfabric nothing. */
			if (!__atomic_load_n(&b.danger, __ATOMIC_RELAXED))
			for (unsigned i = 0; i < NBUCKETS && b.nstale && n < BATCH; i++)
				for (struct sub *s = b.buckets[i]; s && n < BATCH; s = s->next)
					if (s->stale)
						batch[n++] = (struct range){ s->addr, s->len };
			b.st.notifies += n;
			pthread_mutex_unlock(&b.lock);
			for (size_t i = 0; i < n; i++)
				b.mon.import_ops->notify(&b.mon, (const void *)batch[i].addr,
							 batch[i].len);
			pthread_mutex_lock(&b.lock);
			for (size_t i = 0; i < n; i++)
				remove_stale_locked(batch[i].addr, batch[i].len);
			pthread_mutex_unlock(&b.lock);
		} while (n == BATCH);
	}
	free(batch);
	return NULL;
}

static struct fi_ops_mem_monitor export_ops = {
	.size = sizeof(struct fi_ops_mem_monitor),
	.start = mon_start,
	.stop = mon_stop,
	.subscribe = mon_subscribe,
	.unsubscribe = mon_unsubscribe,
	.valid = mon_valid,
};

static int open_device(void)
{
	uint32_t feat = UMMUNOTIFY_FEATURE_FILTER;
	void *page;

	b.fd = open("/dev/ummunotify", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (b.fd < 0)
		return -errno;
	/* Older modules lack the ioctl: the 2010 behaviour (more false positives) is fine. */
	(void)ioctl(b.fd, UMMUNOTIFY_EXCHANGE_FEATURES, &feat);
	page = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, b.fd, 0);
	if (page == MAP_FAILED) {
		int e = errno;
		close(b.fd);
		b.fd = -1;
		return -e;
	}
	b.counter = page;
	b.last = 0;
	b.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b.wake < 0) {
		int e = errno;
		munmap(page, PAGE);
		close(b.fd);
		b.fd = -1;
		return -e;
	}
	return 0;
}

static void close_device(void)
{
	munmap((void *)b.counter, PAGE);
	close(b.fd);
	close(b.wake);
	b.fd = b.wake = -1;
	b.counter = NULL;
}

int ofi_bridge_import(ofi_open_fn open_fn)
{
	struct fid *cache_fid;
	int ret;

	if (b.imported)
		return 0;
	ret = open_device();
	if (ret)
		return ret;
	b.mon.fid.fclass = FI_CLASS_MEM_MONITOR;
	b.mon.export_ops = &export_ops;
	/* fi_import() of fi_ext.h, with libfabric's fi_open passed in (the shim finds it at run
	 * time); fi_import_fid and fi_close are inline calls through the fid's ops. */
	ret = open_fn(FI_VERSION(1, 13), "mr_cache", NULL, 0, 0, &cache_fid, NULL);
	if (!ret) {
		ret = fi_import_fid(cache_fid, &b.mon.fid, 0);
		fi_close(cache_fid);
	}
	if (ret) {
		close_device();
		return ret;
	}
	no_helper = getenv("REGCACHE_OFI_NO_HELPER") && *getenv("REGCACHE_OFI_NO_HELPER") == '1';
	if (!no_helper) { /* REGCACHE_OFI_NO_HELPER=1 (tests): only valid()'s synchronous check */
		if (pthread_create(&b.helper, NULL, helper_main, NULL) == 0)
			b.helper_running = true;
		else
			fprintf(stderr, "regcache_ofi: no helper thread: stale entries are "
					"dropped on lookup only\n");
	}
	b.imported = true;
	return 0;
}

#ifndef OFI_BRIDGE_IN_SHIM
int regcache_ofi_import(void)
{
	int ret = ofi_bridge_import(fi_open);

	if (ret == -ENOENT || ret == -EACCES || ret == -ENODEV)
		fprintf(stderr, "regcache_ofi: /dev/ummunotify: %s\n", strerror(-ret));
	else if (ret)
		fprintf(stderr, "regcache_ofi: fi_import(mr_cache): %s\n", fi_strerror(-ret));
	return ret;
}
#endif

int regcache_ofi_stats(struct regcache_ofi_stats *out)
{
	if (!b.imported || !out)
		return -ENODEV;
	pthread_mutex_lock(&b.lock);
	*out = b.st;
	pthread_mutex_unlock(&b.lock);
	return 0;
}

void regcache_ofi_danger_ignore_invalidations(int on)
{
	__atomic_store_n(&b.danger, on, __ATOMIC_RELAXED);
}

#ifndef OFI_BRIDGE_IN_SHIM
__attribute__((constructor)) static void auto_import(void)
{
	const char *e = getenv("REGCACHE_OFI_IMPORT");
	if (e && *e == '1')
		regcache_ofi_import();
}

__attribute__((destructor)) static void report(void)
{
	const char *e = getenv("REGCACHE_OFI_VERBOSE");
	struct regcache_ofi_stats s;

	if (!e || *e != '1' || regcache_ofi_stats(&s))
		return;
	fprintf(stderr,
		"regcache_ofi: pid %d subscribes=%llu unsubscribes=%llu valid=%llu stale=%llu "
		"drains=%llu invalidations=%llu notifies=%llu live=%llu\n",
		(int)getpid(), (unsigned long long)s.subscribes, (unsigned long long)s.unsubscribes,
		(unsigned long long)s.valid_calls, (unsigned long long)s.valid_false,
		(unsigned long long)s.drains, (unsigned long long)s.invalidations,
		(unsigned long long)s.notifies, (unsigned long long)s.live);
}
#endif /* !OFI_BRIDGE_IN_SHIM */
