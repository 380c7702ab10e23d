/*
 * A thin wrapper over UCX's registration cache (libucs, ucs/memory/rcache.h) for the
 * side-by-side benchmarks: registration and deregistration do nothing, so only the caches'
 * own lookup, reference counting and LRU bookkeeping are compared with regcache's.
 *
 * Memory events: ucm_events = 0, so UCX installs no mmap/munmap hooks (the fake addresses
 * used by the benchmarks are never mapped; nothing may invalidate them behind our back).
 * Leave UCX_MEM_EVENTS at its default: "no" makes ucs_rcache_create fail, because the rcache
 * still registers an (empty) event handler.
 */
#include <ucm/api/ucm.h>
#include <ucs/memory/rcache.h>
#include <ucs/type/status.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Our region: UCX's header first, then what a real mem_reg would store (a key). */
typedef struct {
    ucs_rcache_region_t super;
    uint64_t            key;
} shim_region_t;

static uint64_t shim_next_key; /* written only under UCX's page-table write lock */

static ucs_status_t shim_mem_reg(void *context, ucs_rcache_t *rcache, void *arg,
                                 ucs_rcache_region_t *region, uint16_t flags)
{
    (void)context; (void)rcache; (void)arg; (void)flags;
    ((shim_region_t *)region)->key = ++shim_next_key;
    return UCS_OK;
}

static void shim_mem_dereg(void *context, ucs_rcache_t *rcache,
                           ucs_rcache_region_t *region)
{
    (void)context; (void)rcache; (void)region;
}

static void shim_dump_region(void *context, ucs_rcache_t *rcache,
                             ucs_rcache_region_t *region, char *buf, size_t max)
{
    (void)context; (void)rcache; (void)region;
    if (max > 0) {
        buf[0] = '\0';
    }
}

static const ucs_rcache_ops_t shim_ops = {
    .mem_reg     = shim_mem_reg,
    .mem_dereg   = shim_mem_dereg,
    .dump_region = shim_dump_region,
};

static void *shim_create_with(unsigned long max_regions, int ucm_events);

/* A new rcache keeping at most max_regions regions (LRU eviction beyond), or NULL. */
void *shim_create(unsigned long max_regions)
{
    return shim_create_with(max_regions, 0);
}

/*
 * An rcache subscribed to UCM_EVENT_VM_UNMAPPED, for the drain benchmark: the event is declared
 * external first (ucm_set_external_event), so UCM installs no mmap/malloc hooks and delivers
 * the event only when shim_unmapped() calls ucm_vm_munmap(), which runs the rcache's unmap
 * callback (its own invalidation path: take the page-table lock, find and destroy the regions).
 */
void *shim_create_unmap_events(unsigned long max_regions)
{
    ucm_set_external_event(UCM_EVENT_VM_UNMAPPED);
    return shim_create_with(max_regions, UCM_EVENT_VM_UNMAPPED);
}

/* Tells UCM that [addr, addr+len) is being unmapped (nothing is unmapped). */
void shim_unmapped(uintptr_t addr, size_t len)
{
    ucm_vm_munmap((void *)addr, len);
}

static void *shim_create_with(unsigned long max_regions, int ucm_events)
{
    ucs_rcache_params_t params;
    ucs_rcache_t *rcache = NULL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    memset(&params, 0, sizeof(params));
    params.region_struct_size = sizeof(shim_region_t);
    params.alignment          = page;   /* same page rounding as regcache */
    params.max_alignment      = page;
    params.ucm_events         = ucm_events; /* 0: no memory hooks */
    params.ucm_event_priority = 1000;
    params.ops                = &shim_ops;
    params.context            = NULL;
    params.flags              = 0;      /* PFN checks are off by default (UCX_RCACHE_CHECK_PFN=0) */
    params.max_regions        = max_regions;
    params.max_size           = SIZE_MAX;
    params.max_unreleased     = SIZE_MAX;

    if (ucs_rcache_create(&params, "regcache-bench", NULL, &rcache) != UCS_OK) {
        return NULL;
    }
    return rcache;
}

/* A held region covering [addr, addr+len) with read/write rights, or NULL. */
void *shim_get(void *rcache, uintptr_t addr, size_t len)
{
    ucs_rcache_region_t *region = NULL;

    if (ucs_rcache_get((ucs_rcache_t *)rcache, (void *)addr, len,
                       PROT_READ | PROT_WRITE, NULL, &region) != UCS_OK) {
        return NULL;
    }
    return region;
}

/* Releases a region returned by shim_get. */
void shim_put(void *rcache, void *region)
{
    ucs_rcache_region_put((ucs_rcache_t *)rcache, (ucs_rcache_region_t *)region);
}

/* The key our mem_reg stored in the region. */
uint64_t shim_region_key(const void *region)
{
    return ((const shim_region_t *)region)->key;
}

/* Start address of the registered region (page-aligned). */
uintptr_t shim_region_start(const void *region)
{
    return ((const ucs_rcache_region_t *)region)->super.start;
}

void shim_destroy(void *rcache)
{
    ucs_rcache_destroy((ucs_rcache_t *)rcache);
}
