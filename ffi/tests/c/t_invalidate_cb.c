/* attr->on_invalidate and regcache_sync(): the callback is told the unmapped range by the next
 * regcache_get() after munmap (a hit path that finds the counter moved) and by regcache_sync();
 * it is not called while nothing changed, nor for a caller whose (older, smaller) attr does not
 * reach the field. Skips (exit 0) where no monitor works. */
#include "check.h"
#include <stddef.h>

#define MAXSEEN 64

struct seen {
    int n;
    uintptr_t addr[MAXSEEN];
    size_t len[MAXSEEN];
};

static void record(void *arg, void *addr, size_t length) {
    struct seen *s = arg;
    if (s->n < MAXSEEN) {
        s->addr[s->n] = (uintptr_t)addr;
        s->len[s->n] = length;
    }
    s->n++;
}

/* Whether one of the recorded ranges from index `from` on covers [p, p + len). */
static int covered(const struct seen *s, int from, const void *p, size_t len) {
    uintptr_t a = (uintptr_t)p;
    for (int i = from; i < s->n && i < MAXSEEN; i++)
        if (s->addr[i] <= a && a + len <= s->addr[i] + s->len[i])
            return 1;
    return 0;
}

static struct regcache_cache *cache_with_callback(struct seen *s, size_t attr_size) {
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_SOFTNIC, REGCACHE_MONITOR_AUTO);
    a.softnic_slots = 64;
    a.on_invalidate = record;
    a.on_invalidate_arg = s;
    a.size = attr_size;
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);
    return c;
}

int main(void) {
    const size_t page = 4096, len = 4 * page;
    const uint32_t access = 1;
    struct regcache_mr *mr = NULL;
    struct seen s = {0};

    /* Argument checks. */
    CHECK_RC(regcache_sync(NULL), -EINVAL);
    struct regcache_attr bad = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_NONE);
    bad.on_invalidate_arg = &s;
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&bad, &c), -EINVAL);
    CHECK(c == NULL);

    c = cache_with_callback(&s, sizeof(struct regcache_attr));
    if (!(get_stats(c).flags & REGCACHE_STATS_CACHING)) {
        puts("invalidate_cb: skipped (no working monitor)");
        CHECK_RC(regcache_destroy(c), 0);
        return 0;
    }

    /* Nothing changed: no callback, however often we look. */
    char *p = map_pages(NULL, len, MAP_POPULATE);
    CHECK_RC(regcache_get(c, p, len, access, &mr), 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_sync(c), 0);
    CHECK_RC(regcache_get(c, p, page, access, &mr), 0); /* a hit */
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_sync(c), 0);
    CHECK(s.n == 0);
    CHECK(get_stats(c).hits == 1);

    /* munmap of the second page, then a get of the first: the lookup finds the counter moved,
     * drains, and the callback hears of the unmapped page. */
    CHECK(munmap(p + page, page) == 0);
    CHECK_RC(regcache_get(c, p, page, access, &mr), 0);
    CHECK_RC(regcache_release(mr), 0);
    printf("after munmap + get: %d call(s), first [%#lx, +%zu)\n", s.n,
           s.n ? (unsigned long)s.addr[0] : 0UL, s.n ? s.len[0] : (size_t)0);
    CHECK(s.n >= 1);
    CHECK(covered(&s, 0, p + page, page));
    CHECK(get_stats(c).invalidated >= 1);
    int before = s.n;
    CHECK_RC(regcache_sync(c), 0); /* drained already */
    CHECK(s.n == before);

    /* regcache_sync() alone drains: munmap of the fourth page (watched again by the new
     * registration of the first), sync, callback. */
    CHECK_RC(regcache_get(c, p + 2 * page, 2 * page, access, &mr), 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK(munmap(p + 3 * page, page) == 0);
    CHECK_RC(regcache_sync(c), 1);
    CHECK(s.n > before);
    CHECK(covered(&s, before, p + 3 * page, page));
    before = s.n;
    CHECK_RC(regcache_sync(c), 0);
    CHECK(s.n == before);
    CHECK_RC(regcache_destroy(c), 0);
    munmap(p, len);

    /* An older caller: its attr ends before on_invalidate, so the bytes there (set here) are
     * not read and no callback is made. */
    struct seen old = {0};
    c = cache_with_callback(&old, offsetof(struct regcache_attr, on_invalidate));
    p = map_pages(NULL, len, MAP_POPULATE);
    CHECK_RC(regcache_get(c, p, len, access, &mr), 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK(munmap(p + page, page) == 0);
    CHECK_RC(regcache_sync(c), 1);
    CHECK(old.n == 0);
    CHECK(get_stats(c).invalidated >= 1);
    CHECK_RC(regcache_destroy(c), 0);
    munmap(p, len);

    puts("invalidate_cb: ok");
    return 0;
}
