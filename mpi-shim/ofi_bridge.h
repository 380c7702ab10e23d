/*
 * ofi_bridge.h - libfabric's MR cache kept correct by ummunotify (issue 6, libfabric bridge).
 *
 * regcache_ofi_import() opens /dev/ummunotify and imports it into libfabric (>= 1.13) as the
 * memory monitor of libfabric's own registration cache (fi_ext.h: fid_mem_monitor, "mr_cache",
 * fi_import_fid). Call it before the first fi_domain(); libfabric refuses to replace a monitor
 * that already watches memory (-FI_EBUSY).
 *
 * Or, unmodified programs: LD_PRELOAD=libregcache_ofi.so REGCACHE_OFI_IMPORT=1 prog ...
 * (the import happens in a constructor; REGCACHE_OFI_VERBOSE=1 prints counters at exit).
 *
 * Guarantee: libfabric calls the monitor's valid() under its cache lock before every cache hit;
 * valid() reads the ummunotify generation counter (one load) and, if it moved, drains the queue
 * synchronously, so a hit on a range unmapped/remapped before the lookup is never returned.
 * Invalidated entries nobody looks up are flushed asynchronously by a helper thread that calls
 * import_ops->notify() (it blocks in poll() on the device). REGCACHE_OFI_NO_HELPER=1 (tests)
 * runs without it, to show that valid() alone keeps the cache correct.
 *
 * Window (libfabric's, any monitor): libfabric registers a range before it subscribes it
 * (util_mr_cache_create: add_region, then ofi_monitor_subscribe), so an unmap of a buffer
 * racing with its own fi_mr_reg() in another thread is not seen. libfabric never calls
 * unsubscribe (it "remains subscribed"): the bridge frees a range's watch once its entry is
 * gone (after notify(), or when valid() answered "stale").
 */
#ifndef REGCACHE_OFI_BRIDGE_H
#define REGCACHE_OFI_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

struct fid;

#ifdef __cplusplus
extern "C" {
#endif

struct regcache_ofi_stats {
	uint64_t subscribes;    /* ranges watched (export_ops->subscribe) */
	uint64_t unsubscribes;  /* ranges unwatched */
	uint64_t valid_calls;   /* export_ops->valid calls */
	uint64_t valid_false;   /* valid() answers "stale" */
	uint64_t drains;        /* times the ummunotify queue was read */
	uint64_t invalidations; /* INVAL records read */
	uint64_t notifies;      /* import_ops->notify calls made by the helper thread */
	uint64_t live;          /* subscriptions alive now */
};

/* 0, or a negative errno / -FI_* code (message on stderr). Idempotent. */
int regcache_ofi_import(void);
/* Copies the counters; 0, or -ENODEV before a successful import. */
int regcache_ofi_stats(struct regcache_ofi_stats *out);
/* TEST ONLY (negative control): valid() answers "valid" without checking. */
void regcache_ofi_danger_ignore_invalidations(int on);

/* Internal (libregcache_ofi.so and the shim's ofi_attach.c): opens /dev/ummunotify and imports
 * it through `open_fn`, libfabric's fi_open. 0, a negative errno (the device), or a negative
 * FI_* code (-FI_EBUSY: another monitor was imported or is in use); nothing left open on error. */
typedef int (*ofi_open_fn)(uint32_t version, const char *name, void *attr, size_t attr_len,
			   uint64_t flags, struct fid **fid, void *context);
int ofi_bridge_import(ofi_open_fn open_fn);

#ifdef __cplusplus
}
#endif
#endif
