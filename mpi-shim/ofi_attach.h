/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * ofi_attach.h - the libfabric bridge attached by the shim (see ofi_attach.c). Internal to
 * libregcache_shim.so.
 */
#ifndef REGCACHE_OFI_ATTACH_H
#define REGCACHE_OFI_ATTACH_H

#include <stdint.h>

enum ofi_attach_state {
	OFI_ATTACH_UNUSED = 0,	/* libfabric not used (yet) */
	OFI_ATTACH_ACTIVE,	/* ummunotify is libfabric's memory monitor */
	OFI_ATTACH_BUSY,	/* the program imported its own monitor first: left it */
	OFI_ATTACH_OFF,		/* not attached (REGCACHE_SHIM_OFI=0, no device, other version) */
	OFI_ATTACH_DSO,		/* imported, but the verbs provider is a DSO with its own monitor */
};

struct ofi_attach_counts {
	int state;		/* enum ofi_attach_state */
	int err;		/* the import's result when not active */
	uint32_t version;	/* FI_VERSION(major, minor) of the loaded libfabric, 0 unknown */
	const char *trigger;	/* where it attached: "fi_fabric" or "fi_getinfo", or NULL */
	const char *why;	/* why it is off, or NULL */
	uint64_t subscribes;	/* ranges libfabric's cache asked us to watch */
	uint64_t lookups;	/* valid() calls: libfabric cache lookups that found an entry */
	uint64_t stale;		/* of those, answered "stale" */
	uint64_t invalidations;	/* INVAL records read from ummunotify */
	uint64_t notifies;	/* ranges told to libfabric by the helper thread */
	uint64_t live;		/* ranges watched now */
};

void ofi_attach_get_counts(struct ofi_attach_counts *out);

/* libfabric cache hits: lookups whose entry we confirmed valid. */
static inline uint64_t ofi_attach_hits(const struct ofi_attach_counts *c)
{
	return c->lookups > c->stale ? c->lookups - c->stale : 0;
}

#endif /* REGCACHE_OFI_ATTACH_H */
