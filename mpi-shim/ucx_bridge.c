// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * ucx_bridge.c - inside libregcache_shim.so: UCX's registration cache (ucs_rcache) kept correct
 * by the shim's monitor (ummunotify, else userfaultfd) instead of UCX's code-patching memory
 * hooks (issue 6).
 *
 * What UCX offers (ucm/api/ucm.h): an event declared external with ucm_set_external_event()
 * does not make ucm_set_event_handler() install UCM's mmap/munmap/brk hooks (ucm/event/event.c:
 * the install is skipped when `events & ucm_external_events`); whoever declared it calls
 * ucm_vm_munmap(addr, len), which runs every UCM_EVENT_VM_UNMAPPED handler, among them each
 * rcache's ucs_rcache_unmapped_callback.
 *
 * Who else feeds UCX (seen with UCX_MEM_LOG_LEVEL=debug in vmtest/test-ucx.sh):
 * - UCX 1.13 itself, in its default UCX_MEM_MMAP_HOOK_MODE=bistro, patches mmap, munmap,
 *   mremap, shmat, shmdt, sbrk, brk and madvise as soon as libucs loads ("mmap installed events
 *   = 0x300ff"), whatever is external later, and those hooks keep calling the handlers. Only
 *   UCX_MEM_MMAP_HOOK_MODE=none leaves the shim's monitor as UCX's only source.
 * - Open MPI 4.1 (Debian's 4.1.4) declares the event external itself and feeds it from OPAL's
 *   own patcher hooks (opal_common_ucx_opal_mem_hooks, default true); --mca
 *   opal_common_ucx_opal_mem_hooks 0 turns that off.
 * Several sources are correct, only redundant. With UCX_MEM_MMAP_HOOK_MODE=none and the bridge
 * off (and Open MPI's hooks off), UCX cannot subscribe to VM_UNMAPPED, creates no rcache and
 * registers per use: slower, still correct (the "off" run of vmtest/test-ucx.sh).
 *
 * What the bridge does
 * 1. It interposes ucs_rcache_create (libucs; libuct_ib and libucp call it through the PLT:
 *    R_X86_64_JUMP_SLOT in Debian 12's UCX 1.13.1). On the first call, before forwarding it,
 *    no rcache has subscribed to UCM_EVENT_VM_UNMAPPED yet (UCP's and each IB memory domain's
 *    rcache subscribe inside ucs_rcache_create): if UCX is
 *    a version it knows (ucp_get_version: 1.13, 1.18-1.22), the shim can cache (a monitor works) and REGCACHE_SHIM_UCX is not
 *    0, it calls ucm_set_external_event(UCM_EVENT_VM_UNMAPPED). Libraries are found with
 *    dlopen(RTLD_NOLOAD): a process that has not loaded UCX never loads it because of us; the
 *    handles are kept, so the functions we call cannot be unloaded under us.
 * 2. Every range the shim's caches drain goes to ucm_vm_munmap (the caches' on_invalidate).
 *    Every region UCX caches was registered through ibv_reg_mr, i.e. through a shim cache that
 *    watches it until UCX deregisters it, so the monitor sees every change UCX must hear of.
 * 3. It interposes ucs_rcache_get and calls regcache_sync() on every cache first. A UCX hit
 *    never calls ibv_reg_mr, so without this nothing would drain the monitor before UCX reused
 *    a region whose pages were unmapped. regcache_sync() is one counter load when nothing
 *    changed; when it drains, ucm_vm_munmap runs before UCX's lookup, and UCX 1.13 handles it
 *    inside that same ucs_rcache_get (ucs/memory/rcache.c): ucs_rcache_unmapped_callback
 *    either takes the page-table lock with pthread_rwlock_trywrlock and removes the regions at
 *    once (putting unused ones on the GC list: it never deregisters from inside the callback),
 *    or, when the lock is busy, queues the range on inv_q; ucs_rcache_get takes the fast path
 *    only when inv_q is empty, else ucs_rcache_create_region -> ucs_rcache_check_overlap ->
 *    ucs_rcache_check_inv_queue applies it before looking up. (Checked on the 1.13.1 binary
 *    too: ucs_rcache_get compares the queue after pthread_rwlock_rdlock and falls through to
 *    pthread_rwlock_wrlock.) So a region unmapped before ucs_rcache_get was called is never
 *    returned by it.
 *
 * Locks: the sync runs with no UCX lock held by us; our callback may run while a UCX thread
 * holds the page-table lock (a miss registering through the shim drains too), which is why it
 * only ever reaches UCX's trywrlock-or-queue path. It never calls back into a regcache cache.
 *
 * UCX 1.18-1.22 (read in UCX's sources, run with 1.20.1): UCP's cache is looked up inline
 * (ucp_memh_get -> ucs_rcache_lookup_unsafe, both UCS_F_ALWAYS_INLINE in libucp): the hit path
 * checks the rcache's invalidation queue (1.22: tree), then calls ucs_pgtable_lookup, exported
 * by libucs, through libucp's PLT; only misses reach ucs_rcache_get (ucp_memh_get_slow). UCP's
 * rcache is created with UCS_RCACHE_FLAG_SYNC_EVENTS, so ucm_vm_munmap only *queues* the range
 * there (ucs_rcache_unmapped_callback never takes the page-table lock for it). So:
 * 4. It also interposes ucs_pgtable_lookup. A call whose return address lies in libucp is
 *    UCP's inline hit path, past its queue check: it drains first (regcache_sync on every
 *    cache), and if anything was forwarded to UCX since this thread's previous such lookup
 *    (`fwd_seq`, a process-wide count of forwarded ranges, against a thread-local copy) it
 *    answers NULL: a miss, so UCP takes ucp_memh_get_slow -> ucs_rcache_get, which applies
 *    the queue under the write lock before looking up. Why a sequence and not just "this
 *    drain found something": another thread may have drained and queued a range between our
 *    queue check and our lookup; that thread bumps fwd_seq inside on_invalidate, before the
 *    cache publishes the drained generation (Release), so our regcache_sync seeing the counter
 *    current (Acquire) also sees the bump. A forward older than our previous lookup was
 *    queued before this call's queue check, which caught it. Cost when nothing moved: one
 *    counter load per cache, one load of fwd_seq, one thread-local load.
 *    Other callers (libucs's own ucs_rcache_get, which checks its queue after our drain, the
 *    memory-type cache, which must not be told "not found" falsely) go straight through.
 * ucs_rcache_get keeps its drain (it is the miss path and UCT's caches' lookup).
 *
 * Limits
 * - Enabled for UCX 1.13 and 1.18-1.22, the versions whose code the above was checked against;
 *   with another version the bridge stays off, says why, and UCX keeps its own hooks (safe,
 *   just not ummunotify).
 * - A registration made inside ucs_rcache_get that no shim cache watches (an access flag it
 *   does not cache, a cache that could not be created, or a one-use registration: its range
 *   kept changing between watch and registration) would never be invalidated in UCX's cache:
 *   it is reported to UCX as invalidated as soon as that ucs_rcache_get returns, so UCX uses it
 *   for that request only (`unwatched=` in the summary counts them; a cost, not a risk).
 * - ucs_rcache_get is forwarded with seven integer arguments whatever the caller passed (six in
 *   1.13, seven later): on x86-64 and AArch64 an unused seventh argument is a harmless read of
 *   the caller's stack slot or register, and the callee ignores it. Other architectures: no
 *   interposer, bridge off.
 * - A program that calls ucs_pgtable_lookup on UCP's rcache from libucp's own code is UCP; a
 *   UCX built with -Bsymbolic or LTO that inlines ucs_pgtable_lookup into libucp would bypass
 *   us: the version range above is what was checked (libucp's relocations name
 *   ucs_pgtable_lookup as R_X86_64_JUMP_SLOT in the 1.20.1 wheels).
 *
 * Environment
 *   REGCACHE_SHIM_UCX=0                   bridge off: UCX uses its own memory hooks
 *   REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1 TEST ONLY: declare the event external but never call
 *                                         ucm_vm_munmap (UCX's cache goes stale: the negative
 *                                         control of vmtest/test-ucx.sh)
 *   REGCACHE_SHIM_UCX_DANGER_NO_SYNC=1    TEST ONLY: no drain before ucs_rcache_get (and UCP's
 *                                         lookup; shows why it is needed)
 *   REGCACHE_SHIM_UCX_DANGER_NO_SEQ=1     TEST ONLY: UCP's lookup misses only after its own
 *                                         drain, not after another thread's (shows why fwd_seq)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ucx_bridge.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

#if defined(__x86_64__) || defined(__aarch64__)
#define HAVE_GET_INTERPOSER 1
#else
#define HAVE_GET_INTERPOSER 0
#endif

/* ucs_status_t values we return ourselves (<ucs/type/status.h>). */
#define SHIM_UCS_ERR_NO_ELEM (-12)

/* How UCP's cache is looked up, by UCX version (see the comment above). */
enum ucx_mode {
	MODE_NONE,
	MODE_GET,	/* 1.13: every lookup is ucs_rcache_get */
	MODE_LOOKUP,	/* 1.18-1.22: hits are UCP's inline ucs_pgtable_lookup */
};

typedef int (*rcache_create_fn)(const void *params, const char *name, void *stats_parent,
				void **rcache_p);
typedef int (*rcache_get_fn)(void *rcache, void *address, size_t length, uintptr_t a3,
			     uintptr_t a4, uintptr_t a5, uintptr_t a6);
typedef void (*set_external_fn)(int events);
typedef void (*vm_munmap_fn)(void *addr, size_t length);
typedef void (*ucp_version_fn)(unsigned *major, unsigned *minor, unsigned *release);
typedef void *(*pgtable_lookup_fn)(const void *pgtable, uintptr_t address);

static struct {
	pthread_once_t resolve_once;
	pthread_once_t activate_once;
	rcache_create_fn real_create;
	rcache_get_fn real_get;
	pgtable_lookup_fn real_lookup;
	vm_munmap_fn vm_munmap;
	int state;		/* enum ucx_bridge_state; atomic */
	int mode;		/* enum ucx_mode, set before state turns ACTIVE */
	uintptr_t ucp_lo, ucp_hi;	/* libucp's mapped range (MODE_LOOKUP), before ACTIVE */
	uint64_t fwd_seq;	/* ranges forwarded to ucm_vm_munmap so far; atomic */
	int no_forward;		/* REGCACHE_SHIM_UCX_DANGER_NO_FORWARD */
	int no_sync;		/* REGCACHE_SHIM_UCX_DANGER_NO_SYNC */
	int no_seq;		/* REGCACHE_SHIM_UCX_DANGER_NO_SEQ */
	unsigned version[3];
	uint64_t rcaches, gets, syncs, forwarded, get_regs, unwatched;
	uint64_t ucp_lookups, ucp_refused, ucp_gets;
	uint64_t uncached_forwarded;
} ub = {
	.resolve_once = PTHREAD_ONCE_INIT,
	.activate_once = PTHREAD_ONCE_INIT,
};

static __thread int in_get;
/* Hull of the registrations made inside this thread's current ucs_rcache_get that no shim
 * cache watches (one-use or passed through), forwarded as invalidated when it returns. */
static __thread uintptr_t uncached_lo, uncached_hi;
/* ub.fwd_seq as of this thread's previous UCP lookup (MODE_LOOKUP). */
static __thread uint64_t seen_fwd_seq;

/* The shim's warning line, with the bridge named (every format is a literal). */
#define bridge_warn(fmt, ...) shim_warn("UCX bridge: " fmt, ##__VA_ARGS__)

/*
 * `name` in the already loaded library `lib`, or NULL. The handle is kept (never dlclose'd) so
 * that the library cannot be unloaded while we hold its function pointers.
 */
static void *loaded_sym(const char *lib, const char *name)
{
	void *h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);

	return h ? dlsym(h, name) : NULL;
}

static void resolve(void)
{
	/* Through libucs's own handle: its definition, never ours (we are not in its scope). */
	ub.real_create = (rcache_create_fn)loaded_sym("libucs.so.0", "ucs_rcache_create");
	ub.real_get = (rcache_get_fn)loaded_sym("libucs.so.0", "ucs_rcache_get");
	ub.real_lookup = (pgtable_lookup_fn)loaded_sym("libucs.so.0", "ucs_pgtable_lookup");
	if (!ub.real_create)
		ub.real_create = (rcache_create_fn)dlsym(RTLD_NEXT, "ucs_rcache_create");
	if (!ub.real_get)
		ub.real_get = (rcache_get_fn)dlsym(RTLD_NEXT, "ucs_rcache_get");
	if (!ub.real_lookup)
		ub.real_lookup = (pgtable_lookup_fn)dlsym(RTLD_NEXT, "ucs_pgtable_lookup");
}

static enum ucx_mode mode_of(const unsigned v[3])
{
	if (v[0] == 1 && v[1] == 13)
		return MODE_GET;
	if (v[0] == 1 && v[1] >= 18 && v[1] <= 22)
		return MODE_LOOKUP;
	return MODE_NONE;
}

struct object_range {
	uintptr_t base, lo, hi;
};

static int find_object(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct object_range *r = arg;
	(void)size;

	if (info->dlpi_addr != r->base)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;

		if (ph->p_type != PT_LOAD)
			continue;
		if (!r->lo || lo < r->lo)
			r->lo = lo;
		if (hi > r->hi)
			r->hi = hi;
	}
	return 1;
}

/* The address range libucp is mapped at (the object defining `sym`); 0 when not found. */
static int object_range_of(void *sym, uintptr_t *lo, uintptr_t *hi)
{
	struct object_range r = { 0 };
	Dl_info info;

	if (!sym || !dladdr(sym, &info) || !info.dli_fbase)
		return 0;
	r.base = (uintptr_t)info.dli_fbase;
	/* dli_fbase is the load address of the ELF header; dlpi_addr the load bias. For a
	 * shared library whose first PT_LOAD has p_vaddr 0 they are the same. */
	dl_iterate_phdr(find_object, &r);
	*lo = r.lo;
	*hi = r.hi;
	return r.lo != 0;
}

static void set_state(int s)
{
	__atomic_store_n(&ub.state, s, __ATOMIC_RELEASE);
}

static void activate(void)
{
	int verbose = shim_is_verbose();
	int asked = getenv("REGCACHE_SHIM_UCX") != NULL;
	ucp_version_fn version;
	set_external_fn set_external;
	const char *why = NULL, *hooks;

	if (!shim_env_flag("REGCACHE_SHIM_UCX", 1)) {
		set_state(UCX_BRIDGE_OFF);
		return;
	}
	ub.no_forward = shim_env_flag("REGCACHE_SHIM_UCX_DANGER_NO_FORWARD", 0);
	ub.no_sync = shim_env_flag("REGCACHE_SHIM_UCX_DANGER_NO_SYNC", 0);
	ub.no_seq = shim_env_flag("REGCACHE_SHIM_UCX_DANGER_NO_SEQ", 0);
	version = (ucp_version_fn)loaded_sym("libucp.so.0", "ucp_get_version");
	if (version)
		version(&ub.version[0], &ub.version[1], &ub.version[2]);
	set_external = (set_external_fn)loaded_sym("libucm.so.0", "ucm_set_external_event");
	ub.vm_munmap = (vm_munmap_fn)loaded_sym("libucm.so.0", "ucm_vm_munmap");
	if (!HAVE_GET_INTERPOSER)
		why = "no ucs_rcache_get interposer on this architecture";
	else if (!ub.real_get)
		why = "ucs_rcache_get not found";
	else if (!set_external || !ub.vm_munmap)
		why = "libucm.so.0 (ucm_set_external_event, ucm_vm_munmap) not loaded";
	else if (!version)
		why = "UCX version unknown (libucp.so.0 not loaded)";
	else if ((ub.mode = mode_of(ub.version)) == MODE_NONE)
		why = "not a UCX version the bridge knows (1.13, 1.18-1.22)";
	else if (ub.mode == MODE_LOOKUP && !ub.real_lookup)
		why = "ucs_pgtable_lookup not found";
	else if (ub.mode == MODE_LOOKUP && !object_range_of((void *)version, &ub.ucp_lo, &ub.ucp_hi))
		why = "libucp.so.0's mapping not found";
	else if (!shim_can_cache())
		why = "the shim does not cache here (no working monitor, or REGCACHE_SHIM_ENABLE=0)";
	if (why) {
		if (verbose || asked)
			bridge_warn("off, UCX %u.%u.%u keeps its own memory hooks: %s",
				    ub.version[0], ub.version[1], ub.version[2], why);
		set_state(UCX_BRIDGE_OFF);
		return;
	}
	set_external(SHIM_UCM_EVENT_VM_UNMAPPED);
	set_state(UCX_BRIDGE_ACTIVE);
	hooks = getenv("UCX_MEM_MMAP_HOOK_MODE");
	if (verbose)
		bridge_warn("UCX %u.%u.%u: UCM_EVENT_VM_UNMAPPED is external, fed by the shim's "
			    "monitor; drain before %s%s%s%s", ub.version[0], ub.version[1],
			    ub.version[2], ub.mode == MODE_LOOKUP ?
			    "ucs_rcache_get and UCP's ucs_pgtable_lookup" : "ucs_rcache_get",
			    hooks && !strcmp(hooks, "none") ? "" :
			    " (UCX's own mmap hooks still run too: UCX_MEM_MMAP_HOOK_MODE=none)",
			    ub.no_forward ? " (DANGER: not forwarded)" : "",
			    ub.no_sync ? " (DANGER: no sync before UCX's lookups)" :
			    ub.no_seq ? " (DANGER: other threads' drains ignored)" : "");
}

static int active(void)
{
	return __atomic_load_n(&ub.state, __ATOMIC_ACQUIRE) == UCX_BRIDGE_ACTIVE;
}

SHIM_EXPORT int ucs_rcache_create(const void *params, const char *name, void *stats_parent,
				  void **rcache_p)
{
	pthread_once(&ub.resolve_once, resolve);
	if (!ub.real_create)
		return SHIM_UCS_ERR_NO_ELEM;
	/* Before the rcache subscribes to UCM_EVENT_VM_UNMAPPED inside the real call. */
	pthread_once(&ub.activate_once, activate);
	__atomic_fetch_add(&ub.rcaches, 1, __ATOMIC_RELAXED);
	return ub.real_create(params, name, stats_parent, rcache_p);
}

/* Whether a return address lies in libucp (MODE_LOOKUP only; 0 before activation). */
static int from_ucp(uintptr_t ra)
{
	return active() && ra >= ub.ucp_lo && ra < ub.ucp_hi;
}

SHIM_EXPORT void *ucs_pgtable_lookup(const void *pgtable, uintptr_t address)
{
	uint64_t seq;

	pthread_once(&ub.resolve_once, resolve);
	if (!ub.real_lookup)
		return NULL;
	if (!from_ucp((uintptr_t)__builtin_return_address(0)))
		return ub.real_lookup(pgtable, address);
	__atomic_fetch_add(&ub.ucp_lookups, 1, __ATOMIC_RELAXED);
	if (!ub.no_sync) {
		int drained = shim_sync_all() > 0;

		if (drained)
			__atomic_fetch_add(&ub.syncs, 1, __ATOMIC_RELAXED);
		if (ub.no_seq && drained)
			return NULL;
		/* Acquire: pairs with the increment in ucx_bridge_invalidated (see the comment at
		 * the top, item 4; regcache_sync's own Acquire already orders it). */
		seq = __atomic_load_n(&ub.fwd_seq, __ATOMIC_ACQUIRE);
		if (!ub.no_seq && seq != seen_fwd_seq) {
			seen_fwd_seq = seq;
			__atomic_fetch_add(&ub.ucp_refused, 1, __ATOMIC_RELAXED);
			return NULL;
		}
	}
	return ub.real_lookup(pgtable, address);
}

#if HAVE_GET_INTERPOSER
SHIM_EXPORT int ucs_rcache_get(void *rcache, void *address, size_t length, uintptr_t a3,
			       uintptr_t a4, uintptr_t a5, uintptr_t a6)
{
	int rc;

	pthread_once(&ub.resolve_once, resolve);
	if (!ub.real_get)
		return SHIM_UCS_ERR_NO_ELEM;
	__atomic_fetch_add(&ub.gets, 1, __ATOMIC_RELAXED);
	if (from_ucp((uintptr_t)__builtin_return_address(0)))
		__atomic_fetch_add(&ub.ucp_gets, 1, __ATOMIC_RELAXED);
	if (active() && !ub.no_sync && shim_sync_all() > 0)
		__atomic_fetch_add(&ub.syncs, 1, __ATOMIC_RELAXED);
	in_get++;
	rc = ub.real_get(rcache, address, length, a3, a4, a5, a6);
	in_get--;
	if (!in_get && uncached_hi) {
		/* UCX has the region in its table now: an invalidation queued or applied from
		 * here on removes it, so UCX uses it for this request only. */
		uintptr_t lo = uncached_lo, hi = uncached_hi;

		uncached_lo = uncached_hi = 0;
		__atomic_fetch_add(&ub.uncached_forwarded, 1, __ATOMIC_RELAXED);
		ucx_bridge_invalidated((void *)lo, hi - lo);
	}
	return rc;
}
#endif

void ucx_bridge_invalidated(void *addr, size_t len)
{
	if (!active() || ub.no_forward)
		return;
	__atomic_fetch_add(&ub.forwarded, 1, __ATOMIC_RELAXED);
	/* Release, before the range is queued: a UCP lookup that sees this value refuses its
	 * hit (item 4 above). */
	__atomic_fetch_add(&ub.fwd_seq, 1, __ATOMIC_RELEASE);
	ub.vm_munmap(addr, len);
}

int ucx_bridge_in_get(void)
{
	return in_get > 0;
}

void ucx_bridge_count_reg(void *addr, size_t length, int watched)
{
	uintptr_t lo = (uintptr_t)addr, hi = lo + length;

	__atomic_fetch_add(&ub.get_regs, 1, __ATOMIC_RELAXED);
	if (watched)
		return;
	/* No shim cache watches this registration (a one-use registration, or one passed
	 * through), so nothing would tell UCX when its pages change: UCX must not keep it.
	 * Reported as invalidated when the outermost ucs_rcache_get returns (see there). */
	__atomic_fetch_add(&ub.unwatched, 1, __ATOMIC_RELAXED);
	if (!uncached_hi || lo < uncached_lo)
		uncached_lo = lo;
	if (hi > uncached_hi)
		uncached_hi = hi;
}

void ucx_bridge_get_counts(struct ucx_bridge_counts *out)
{
	memset(out, 0, sizeof(*out));
	out->state = __atomic_load_n(&ub.state, __ATOMIC_ACQUIRE);
	memcpy(out->version, ub.version, sizeof(out->version));
	out->rcaches = __atomic_load_n(&ub.rcaches, __ATOMIC_RELAXED);
	out->gets = __atomic_load_n(&ub.gets, __ATOMIC_RELAXED);
	out->syncs = __atomic_load_n(&ub.syncs, __ATOMIC_RELAXED);
	out->forwarded = __atomic_load_n(&ub.forwarded, __ATOMIC_RELAXED);
	out->get_regs = __atomic_load_n(&ub.get_regs, __ATOMIC_RELAXED);
	out->unwatched = __atomic_load_n(&ub.unwatched, __ATOMIC_RELAXED);
	out->ucp_lookups = __atomic_load_n(&ub.ucp_lookups, __ATOMIC_RELAXED);
	out->ucp_refused = __atomic_load_n(&ub.ucp_refused, __ATOMIC_RELAXED);
	out->ucp_gets = __atomic_load_n(&ub.ucp_gets, __ATOMIC_RELAXED);
	out->uncached_forwarded = __atomic_load_n(&ub.uncached_forwarded, __ATOMIC_RELAXED);
}
