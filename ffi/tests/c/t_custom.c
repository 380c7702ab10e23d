/* A caller-supplied registrar: every reg is matched by exactly one dereg, errors propagate,
 * limits evict, and destroying a cache with a registration in use defers its deregistration to
 * the last release. */
#include "check.h"

struct counts {
    int regs, deregs, fail_next;
    uint64_t live;
};

static int my_reg(void *ctx, void *addr, size_t len, uint32_t access, struct regcache_reg *out) {
    struct counts *k = ctx;
    (void)access;
    if (k->fail_next) {
        k->fail_next = 0;
        return -EFAULT;
    }
    k->regs++;
    k->live++;
    out->lkey = 1000 + (uint32_t)k->regs;
    out->rkey = 2000 + (uint32_t)k->regs;
    out->token = (uint64_t)(uintptr_t)addr ^ len;
    return 0;
}

static void my_dereg(void *ctx, void *addr, size_t len, const struct regcache_reg *reg) {
    struct counts *k = ctx;
    if (reg->token != ((uint64_t)(uintptr_t)addr ^ len)) abort();
    k->deregs++;
    k->live--;
}

int main(void) {
    struct counts k = {0};
    struct regcache_registrar_ops ops = {.size = sizeof ops, .reg = my_reg, .dereg = my_dereg};
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_CUSTOM, REGCACHE_MONITOR_AUTO);
    a.ops = &ops;
    a.ops_context = &k;
    a.max_entries = 2;
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);
    ops.reg = NULL; /* the library copied the ops */

    char *mem = map_pages(NULL, 8 * 4096, 0);
    struct regcache_mr *mr = NULL;
    uint32_t lkey, rkey;
    CHECK_RC(regcache_get(c, mem, 4096, 1, &mr), 0);
    CHECK_RC(regcache_mr_keys(mr, &lkey, &rkey), 0);
    CHECK(lkey == 1001 && rkey == 2001 && k.regs == 1);
    CHECK_RC(regcache_release(mr), 0);
    CHECK(k.deregs == 0); /* cached */

    /* An error from the callback is returned as is. */
    k.fail_next = 1;
    CHECK_RC(regcache_get(c, mem + 2 * 4096, 4096, 1, &mr), -EFAULT);

    /* max_entries 2: a third distinct range evicts the least recently used. */
    for (int i = 2; i < 8; i += 2) {
        CHECK_RC(regcache_get(c, mem + (size_t)i * 4096, 4096, 1, &mr), 0);
        CHECK_RC(regcache_release(mr), 0);
    }
    struct regcache_stats s = get_stats(c);
    CHECK(s.cached_entries == 2 && s.evictions == 2 && k.live == 2);
    CHECK(s.registration_failures == 1);

    /* Destroy while a registration is in use: cached ones go now, that one on release. */
    CHECK_RC(regcache_get(c, mem, 4096, 1, &mr), 0);
    int live_before = (int)k.live;
    CHECK_RC(regcache_destroy(c), 0);
    CHECK(k.live == 1 && live_before == 2); /* the third was evicted at insert */
    CHECK_RC(regcache_mr_keys(mr, &lkey, NULL), 0); /* still valid */
    CHECK_RC(regcache_release(mr), 0);
    CHECK(k.live == 0 && k.regs == k.deregs);
    puts("custom: ok");
    return 0;
}
