// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * libregcache_shim.so - LD_PRELOAD shim that gives an unmodified verbs program cached memory
 * registrations (issue 6).
 *
 *   LD_PRELOAD=libregcache_shim.so ib_write_bw ...
 *
 * Interposed: ibv_reg_mr (IBVERBS_1.1), ibv_reg_mr_iova (1.7), ibv_reg_mr_iova2 (1.8),
 * ibv_dereg_mr, ibv_rereg_mr, ibv_dealloc_pd. Everything else (ibv_reg_dmabuf_mr, ODP,
 * MW_BIND, zero-based, iova != addr, ...) goes to rdma-core unchanged.
 *
 * Design
 * - One regcache cache per protection domain, created on the first registration in it, with
 *   the CUSTOM registrar whose callbacks call the real ibv_reg_mr_iova2 / ibv_dereg_mr of
 *   libibverbs (dlvsym(RTLD_NEXT)) in the program's own PD. ibv_dealloc_pd destroys the PD's
 *   cache first, so cached registrations do not keep the PD busy.
 * - The program gets a per-call wrapper: a struct ibv_mr (requested addr/length, keys of the
 *   cached registration) it may use and deregister independently of any other call; the wrapper
 *   holds one regcache_mr handle, so the registration stays valid until the program
 *   deregisters it. ibv_dereg_mr(wrapper) releases the handle (the cache keeps the registration
 *   for later hits) and frees the wrapper. Wrappers live in an address range the shim reserves
 *   (shim_pool.c) and are recognised by address, so an MR the shim did not make is passed to
 *   rdma-core untouched, without a lock or a read of it.
 * - Staleness is the cache's job: its monitor (ummunotify, else userfaultfd) sees munmap and
 *   friends, including glibc's internal munmap that no LD_PRELOAD hook can see. Without a
 *   working monitor the shim warns once on stderr and passes everything through.
 * - Re-entry: libibverbs' own ibv_reg_mr calls ibv_reg_mr_iova2 through the PLT, which lands
 *   here again. A thread-local depth counter makes every registration made while the shim is
 *   already inside a registration call go straight to rdma-core, so nothing is counted twice.
 *
 * Environment
 *   REGCACHE_SHIM_ENABLE=0         off switch: pure pass-through (default 1)
 *   REGCACHE_MONITOR=auto|ummunotify|uffd|none   read by libregcache (none = pass-through)
 *   REGCACHE_SHIM_MAX_BYTES=N      bytes kept registered by cached entries (0/unset: default)
 *   REGCACHE_SHIM_MAX_ENTRIES=N    registrations kept cached (0/unset: default 8192)
 *   REGCACHE_SHIM_VERBOSE=1        one summary line (hits, misses, ...) on stderr at exit
 *   REGCACHE_SHIM_METRICS=SPEC     Prometheus metrics of all the PDs' caches, summed: `:PORT`,
 *                                  `IP:PORT` (HTTP /metrics), `textfile=DIR` (node_exporter
 *                                  textfile, rewritten every `interval=SECS` and at exit), comma
 *                                  separated (regcache_metrics_start() in regcache.h; the MPI
 *                                  local rank is added to the port). Unset: the
 *                                  REGCACHE_METRICS_ADDR / _TEXTFILE_DIR / _INTERVAL variables.
 *                                  A bad value: one warning, the cache works without metrics.
 *   REGCACHE_SHIM_UCX=0            no UCX bridge (ucx_bridge.c): UCX keeps its own memory hooks
 *   REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS=1   TEST ONLY, the negative control: the caches
 *                                  never check the monitor, so stale registrations are reused
 *
 * The exporter starts with the first interposed call (not at load: LD_PRELOAD also reaches
 * wrappers such as timeout(1), which must not take the port), and stops at exit after writing
 * the textfile a last time.
 *
 * UCX: when the process uses UCX 1.13, ucx_bridge.c makes UCX's own registration cache rely on
 * this shim's monitor (ucm_set_external_event + ucm_vm_munmap) instead of UCX's memory hooks
 * (with UCX_MEM_MMAP_HOOK_MODE=none; see there); every cache below tells it what it drains
 * (on_invalidate), and it drains before every ucs_rcache_get (regcache_sync).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/fabric.h>

#include "regcache.h"
#include "shim.h"
#include "ofi_attach.h"
#include "ucx_bridge.h"

/* Access bits regcache_get() accepts; anything else is passed through. */
#define SHIM_CACHEABLE_ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
			       IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC | \
			       IBV_ACCESS_RELAXED_ORDERING)

#define SHIM_EXPORT __attribute__((visibility("default")))

typedef struct ibv_mr *(*reg_iova2_fn)(struct ibv_pd *, void *, size_t, uint64_t, unsigned int);
typedef int (*dereg_fn)(struct ibv_mr *);
typedef int (*rereg_fn)(struct ibv_mr *, int, struct ibv_pd *, void *, size_t, int);
typedef int (*dealloc_pd_fn)(struct ibv_pd *);
typedef int (*fork_range_fn)(void *, size_t);

/* One protection domain's cache. Never freed (a few bytes per PD; see ibv_dealloc_pd). */
struct shim_pd {
	struct ibv_pd *pd;
	struct regcache_cache *cache;
	struct shim_pd *next;
};

static struct {
	pthread_once_t once;		/* environment */
	pthread_once_t verbs_once;	/* the real libibverbs functions */
	int enabled;
	int verbose;
	uint64_t max_bytes;
	uint64_t max_entries;
	uint32_t attr_flags;	/* REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS */
	reg_iova2_fn reg_iova2;
	dereg_fn dereg;
	rereg_fn rereg;
	dealloc_pd_fn dealloc_pd;
	fork_range_fn dontfork;		/* NULL: REGCACHE_SHIM_EARLY_DONTFORK=0 */
	fork_range_fn dofork;
	pthread_mutex_t lock;		/* pds, totals */
	struct shim_pd *pds;
	struct shim_counts totals;	/* of destroyed caches */
	struct regcache_metrics *metrics;	/* the exporter, or NULL */
	uint64_t passthrough;		/* registrations handed to rdma-core directly */
	uint64_t wrapped;		/* registrations served through the cache */
} shim = {
	.once = PTHREAD_ONCE_INIT,
	.verbs_once = PTHREAD_ONCE_INIT,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static __thread int depth;
/* The last PD this thread registered in (pd_cache's fast path). */
static __thread struct shim_pd *last_pd;

/* One line on stderr, "regcache_shim: ..." (also the bridges', see shim.h). */
void shim_warn(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "regcache_shim: %s\n", buf);
}

/* A yes/no variable: unset or empty is `dflt`; 0, no, n, off (any case) are no. */
int shim_env_flag(const char *name, int dflt)
{
	const char *s = getenv(name);

	if (!s || !*s)
		return dflt;
	return strcmp(s, "0") != 0 && strcasecmp(s, "no") != 0 && strcasecmp(s, "n") != 0 &&
	       strcasecmp(s, "off") != 0;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return dflt;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end) {
		shim_warn("ignoring %s=%s (not a number)", name, s);
		return dflt;
	}
	return v;
}

void *shim_next_sym(const char *name, const char *version)
{
	void *p = dlvsym(RTLD_NEXT, name, version);
	void *h;

	if (!p)
		p = dlsym(RTLD_NEXT, name);
	if (!p) {
		/* libibverbs loaded by a dlopen()ed library (UCX's libuct_ib, RTLD_LOCAL) is not in
		 * the global scope that RTLD_NEXT searches: ask the loaded library itself (its own
		 * definition, not ours). The handle is kept: the library must stay. */
		h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_NOLOAD);
		if (h) {
			p = dlvsym(h, name, version);
			if (!p)
				p = dlsym(h, name);
		}
	}
	return p;
}

static void summary(void);

static void stop_metrics(void)
{
	struct regcache_metrics *m = shim.metrics;

	shim.metrics = NULL;
	if (m)
		regcache_metrics_stop(m);
}

/* ---- the shim's and the bridges' own counters, served beside the caches' ---- */

static uint64_t m_wrapped(void *ctx)
{
	(void)ctx;
	return __atomic_load_n(&shim.wrapped, __ATOMIC_RELAXED);
}

static uint64_t m_passthrough(void *ctx)
{
	(void)ctx;
	return __atomic_load_n(&shim.passthrough, __ATOMIC_RELAXED);
}

/* ctx selects the field: the callbacks are tiny and read the bridges' atomics. */
enum { M_UCX_STATE, M_UCX_HITS, M_UCX_FORWARDED, M_UCX_UNWATCHED, M_OFI_STATE, M_OFI_HITS,
       M_OFI_INVALIDATIONS };

static uint64_t m_bridge(void *ctx)
{
	struct ucx_bridge_counts u;
	struct ofi_attach_counts o;

	switch ((uintptr_t)ctx) {
	case M_UCX_STATE:
	case M_UCX_HITS:
	case M_UCX_FORWARDED:
	case M_UCX_UNWATCHED:
		ucx_bridge_get_counts(&u);
		return (uintptr_t)ctx == M_UCX_STATE ? (uint64_t)u.state :
		       (uintptr_t)ctx == M_UCX_HITS ? ucx_bridge_hits(&u) :
		       (uintptr_t)ctx == M_UCX_FORWARDED ? u.forwarded : u.unwatched;
	default:
		ofi_attach_get_counts(&o);
		return (uintptr_t)ctx == M_OFI_STATE ? (uint64_t)o.state :
		       (uintptr_t)ctx == M_OFI_HITS ? ofi_attach_hits(&o) : o.invalidations;
	}
}

static void add_shim_metrics(struct regcache_metrics *m)
{
	static const struct {
		const char *name, *help;
		uint32_t kind;
		regcache_metric_fn read;
		uintptr_t ctx;
	} ms[] = {
		{ "regcache_shim_wrapped", "Registrations the program got through the shim's caches",
		  REGCACHE_METRIC_COUNTER, m_wrapped, 0 },
		{ "regcache_shim_passthrough", "Registrations the shim handed to rdma-core unchanged",
		  REGCACHE_METRIC_COUNTER, m_passthrough, 0 },
		{ "regcache_shim_ucx_bridge_state",
		  "UCX bridge: 0 UCX not used (yet), 1 active (ummunotify feeds UCX's cache), 2 off",
		  REGCACHE_METRIC_GAUGE, m_bridge, M_UCX_STATE },
		{ "regcache_shim_ucx_cache_hits",
		  "Hits in UCX's own registration cache (they never reach ibv_reg_mr)",
		  REGCACHE_METRIC_COUNTER, m_bridge, M_UCX_HITS },
		{ "regcache_shim_ucx_forwarded", "Invalidated ranges forwarded to UCX (ucm_vm_munmap)",
		  REGCACHE_METRIC_COUNTER, m_bridge, M_UCX_FORWARDED },
		{ "regcache_shim_ucx_unwatched",
		  "Registrations UCX caches that the shim passed through unwatched (must stay 0)",
		  REGCACHE_METRIC_COUNTER, m_bridge, M_UCX_UNWATCHED },
		{ "regcache_shim_ofi_bridge_state",
		  "libfabric bridge: 0 libfabric not used (yet), 1 active (ummunotify is its MR cache's "
		  "monitor), 2 busy (the program imported its own monitor), 3 off, 4 dso (imported, "
		  "but the verbs provider is a DSO whose cache keeps its own monitor)",
		  REGCACHE_METRIC_GAUGE, m_bridge, M_OFI_STATE },
		{ "regcache_shim_ofi_cache_hits",
		  "Hits in libfabric's MR cache confirmed valid by ummunotify",
		  REGCACHE_METRIC_COUNTER, m_bridge, M_OFI_HITS },
		{ "regcache_shim_ofi_invalidations", "Invalidations ummunotify reported to libfabric",
		  REGCACHE_METRIC_COUNTER, m_bridge, M_OFI_INVALIDATIONS },
	};
	char msg[256];

	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
		if (regcache_metrics_add_metric(m, ms[i].name, ms[i].help, ms[i].kind, ms[i].read,
						(void *)ms[i].ctx)) {
			regcache_last_error(msg, sizeof(msg));
			shim_warn("metric %s not served: %s", ms[i].name, msg);
		}
	}
}

/* Starts the exporter the environment asks for; a bad value is one warning, no exporter. */
static void start_metrics(void)
{
	const char *spec = getenv("REGCACHE_SHIM_METRICS");
	char msg[512], where[512];
	int rc;

	/* NULL: the exporter reads REGCACHE_METRICS_ADDR / _TEXTFILE_DIR / _INTERVAL itself. */
	rc = regcache_metrics_start(NULL, spec, &shim.metrics);
	if (rc) {
		regcache_last_error(msg, sizeof(msg));
		if (spec)
			shim_warn("metrics disabled (REGCACHE_SHIM_METRICS=%s): %s", spec, msg);
		else
			shim_warn("metrics disabled: %s", msg);
		shim.metrics = NULL;
		return;
	}
	if (!shim.metrics)
		return;
	add_shim_metrics(shim.metrics);
	atexit(stop_metrics);
	if (!shim.verbose)
		return;
	if (regcache_metrics_address(shim.metrics, where, sizeof(where)) > 0)
		shim_warn("pid %d metrics: http://%s/metrics", (int)getpid(), where);
	if (regcache_metrics_textfile(shim.metrics, where, sizeof(where)) > 0)
		shim_warn("pid %d metrics: textfile %s", (int)getpid(), where);
}

static void shim_init(void)
{
	shim.enabled = env_u64("REGCACHE_SHIM_ENABLE", 1) != 0;
	shim.verbose = env_u64("REGCACHE_SHIM_VERBOSE", 0) != 0;
	shim.max_bytes = env_u64("REGCACHE_SHIM_MAX_BYTES", 0);
	shim.max_entries = env_u64("REGCACHE_SHIM_MAX_ENTRIES", 0);
	if (env_u64("REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS", 0)) {
		shim.attr_flags = REGCACHE_ATTR_DANGER_IGNORE_INVALIDATIONS;
		shim_warn("REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS: TEST ONLY, stale registrations will be used");
	}
	if (shim.verbose)
		atexit(summary);
	/* After summary's atexit, so that the exporter stops (last textfile) before it prints. */
	if (shim.enabled)
		start_metrics();
}

/* The environment only: also called by the UCX bridge, possibly before libibverbs is loaded. */
static void init(void)
{
	pthread_once(&shim.once, shim_init);
}

static void verbs_init(void)
{
	shim.reg_iova2 = (reg_iova2_fn)shim_next_sym("ibv_reg_mr_iova2", "IBVERBS_1.8");
	shim.dereg = (dereg_fn)shim_next_sym("ibv_dereg_mr", "IBVERBS_1.1");
	shim.rereg = (rereg_fn)shim_next_sym("ibv_rereg_mr", "IBVERBS_1.1");
	shim.dealloc_pd = (dealloc_pd_fn)shim_next_sym("ibv_dealloc_pd", "IBVERBS_1.1");
	if (!shim.reg_iova2 || !shim.dereg || !shim.rereg || !shim.dealloc_pd) {
		shim_warn("libibverbs not found (%s); passing every call through", dlerror());
		shim.enabled = 0;
	}
	if (shim_env_flag("REGCACHE_SHIM_EARLY_DONTFORK", 1)) {
		shim.dontfork = (fork_range_fn)shim_next_sym("ibv_dontfork_range", "IBVERBS_1.1");
		shim.dofork = (fork_range_fn)shim_next_sym("ibv_dofork_range", "IBVERBS_1.1");
		if (!shim.dontfork || !shim.dofork)
			shim.dontfork = shim.dofork = NULL;
	}
}

/* From the verbs entry points: the caller has libibverbs loaded by now. */
static void init_verbs(void)
{
	init();
	pthread_once(&shim.verbs_once, verbs_init);
}

/* ---- the CUSTOM registrar: the real rdma-core calls in the program's PD ---- */

static int cb_reg(void *context, void *addr, size_t length, uint32_t access,
		  struct regcache_reg *out)
{
	struct shim_pd *sp = context;
	struct ibv_mr *mr;

	depth++;
	mr = shim.reg_iova2(sp->pd, addr, length, (uintptr_t)addr, access);
	depth--;
	if (!mr)
		return errno > 0 ? -errno : -EIO;
	out->lkey = mr->lkey;
	out->rkey = mr->rkey;
	out->token = (uintptr_t)mr;
	return 0;
}

static void cb_dereg(void *context, void *addr, size_t length, const struct regcache_reg *reg)
{
	struct ibv_mr *mr = (struct ibv_mr *)(uintptr_t)reg->token;
	int rc;

	(void)context;
	depth++;
	rc = shim.dereg(mr);
	depth--;
	if (rc)
		shim_warn("ibv_dereg_mr(%p, %zu bytes at %p) failed: %s", (void *)mr, length, addr,
			  strerror(rc > 0 ? rc : errno));
}

/*
 * rdma-core's fork protection (on whenever anyone in the process called ibv_fork_init(): UCX
 * does by default, and rdma-core 44 then madvises even on a fork-safe kernel) madvises
 * MADV_DONTFORK inside ibv_reg_mr. The VMA split that makes is reported by the kernel as a
 * change of the whole 2 MiB around it, so the registration being made was struck every time
 * and ended uncached (issue 11). Taking rdma-core's reference here, before the cache watches
 * the range, splits first; ibv_reg_mr's own reference then finds it DONTFORK already, and
 * settle drops ours (no madvise after a successful registration, which holds its own). Without
 * fork protection both calls only note that ibv_fork_init() is too late, as ibv_reg_mr does.
 */
static void cb_prepare(void *context, void *addr, size_t length)
{
	(void)context;
	if (shim.dontfork)
		shim.dontfork(addr, length);
}

static void cb_settle(void *context, void *addr, size_t length)
{
	(void)context;
	if (shim.dofork)
		shim.dofork(addr, length);
}

static const struct regcache_registrar_ops ops = {
	.size = sizeof(ops),
	.reg = cb_reg,
	.dereg = cb_dereg,
	.prepare = cb_prepare,
	.settle = cb_settle,
};

/* Every cache's on_invalidate: what the monitor drained, for UCX (ucx_bridge.c). */
static void on_invalidate(void *arg, void *addr, size_t length)
{
	(void)arg;
	ucx_bridge_invalidated(addr, length);
}

static void add_stats(struct shim_counts *t, struct regcache_cache *c)
{
	struct regcache_stats s = { .size = sizeof(s) };

	if (regcache_stats(c, &s) == 0)
		shim_counts_add(t, &s);
}

/* The PD's cache, created on first use; NULL (and shim disabled) when there is no monitor. */
static struct regcache_cache *pd_cache(struct ibv_pd *pd)
{
	struct regcache_attr attr = {
		.size = sizeof(attr),
		.monitor = REGCACHE_MONITOR_AUTO,
		.registrar = REGCACHE_REGISTRAR_CUSTOM,
		.max_bytes = shim.max_bytes,
		.max_entries = shim.max_entries,
		.flags = shim.attr_flags,
		.ops = &ops,
		.on_invalidate = on_invalidate,
	};
	struct regcache_stats st = { .size = sizeof(st) };
	struct regcache_cache *c = NULL;
	struct shim_pd *sp;
	char msg[256];
	int rc;

	/* Most calls are for the PD of the previous one: no lock. Nodes are never freed, and
	 * ibv_dealloc_pd sets `cache` to NULL (relaxed on both sides: NULL publishes nothing; a
	 * registration racing the deallocation of its own PD is the program's error either way). */
	sp = last_pd;
	if (sp && sp->pd == pd) {
		c = __atomic_load_n(&sp->cache, __ATOMIC_RELAXED);
		if (c)
			return c;
	}
	pthread_mutex_lock(&shim.lock);
	for (sp = shim.pds; sp; sp = sp->next)
		if (sp->pd == pd)
			break;
	if (sp) {
		c = sp->cache;
		last_pd = sp;
		goto out;
	}
	if (!shim.enabled)
		goto out;
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		goto out;
	sp->pd = pd;
	attr.ops_context = sp;
	rc = regcache_create(&attr, &c);
	if (rc == 0 && regcache_stats(c, &st) == 0 && !(st.flags & REGCACHE_STATS_CACHING)) {
		regcache_destroy(c);
		c = NULL;
		rc = -ENOTSUP;
		snprintf(msg, sizeof(msg), "no working monitor (REGCACHE_MONITOR=%s)",
			 getenv("REGCACHE_MONITOR") ? getenv("REGCACHE_MONITOR") : "auto");
	} else if (rc) {
		regcache_last_error(msg, sizeof(msg));
	}
	if (rc) {
		shim_warn("cache disabled, passing every registration through: %s", msg);
		shim.enabled = 0;
		free(sp);
		goto out;
	}
	sp->cache = c;
	sp->next = shim.pds;
	shim.pds = sp;
	last_pd = sp;
	/* regcache_destroy() (ibv_dealloc_pd) takes it out again, its counters kept. */
	if (shim.metrics && regcache_metrics_add(shim.metrics, c)) {
		regcache_last_error(msg, sizeof(msg));
		shim_warn("this PD's cache is not in the metrics: %s", msg);
	}
out:
	pthread_mutex_unlock(&shim.lock);
	return c;
}

static int cacheable(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
		     unsigned int access)
{
	return shim.enabled && depth == 0 && pd && addr && length &&
	       iova == (uintptr_t)addr && !(access & ~SHIM_CACHEABLE_ACCESS);
}

static struct ibv_mr *passthrough(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
				  unsigned int access)
{
	struct ibv_mr *mr;

	if (!shim.reg_iova2) {
		errno = ENOSYS;
		return NULL;
	}
	if (depth == 0)
		__atomic_fetch_add(&shim.passthrough, 1, __ATOMIC_RELAXED);
	depth++;
	mr = shim.reg_iova2(pd, addr, length, iova, access);
	depth--;
	return mr;
}

/* Fills w->mr and w->handle from the cache; 0 or a negative errno. */
static int wrap(struct shim_mr *w, struct regcache_cache *c, struct ibv_pd *pd, void *addr,
		size_t length, unsigned int access)
{
	struct regcache_mr *h;
	uint32_t lkey, rkey;
	int rc;

	rc = regcache_get(c, addr, length, access, &h);
	if (rc)
		return rc;
	regcache_mr_keys(h, &lkey, &rkey);
	w->mr.context = pd->context;
	w->mr.pd = pd;
	w->mr.addr = addr;
	w->mr.length = length;
	w->mr.handle = 0;
	w->mr.lkey = lkey;
	w->mr.rkey = rkey;
	w->handle = h;
	w->real = NULL;
	return 0;
}

/* A pass-through registration; inside ucs_rcache_get, UCX is told to drop it (ucx_bridge.c). */
static struct ibv_mr *passthrough_counted(struct ibv_pd *pd, void *addr, size_t length,
					  uint64_t iova, unsigned int access, int ucx)
{
	struct ibv_mr *mr = passthrough(pd, addr, length, iova, access);

	if (ucx && mr)
		ucx_bridge_count_reg(addr, length, 0);
	return mr;
}

static struct ibv_mr *shim_reg(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
			       unsigned int access)
{
	/* A registration UCX's rcache asked for (not libibverbs' inner call). */
	int ucx = depth == 0 && ucx_bridge_in_get();
	struct regcache_cache *c;
	struct shim_mr *w;
	int rc;

	init_verbs();
	if (!cacheable(pd, addr, length, iova, access))
		return passthrough_counted(pd, addr, length, iova, access, ucx);
	c = pd_cache(pd);
	if (!c)
		return passthrough_counted(pd, addr, length, iova, access, ucx);
	w = shim_pool_get();
	if (!w) {
		/* No room for another wrapper: this one goes uncached. */
		return passthrough_counted(pd, addr, length, iova, access, ucx);
	}
	depth++;
	rc = wrap(w, c, pd, addr, length, access);
	depth--;
	if (rc == -EINVAL || rc == -ECHILD || rc == -E2BIG) {
		/* Not for the cache (e.g. a fork() child): let rdma-core decide. */
		shim_pool_claim(w);
		shim_pool_put(w);
		return passthrough_counted(pd, addr, length, iova, access, ucx);
	}
	if (rc) {
		shim_pool_claim(w);
		shim_pool_put(w);
		errno = -rc;
		return NULL;
	}
	__atomic_fetch_add(&shim.wrapped, 1, __ATOMIC_RELAXED);
	if (ucx) {
		/* A one-use registration (not cached, so not watched once returned) must not
		 * stay in UCX's cache either. */
		struct regcache_mr_info info = { .size = sizeof(info) };

		ucx_bridge_count_reg(addr, length, regcache_mr_query(w->handle, &info) == 0 &&
					   (info.flags & REGCACHE_MR_CACHED));
	}
	return &w->mr;
}

SHIM_EXPORT struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
					    uint64_t iova, unsigned int access)
{
	return shim_reg(pd, addr, length, iova, access);
}

/* verbs.h makes these macros; the exported functions are what binaries call. */
#undef ibv_reg_mr_iova
SHIM_EXPORT struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length,
					   uint64_t iova, int access)
{
	return shim_reg(pd, addr, length, iova, (unsigned int)access);
}

#undef ibv_reg_mr
SHIM_EXPORT struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	return shim_reg(pd, addr, length, (uintptr_t)addr, (unsigned int)access);
}

SHIM_EXPORT int ibv_dereg_mr(struct ibv_mr *mr)
{
	struct shim_mr *w = (struct shim_mr *)mr;
	int rc = 0;

	init_verbs();
	switch (mr ? shim_pool_claim(w) : -1) {
	case -1:	/* not the shim's */
		if (!shim.dereg)
			return ENOSYS;
		return shim.dereg(mr);
	case 0:		/* a wrapper already deregistered (or being deregistered) */
		return EINVAL;
	}
	if (w->handle)
		regcache_release(w->handle);
	if (w->real)
		rc = shim.dereg(w->real);
	if (rc) {
		/* Keep the wrapper so that the program may try again. */
		w->handle = NULL;
		shim_pool_unclaim(w);
		return rc;
	}
	shim_pool_put(w);
	return 0;
}

/*
 * ibv_rereg_mr on a wrapper: make the new registration first (cached if possible, else a real
 * one held by the wrapper), then drop the old one; the wrapper's address does not change.
 */
SHIM_EXPORT int ibv_rereg_mr(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr,
			     size_t length, int access)
{
	struct shim_mr *w = (struct shim_mr *)mr, nw;
	struct regcache_cache *c;
	struct ibv_pd *npd;
	void *naddr;
	size_t nlen;
	unsigned int nacc;
	struct ibv_mr *real;
	int rc = -1;

	init_verbs();
	switch (mr ? shim_pool_state(w) : -1) {
	case -1:	/* not the shim's */
		return shim.rereg ? shim.rereg(mr, flags, pd, addr, length, access) : ENOSYS;
	case 0:		/* a deregistered wrapper */
		return IBV_REREG_MR_ERR_INPUT;
	}
	if (flags & ~IBV_REREG_MR_FLAGS_SUPPORTED)
		return IBV_REREG_MR_ERR_INPUT;
	if (!flags)
		return 0;
	npd = (flags & IBV_REREG_MR_CHANGE_PD) ? pd : w->mr.pd;
	naddr = (flags & IBV_REREG_MR_CHANGE_TRANSLATION) ? addr : w->mr.addr;
	nlen = (flags & IBV_REREG_MR_CHANGE_TRANSLATION) ? length : w->mr.length;
	if (flags & IBV_REREG_MR_CHANGE_ACCESS) {
		nacc = (unsigned int)access;
	} else if (w->handle) {
		struct regcache_mr_info info = { .size = sizeof(info) };

		regcache_mr_query(w->handle, &info);
		nacc = info.access;
	} else {
		return IBV_REREG_MR_ERR_INPUT;	/* access of a real MR is not recorded */
	}
	memset(&nw, 0, sizeof(nw));
	if (cacheable(npd, naddr, nlen, (uintptr_t)naddr, nacc)) {
		c = pd_cache(npd);
		if (c) {
			depth++;
			rc = wrap(&nw, c, npd, naddr, nlen, nacc);
			depth--;
		}
	}
	if (rc) {
		real = passthrough(npd, naddr, nlen, (uintptr_t)naddr, nacc);
		if (!real)
			return IBV_REREG_MR_ERR_CMD;
		nw.mr = *real;
		nw.real = real;
	}
	if (w->handle)
		regcache_release(w->handle);
	if (w->real)
		shim.dereg(w->real);
	w->mr = nw.mr;
	w->handle = nw.handle;
	w->real = nw.real;
	return 0;
}

SHIM_EXPORT int ibv_dealloc_pd(struct ibv_pd *pd)
{
	struct shim_pd **pp, *sp = NULL;

	init_verbs();
	pthread_mutex_lock(&shim.lock);
	for (pp = &shim.pds; *pp; pp = &(*pp)->next) {
		if ((*pp)->pd == pd) {
			sp = *pp;
			*pp = sp->next;
			break;
		}
	}
	if (sp) {
		add_stats(&shim.totals, sp->cache);
		/* Registrations still held by the program keep sp (leaked on purpose). */
		regcache_destroy(sp->cache);
		/* Atomic: pd_cache's fast path reads it without the lock. */
		__atomic_store_n(&sp->cache, NULL, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&shim.lock);
	if (!shim.dealloc_pd)
		return ENOSYS;
	return shim.dealloc_pd(pd);
}

/* ---- for ucx_bridge.c ---- */

int shim_sync_all(void)
{
	struct shim_pd *sp;
	int n = 0;

	/* Under the lock: ibv_dealloc_pd destroys a cache under it. Nothing the drain calls
	 * (on_invalidate -> ucm_vm_munmap -> UCX's trylock-or-queue callback) takes it. */
	pthread_mutex_lock(&shim.lock);
	for (sp = shim.pds; sp; sp = sp->next)
		if (sp->cache && regcache_sync(sp->cache) > 0)
			n++;
	pthread_mutex_unlock(&shim.lock);
	return n;
}

int shim_can_cache(void)
{
	struct regcache_attr attr = {
		.size = sizeof(attr),
		.monitor = REGCACHE_MONITOR_AUTO,
		.registrar = REGCACHE_REGISTRAR_NOOP,
	};
	struct regcache_stats st = { .size = sizeof(st) };
	struct regcache_cache *c = NULL;
	int ok;

	init();
	if (!shim.enabled)
		return 0;
	/* The monitor the PD caches will get (REGCACHE_MONITOR), opened once to see it work;
	 * without one, pd_cache() would disable the shim at the first registration: do it now. */
	ok = regcache_create(&attr, &c) == 0 && regcache_stats(c, &st) == 0 &&
	     (st.flags & REGCACHE_STATS_CACHING);
	if (c)
		regcache_destroy(c);
	if (!ok) {
		pthread_mutex_lock(&shim.lock);
		if (shim.enabled)
			shim_warn("cache disabled, passing every registration through: no working "
				  "monitor (REGCACHE_MONITOR=%s)",
				  getenv("REGCACHE_MONITOR") ? getenv("REGCACHE_MONITOR") : "auto");
		shim.enabled = 0;
		pthread_mutex_unlock(&shim.lock);
	}
	return ok;
}

int shim_is_verbose(void)
{
	init();
	return shim.verbose;
}

SHIM_EXPORT int regcache_shim_counts(struct shim_counts *out)
{
	struct shim_pd *sp;

	init();
	pthread_mutex_lock(&shim.lock);
	*out = shim.totals;
	for (sp = shim.pds; sp; sp = sp->next)
		add_stats(out, sp->cache);
	out->passthrough = __atomic_load_n(&shim.passthrough, __ATOMIC_RELAXED);
	out->wrapped = __atomic_load_n(&shim.wrapped, __ATOMIC_RELAXED);
	out->enabled = shim.enabled;
	pthread_mutex_unlock(&shim.lock);
	return 0;
}

static void summary(void)
{
	static const char *const states[] = { "unused", "active", "off" };
	static const char *const ofi_states[] = { "unused", "active",
		"busy (the program's own monitor kept)", "off",
		"dso (its verbs provider keeps its own monitor)" };
	struct ofi_attach_counts o;
	struct ucx_bridge_counts u;
	struct shim_counts t;

	regcache_shim_counts(&t);
	ucx_bridge_get_counts(&u);
	fflush(stdout);	/* keep the program's own last lines before ours */
	fprintf(stderr,
		"regcache_shim: pid %d %s hits=%" PRIu64 " misses=%" PRIu64 " uncacheable=%" PRIu64
		" reregistrations=%" PRIu64 " invalidated=%" PRIu64 " evictions=%" PRIu64
		" registrations=%" PRIu64 " deregistrations=%" PRIu64 " wrapped=%" PRIu64
		" passthrough=%" PRIu64 "\n",
		(int)getpid(), t.enabled ? "enabled" : "disabled", t.hits, t.misses,
		t.uncacheable, t.reregistrations, t.invalidated, t.evictions, t.registrations,
		t.deregistrations, t.wrapped, t.passthrough);
	ofi_attach_get_counts(&o);
	if (o.state != OFI_ATTACH_UNUSED)
		fprintf(stderr,
			"regcache_shim: pid %d ofi bridge %s (libfabric %u.%u) at=%s cache_hits=%" PRIu64
			" lookups=%" PRIu64 " stale=%" PRIu64 " subscribes=%" PRIu64
			" invalidations=%" PRIu64 " notifies=%" PRIu64 " live=%" PRIu64 "%s%s\n",
			(int)getpid(), o.state >= 0 && o.state <= 4 ? ofi_states[o.state] : "?",
			FI_MAJOR(o.version), FI_MINOR(o.version), o.trigger ? o.trigger : "-",
			ofi_attach_hits(&o), o.lookups, o.stale, o.subscribes, o.invalidations,
			o.notifies, o.live, o.why ? ": " : "", o.why ? o.why : "");
	if (u.state != UCX_BRIDGE_UNUSED || u.gets)
		fprintf(stderr,
			"regcache_shim: pid %d ucx bridge %s (UCX %u.%u.%u) cache_hits=%" PRIu64
			" rcaches=%" PRIu64 " rcache_gets=%" PRIu64 " drained_before_get=%" PRIu64
			" forwarded=%" PRIu64 " registered_in_get=%" PRIu64 " unwatched=%" PRIu64
			" ucp_lookups=%" PRIu64 " ucp_refused=%" PRIu64 "\n",
			(int)getpid(), u.state >= 0 && u.state <= 2 ? states[u.state] : "?",
			u.version[0], u.version[1], u.version[2], ucx_bridge_hits(&u), u.rcaches,
			u.gets, u.syncs, u.forwarded, u.get_regs, u.unwatched, u.ucp_lookups,
			u.ucp_refused);
}
