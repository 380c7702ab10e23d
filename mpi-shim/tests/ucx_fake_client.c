// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * ucx_fake_client.c - host test of the shim's UCX bridge over tests/fakeucx.c and
 * tests/fakeverbs.c (no UCX, no RDMA device):
 *   LD_PRELOAD=build/libregcache_shim.so build/ucx_fake_client MODE
 * MODE bridge: UCM_EVENT_VM_UNMAPPED is external before the rcache subscribes, a hit needs no
 *   registration and forwards nothing, and after munmap + mmap at the same address the next
 *   ucs_rcache_get is a miss with a new registration (the drain before it fed ucm_vm_munmap).
 * MODE off: the bridge stayed off (REGCACHE_SHIM_UCX=0, or a UCX version it does not know):
 *   nothing is external, so UCX would install its own hooks.
 * MODE stale: the negative controls (REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1 or ..._NO_SYNC=1):
 *   the same churn gets the old region back, which shows the bridge mode would catch staleness.
 * With FAKEUCX_VERSION=1.18 or later, UCP's hits are its inline ucs_pgtable_lookup (see
 * fakeucx.c), and MODE bridge adds a second churn in which another thread drains (and queues
 * the range at UCX) between UCP's queue check and its lookup: the lookup must still miss.
 * MODE race-stale (with REGCACHE_SHIM_UCX_DANGER_NO_SEQ=1): that race returns the old region
 * when the lookup only trusts its own drain, which shows why the bridge counts forwards.
 * MODE uncached (with FAKEUCS_ON_DEMAND=1: UCX registers with an access flag the shim passes
 *   through, so no shim cache watches the region): UCX must be told the region is invalid as
 *   soon as the get that registered it returns, so the next get registers anew. MODE
 *   uncached-stale (the same with REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1): UCX keeps it.
 * Prints one line per check and `N passed, M failed`. With UCX_FAKE_HOLD=SECONDS it then
 * stays alive that long (its metrics scraped by exporter/tests/prometheus-e2e.sh).
 */
#include <pthread.h>
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "shim.h"
#include "ucx_bridge.h"
#include "tap.h"

#if defined(__has_include)
#if __has_include(<ucm/api/ucm.h>)
#include <ucm/api/ucm.h>
_Static_assert(UCM_EVENT_VM_UNMAPPED == SHIM_UCM_EVENT_VM_UNMAPPED,
	       "ucx_bridge.h's UCM_EVENT_VM_UNMAPPED differs from UCX's");
#define CHECKED_AGAINST_UCM_H 1
#endif
#endif

/* tests/fakeucx.c */
struct fake_rcache_params {
	struct ibv_pd *pd;
};
int ucs_rcache_create(const void *params, const char *name, void *stats, void **rcache_p);
int fakeucp_memh_get(void *rcache, void *address, size_t length, void **region_p);
extern void (*fakeucp_between_hook)(void);
void ucs_rcache_region_put(void *rcache, void *region);
uint32_t fakeucs_region_lkey(void *region);
extern int fakeucm_hooks_installed, fakeucm_external_at_subscribe, fakeucm_vm_munmap_calls;
extern uintptr_t fakeucm_last_addr;
extern size_t fakeucm_last_size;
extern int fakeucs_hits, fakeucs_misses, fakeucs_deregs;
extern int fake_regs;

#define LEN (1 << 20)

/* UCP's get of the region (the modelled version's lookup) + its lkey, then put. */
static uint32_t get_put(void *rc, void *buf)
{
	void *region = NULL;
	uint32_t lkey;

	if (fakeucp_memh_get(rc, buf, LEN, &region) != 0 || !region)
		return 0;
	lkey = fakeucs_region_lkey(region);
	ucs_rcache_region_put(rc, region);
	return lkey;
}

/* The race: another thread's registration through the shim (whose miss drains and forwards
 * the range to UCX's queue) inside our lookup's window. */
static struct ibv_pd *race_pd;
static void *race_other;

static void *race_thread(void *arg)
{
	struct ibv_mr *mr = ibv_reg_mr(race_pd, race_other, LEN, IBV_ACCESS_LOCAL_WRITE);

	(void)arg;
	if (mr)
		ibv_dereg_mr(mr);
	return NULL;
}

static void race_hook(void)
{
	pthread_t t;

	fakeucp_between_hook = NULL;
	if (pthread_create(&t, NULL, race_thread, NULL) == 0)
		pthread_join(t, NULL);
}

static int lookup_mode(void)
{
	const char *v = getenv("FAKEUCX_VERSION");
	unsigned major = 1, minor = 13;

	if (v)
		sscanf(v, "%u.%u", &major, &minor);
	return minor >= 18;
}

/* munmap + mmap at the same address, new contents; 0 when the address was taken. */
static int remap(char *buf, int fill)
{
	munmap(buf, LEN);
	if (mmap(buf, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		 -1, 0) != buf)
		return 0;
	memset(buf, fill, LEN);
	return 1;
}

int main(int argc, char **argv)
{
	int (*counts)(struct shim_counts *) =
		(int (*)(struct shim_counts *))dlsym(RTLD_DEFAULT, "regcache_shim_counts");
	const char *mode = argc > 1 ? argv[1] : "bridge";
	struct ibv_pd pd = { .context = (struct ibv_context *)&pd };
	struct fake_rcache_params params = { .pd = &pd };
	uint32_t key1, key2, key3;
	int calls, regs;
	struct shim_counts t;
	void *rc = NULL;
	char *buf, *buf2;

	if (!counts) {
		printf("FAIL not run under LD_PRELOAD=libregcache_shim.so\n0 passed, 1 failed\n");
		return 1;
	}
#ifdef CHECKED_AGAINST_UCM_H
	printf("ok   UCM_EVENT_VM_UNMAPPED matches <ucm/api/ucm.h>\n");
	passed++;
#endif
	CHECK(ucs_rcache_create(&params, "fake", NULL, &rc) == 0 && rc,
	      "ucs_rcache_create through the shim");
	if (!strcmp(mode, "off")) {
		CHECK(fakeucm_external_at_subscribe == 0 && fakeucm_hooks_installed,
		      "bridge off: nothing external, UCX installs its own hooks");
		goto out;
	}
	counts(&t);
	if (!t.enabled) {
		printf("SKIP the shim has no working monitor here\n%d passed, 0 failed\n", passed);
		return 0;
	}
	CHECK(fakeucm_external_at_subscribe == SHIM_UCM_EVENT_VM_UNMAPPED && !fakeucm_hooks_installed,
	      "VM_UNMAPPED external before the rcache subscribed (0x%x), no UCX hooks",
	      fakeucm_external_at_subscribe);

	buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(buf, 1, LEN);
	if (!strncmp(mode, "uncached", 8)) {
		key1 = get_put(rc, buf);
		counts(&t);
		CHECK(key1 && fakeucs_misses == 1 && t.passthrough == 1,
		      "first get registers, passed through by the shim (unwatched)");
		calls = fakeucm_vm_munmap_calls;
		key2 = get_put(rc, buf);
		if (!strcmp(mode, "uncached-stale")) {
			CHECK(key2 == key1 && fakeucs_misses == 1,
			      "negative control: UCX keeps the unwatched region (lkey %u again)", key2);
		} else {
			CHECK(calls > 0 && fakeucm_last_addr <= (uintptr_t)buf &&
			      (uintptr_t)buf < fakeucm_last_addr + fakeucm_last_size,
			      "the unwatched range was reported to UCX when its get returned");
			CHECK(key2 && key2 != key1 && fakeucs_misses == 2,
			      "UCX used it once: the next get registers anew (lkey %u -> %u)", key1,
			      key2);
		}
		munmap(buf, LEN);
		goto out;
	}
	key1 = get_put(rc, buf);
	CHECK(key1 && fakeucs_misses == 1 && fake_regs == 1, "first get registers through the shim");
	calls = fakeucm_vm_munmap_calls;
	key2 = get_put(rc, buf);
	CHECK(key2 == key1 && fakeucs_hits == 1 && fake_regs == 1 &&
	      fakeucm_vm_munmap_calls == calls, "second get is a UCX hit; nothing forwarded");

	/* The bug: unmap, map again at the same address, get. */
	buf2 = buf;
	if (!remap(buf2, 2)) {
		printf("SKIP could not map the same address again\n");
		goto out;
	}
	regs = fake_regs;
	key3 = get_put(rc, buf2);
	if (!strcmp(mode, "stale")) {
		CHECK(key3 == key1 && fake_regs == regs,
		      "negative control: UCX hands out the stale region (lkey %u again)", key3);
		goto out;
	}
	if (strcmp(mode, "race-stale")) {
		CHECK(fakeucm_vm_munmap_calls > calls && fakeucm_last_addr <= (uintptr_t)buf &&
		      (uintptr_t)buf < fakeucm_last_addr + fakeucm_last_size,
		      "the drain before UCX's lookup fed ucm_vm_munmap (%d call(s), last %#lx+%zu)",
		      fakeucm_vm_munmap_calls - calls, (unsigned long)fakeucm_last_addr,
		      fakeucm_last_size);
		CHECK(key3 && key3 != key1 && fake_regs == regs + 1 && fakeucs_misses == 2,
		      "munmap + mmap at the same address: UCX misses and registers anew (lkey %u -> %u)",
		      key1, key3);
		CHECK(fakeucs_deregs == 1, "the old region is deregistered (once)");
		calls = fakeucm_vm_munmap_calls;
		CHECK(get_put(rc, buf2) == key3 && fakeucm_vm_munmap_calls == calls,
		      "the new region is a hit again");
	}
	if (lookup_mode()) {
		/* Again, but another thread drains inside our lookup's window. */
		race_pd = &pd;
		race_other = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				  -1, 0);
		key1 = get_put(rc, buf2);
		if (race_other == MAP_FAILED || !remap(buf2, 3)) {
			printf("SKIP could not map the same address again\n");
			goto out;
		}
		regs = fake_regs;
		fakeucp_between_hook = race_hook;
		key3 = get_put(rc, buf2);
		if (!strcmp(mode, "race-stale")) {
			CHECK(key3 == key1,
			      "negative control: a drain by another thread inside UCP's lookup window "
			      "hands out the stale region when only the own drain counts (lkey %u)",
			      key3);
			goto out;
		}
		CHECK(key3 && key3 != key1 && fake_regs == regs + 2,
		      "another thread drained inside UCP's lookup window: still a miss, registered "
		      "anew (lkey %u -> %u; %d registrations, the other thread's included)", key1,
		      key3, fake_regs - regs);
		munmap(race_other, LEN);
	}
	munmap(buf2, LEN);
out:
	counts(&t);
	printf("mode %s: hits=%d misses=%d vm_munmap=%d shim hits=%llu misses=%llu invalidated=%llu\n",
	       mode, fakeucs_hits, fakeucs_misses, fakeucm_vm_munmap_calls,
	       (unsigned long long)t.hits, (unsigned long long)t.misses,
	       (unsigned long long)t.invalidated);
	printf("%d passed, %d failed\n", passed, failed);
	fflush(stdout);
	if (getenv("UCX_FAKE_HOLD"))
		sleep((unsigned int)atoi(getenv("UCX_FAKE_HOLD")));
	return failed != 0;
}
