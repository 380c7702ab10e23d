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
 *    1.13 (ucp_get_version), the shim can cache (a monitor works) and REGCACHE_SHIM_UCX is not
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
 * Limits
 * - Only UCX 1.13 is enabled: later versions add an `alignment` argument to ucs_rcache_get and
 *   look up UCP's cache through inline code that no interposer sees; with another version the
 *   bridge stays off and UCX keeps its own hooks (safe, just not ummunotify).
 * - A registration made inside ucs_rcache_get that the shim passes through unwatched (an access
 *   flag it does not cache, a cache that could not be created) would not be invalidated; the
 *   shim counts them (`unwatched=` in the summary) and warns once.
 * - ucs_rcache_get is forwarded with seven integer arguments whatever the caller passed (six in
 *   1.13, seven later): on x86-64 and AArch64 an unused seventh argument is a harmless read of
 *   the caller's stack slot or register, and the callee ignores it. Other architectures: no
 *   interposer, bridge off.
 *
 * Environment
 *   REGCACHE_SHIM_UCX=0                   bridge off: UCX uses its own memory hooks
 *   REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1 TEST ONLY: declare the event external but never call
 *                                         ucm_vm_munmap (UCX's cache goes stale: the negative
 *                                         control of vmtest/test-ucx.sh)
 *   REGCACHE_SHIM_UCX_DANGER_NO_SYNC=1    TEST ONLY: no drain before ucs_rcache_get (shows why
 *                                         it is needed)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ucx_bridge.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

#if defined(__x86_64__) || defined(__aarch64__)
#define HAVE_GET_INTERPOSER 1
#else
#define HAVE_GET_INTERPOSER 0
#endif

/* ucs_status_t values we return ourselves (<ucs/type/status.h>). */
#define SHIM_UCS_ERR_NO_ELEM (-12)

/* The versions whose behaviour the comment above was checked against. */
#define VERIFIED_MAJOR 1
#define VERIFIED_MINOR 13

typedef int (*rcache_create_fn)(const void *params, const char *name, void *stats_parent,
				void **rcache_p);
typedef int (*rcache_get_fn)(void *rcache, void *address, size_t length, uintptr_t a3,
			     uintptr_t a4, uintptr_t a5, uintptr_t a6);
typedef void (*set_external_fn)(int events);
typedef void (*vm_munmap_fn)(void *addr, size_t length);
typedef void (*ucp_version_fn)(unsigned *major, unsigned *minor, unsigned *release);

static struct {
	pthread_once_t resolve_once;
	pthread_once_t activate_once;
	rcache_create_fn real_create;
	rcache_get_fn real_get;
	vm_munmap_fn vm_munmap;
	int state;		/* enum ucx_bridge_state; atomic */
	int no_forward;		/* REGCACHE_SHIM_UCX_DANGER_NO_FORWARD */
	int no_sync;		/* REGCACHE_SHIM_UCX_DANGER_NO_SYNC */
	int warned_unwatched;
	unsigned version[3];
	uint64_t rcaches, gets, syncs, forwarded, get_regs, unwatched;
} ub = {
	.resolve_once = PTHREAD_ONCE_INIT,
	.activate_once = PTHREAD_ONCE_INIT,
};

static __thread int in_get;

/* The shim's warning line, with the bridge named (every format is a literal). */
#define bridge_warn(fmt, ...) shim_warn("UCX bridge: " fmt, ##__VA_ARGS__)

static int env_flag(const char *name, int dflt)
{
	const char *s = getenv(name);

	if (!s || !*s)
		return dflt;
	return strcmp(s, "0") != 0 && strcasecmp(s, "no") != 0 && strcasecmp(s, "n") != 0 &&
	       strcasecmp(s, "off") != 0;
}

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
	if (!ub.real_create)
		ub.real_create = (rcache_create_fn)dlsym(RTLD_NEXT, "ucs_rcache_create");
	if (!ub.real_get)
		ub.real_get = (rcache_get_fn)dlsym(RTLD_NEXT, "ucs_rcache_get");
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

	if (!env_flag("REGCACHE_SHIM_UCX", 1)) {
		set_state(UCX_BRIDGE_OFF);
		return;
	}
	ub.no_forward = env_flag("REGCACHE_SHIM_UCX_DANGER_NO_FORWARD", 0);
	ub.no_sync = env_flag("REGCACHE_SHIM_UCX_DANGER_NO_SYNC", 0);
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
	else if (ub.version[0] != VERIFIED_MAJOR || ub.version[1] != VERIFIED_MINOR)
		why = "only UCX 1.13 is verified (ucs_rcache_get must be UCX's only lookup)";
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
			    "monitor%s%s%s", ub.version[0], ub.version[1], ub.version[2],
			    hooks && !strcmp(hooks, "none") ? "" :
			    " (UCX's own mmap hooks still run too: UCX_MEM_MMAP_HOOK_MODE=none)",
			    ub.no_forward ? " (DANGER: not forwarded)" : "",
			    ub.no_sync ? " (DANGER: no sync before ucs_rcache_get)" : "");
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

#if HAVE_GET_INTERPOSER
SHIM_EXPORT int ucs_rcache_get(void *rcache, void *address, size_t length, uintptr_t a3,
			       uintptr_t a4, uintptr_t a5, uintptr_t a6)
{
	int rc;

	pthread_once(&ub.resolve_once, resolve);
	if (!ub.real_get)
		return SHIM_UCS_ERR_NO_ELEM;
	__atomic_fetch_add(&ub.gets, 1, __ATOMIC_RELAXED);
	if (active() && !ub.no_sync && shim_sync_all() > 0)
		__atomic_fetch_add(&ub.syncs, 1, __ATOMIC_RELAXED);
	in_get++;
	rc = ub.real_get(rcache, address, length, a3, a4, a5, a6);
	in_get--;
	return rc;
}
#endif

void ucx_bridge_invalidated(void *addr, size_t len)
{
	if (!active() || ub.no_forward)
		return;
	__atomic_fetch_add(&ub.forwarded, 1, __ATOMIC_RELAXED);
	ub.vm_munmap(addr, len);
}

int ucx_bridge_in_get(void)
{
	return in_get > 0;
}

void ucx_bridge_count_reg(int watched)
{
	__atomic_fetch_add(&ub.get_regs, 1, __ATOMIC_RELAXED);
	if (watched)
		return;
	__atomic_fetch_add(&ub.unwatched, 1, __ATOMIC_RELAXED);
	if (active() && !__atomic_exchange_n(&ub.warned_unwatched, 1, __ATOMIC_RELAXED))
		bridge_warn("a registration UCX caches was passed through unwatched: UCX's cache "
			    "may go stale for it (set REGCACHE_SHIM_UCX=0 to let UCX use its own "
			    "hooks)");
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
}
