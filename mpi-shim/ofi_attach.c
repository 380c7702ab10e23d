// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * ofi_attach.c - inside libregcache_shim.so: the libfabric bridge (ofi_bridge.c, ummunotify as
 * libfabric's imported memory monitor) attached to an unmodified program (issue 10).
 *
 * libfabric (>= 1.13) takes one imported monitor, and only before a domain's MR cache has
 * started its default monitor (ofi_monitor_import: -FI_EBUSY otherwise, or when one was
 * imported already). The verbs domain picks its monitor at the top of vrb_domain(), so the
 * import must happen before the first fi_domain(). Where:
 * - Programs linked against libfabric (Open MPI 5, MPICH) call fi_fabric() through their PLT:
 *   the shim interposes it and imports on the first call, before forwarding. A program that
 *   imported its own monitor first (Open MPI 5 does, between fi_getinfo and fi_fabric, fed by
 *   its own memory hooks) makes ours -FI_EBUSY: we leave it (correct, only not ummunotify) and
 *   say so in the verbose line and the metrics (state "busy").
 * - Intel MPI dlopen()s libfabric privately and dlsym()s its entry points: no interposer is
 *   ever called. libfabric not in the global scope (dlsym(RTLD_DEFAULT, "fi_version") finds
 *   nothing) while loaded: its verbs provider's first ibv_get_device_list() (inside the first
 *   fi_getinfo, long before any domain) imports instead.
 * The import itself only opens /dev/ummunotify and calls fi_open("mr_cache") + bind: it takes
 * no libfabric lock, so it is safe from inside fi_getinfo.
 *
 * What an import reaches: only the providers built into libfabric.so.1. A provider built as a
 * separate DSO (lib<name>-fi.so; the Open MPI 5, MPICH 5 and Intel MPI wheels ship verbs that
 * way) links its own copy of libfabric's util code, monitors included, and its MR cache keeps
 * the monitor FI_MR_CACHE_MONITOR names (memhooks by default) whatever was imported into the
 * core (seen in libfabric's log: "setting imported memory monitor as default", then the verbs
 * DSO "Starting memory monitor: memhooks"). When a verbs DSO is loaded the bridge says so
 * (state "dso"): that cache is libfabric's own business, and FI_MR_CACHE_MONITOR=disabled
 * leaves the caching to the shim's own caches (every registration then reaches ibv_reg_mr).
 *
 * Versions: libfabric 1.17 (Debian 12), 2.4.0 (Intel MPI 2021.18) and 2.5.1 (the Open MPI 5 and
 * MPICH 5 wheels) were run; the import ABI (fi_ext.h, FI_VERSION(1, 13)) has not changed since
 * 1.13. Outside 1.17-2.5 the bridge stays off and says so; libfabric keeps its own monitor.
 *
 * Environment
 *   REGCACHE_SHIM_OFI=0                   bridge off: libfabric keeps its own monitor
 *   REGCACHE_SHIM_OFI_DANGER_NO_FORWARD=1 TEST ONLY: the monitor answers "valid" without
 *                                         checking and tells libfabric nothing (the negative
 *                                         control of vmtest/test-stacks.sh)
 * FI_MR_CACHE_MONITOR overrides an imported monitor in libfabric: leave it unset.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include "ofi_attach.h"
#include "ofi_bridge.h"
#include "shim.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

typedef int (*fabric_fn)(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context);
typedef uint32_t (*version_fn)(void);
typedef struct ibv_device **(*device_list_fn)(int *num_devices);

static struct {
	pthread_once_t once;
	int state;		/* enum ofi_attach_state; atomic */
	int err;		/* the import's error (negative), for the summary */
	uint32_t version;	/* FI_VERSION of the loaded libfabric, 0 unknown */
	const char *trigger;	/* "fi_fabric" or "fi_getinfo" */
	const char *why;	/* when off */
} oa = { .once = PTHREAD_ONCE_INIT };

/* Where this thread asks for the attach; read by attach() on the thread that runs it. */
static __thread const char *trigger;

#define attach_warn(fmt, ...) shim_warn("libfabric bridge: " fmt, ##__VA_ARGS__)

static int is_verbs_dso(struct dl_phdr_info *info, size_t size, void *arg)
{
	const char *base = strrchr(info->dlpi_name, '/');
	size_t n;

	(void)size;
	(void)arg;
	base = base ? base + 1 : info->dlpi_name;
	n = strlen(base);
	/* libverbs-fi.so, libverbs-1.12-fi.so, ... */
	return n > strlen("libverbs-fi.so") - 1 && !strncmp(base, "libverbs", 8) &&
	       !strcmp(base + n - strlen("-fi.so"), "-fi.so");
}

/* Whether libfabric loaded its verbs provider as a DSO (its own monitor; see above). */
static int verbs_provider_is_dso(void)
{
	return dl_iterate_phdr(is_verbs_dso, NULL) != 0;
}

/* libfabric.so.1 if the process has loaded it (the handle is kept: never unloaded under us). */
static void *libfabric(void)
{
	return dlopen("libfabric.so.1", RTLD_NOW | RTLD_NOLOAD);
}

static void attach(void)
{
	int verbose = shim_is_verbose(), asked = getenv("REGCACHE_SHIM_OFI") != NULL;
	void *h = libfabric();
	version_fn version = h ? (version_fn)dlsym(h, "fi_version") : NULL;
	ofi_open_fn open_fn = h ? (ofi_open_fn)dlvsym(h, "fi_open", "FABRIC_1.5") : NULL;
	unsigned major, minor;
	int rc;

	oa.trigger = trigger;
	if (version)
		oa.version = version();
	major = FI_MAJOR(oa.version);
	minor = FI_MINOR(oa.version);
	if (!shim_env_flag("REGCACHE_SHIM_OFI", 1))
		oa.why = "REGCACHE_SHIM_OFI=0";
	else if (!version || !open_fn)
		oa.why = "libfabric.so.1 (fi_version, fi_open) not found";
	else if (!((major == 1 && minor >= 17) || (major == 2 && minor <= 5)))
		oa.why = "not a libfabric version the bridge knows (1.17-2.5)";
	else if (access("/dev/ummunotify", R_OK) != 0)
		oa.why = "no /dev/ummunotify (the bridge is ummunotify itself)";
	if (oa.why) {
		if (verbose || asked)
			attach_warn("off, libfabric %u.%u keeps its own memory monitor: %s", major,
				    minor, oa.why);
		__atomic_store_n(&oa.state, OFI_ATTACH_OFF, __ATOMIC_RELEASE);
		return;
	}
	if (shim_env_flag("REGCACHE_SHIM_OFI_DANGER_NO_FORWARD", 0)) {
		regcache_ofi_danger_ignore_invalidations(1);
		attach_warn("REGCACHE_SHIM_OFI_DANGER_NO_FORWARD: TEST ONLY, libfabric's cache will "
			    "hand out stale registrations");
	}
	rc = ofi_bridge_import(open_fn);
	oa.err = rc;
	if (rc == -FI_EBUSY) {
		if (verbose)
			attach_warn("libfabric %u.%u: the program imported its own memory monitor "
				    "first (Open MPI does); left it", major, minor);
		__atomic_store_n(&oa.state, OFI_ATTACH_BUSY, __ATOMIC_RELEASE);
		return;
	}
	if (rc) {
		oa.why = "import failed";
		attach_warn("off, libfabric %u.%u keeps its own memory monitor: import failed (%d)",
			    major, minor, rc);
		__atomic_store_n(&oa.state, OFI_ATTACH_OFF, __ATOMIC_RELEASE);
		return;
	}
	if (verbs_provider_is_dso()) {
		__atomic_store_n(&oa.state, OFI_ATTACH_DSO, __ATOMIC_RELEASE);
		if (verbose)
			attach_warn("libfabric %u.%u: imported (at %s), but its verbs provider is a "
				    "separate DSO whose MR cache keeps its own monitor "
				    "(FI_MR_CACHE_MONITOR; =disabled leaves caching to the shim)",
				    major, minor, trigger);
		return;
	}
	__atomic_store_n(&oa.state, OFI_ATTACH_ACTIVE, __ATOMIC_RELEASE);
	if (verbose)
		attach_warn("libfabric %u.%u: ummunotify imported as the MR cache's memory monitor "
			    "(at %s)", major, minor, trigger);
}

SHIM_EXPORT int fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context)
{
	static fabric_fn real;
	void *h = libfabric();

	/* fi_fabric@@FABRIC_1.1 (since libfabric 1.1), the version every caller links. */
	if (!real && h)
		real = (fabric_fn)dlvsym(h, "fi_fabric", "FABRIC_1.1");
	if (!real)
		return -FI_ENOSYS;
	trigger = "fi_fabric";
	pthread_once(&oa.once, attach);
	return real(attr, fabric, context);
}

SHIM_EXPORT struct ibv_device **ibv_get_device_list(int *num_devices)
{
	static device_list_fn real;

	if (!real)
		real = (device_list_fn)shim_next_sym("ibv_get_device_list", "IBVERBS_1.1");
	if (!real) {
		errno = ENOSYS;
		return NULL;
	}
	/* A private libfabric (not in the global scope: its users dlsym its functions and never
	 * reach our fi_fabric) asks for devices inside its first fi_getinfo. */
	if (__atomic_load_n(&oa.state, __ATOMIC_ACQUIRE) == OFI_ATTACH_UNUSED && libfabric() &&
	    !dlsym(RTLD_DEFAULT, "fi_version")) {
		trigger = "fi_getinfo";
		pthread_once(&oa.once, attach);
	}
	return real(num_devices);
}

void ofi_attach_get_counts(struct ofi_attach_counts *out)
{
	struct regcache_ofi_stats s;

	memset(out, 0, sizeof(*out));
	out->state = __atomic_load_n(&oa.state, __ATOMIC_ACQUIRE);
	out->version = oa.version;
	out->trigger = oa.trigger;
	out->why = oa.why;
	out->err = oa.err;
	if ((out->state == OFI_ATTACH_ACTIVE || out->state == OFI_ATTACH_DSO) &&
	    regcache_ofi_stats(&s) == 0) {
		out->subscribes = s.subscribes;
		out->lookups = s.valid_calls;
		out->stale = s.valid_false;
		out->invalidations = s.invalidations;
		out->notifies = s.notifies;
		out->live = s.live;
	}
}
