/* get / release / hit: the second get of the same range is a hit with the same keys. Also the
 * monitor auto picks, the info struct, and invalidate / flush. */
#include "check.h"

int main(void) {
    struct regcache_cache *c = softnic_cache(0);
    size_t len = 16 * 4096;
    char *buf = map_pages(NULL, len, 0);
    memset(buf, 1, len);

    struct regcache_mr *mr = NULL;
    uint32_t lkey = 0, rkey = 0, lkey2 = 0, rkey2 = 0;
    CHECK_RC(regcache_get(c, buf + 100, 5000, 1 /* LOCAL_WRITE */, &mr), 0);
    CHECK(mr != NULL);
    CHECK_RC(regcache_mr_keys(mr, &lkey, &rkey), 0);

    struct regcache_mr_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    CHECK_RC(regcache_mr_query(mr, &info), 0);
    CHECK(info.size == sizeof info);
    CHECK(info.addr == (uint64_t)(uintptr_t)buf); /* page-aligned start */
    CHECK(info.length >= 5100 && info.length % 4096 == 0);
    CHECK(info.lkey == lkey && info.rkey == rkey);
    CHECK(info.access & 1);

    struct regcache_stats s = get_stats(c);
    printf("monitor %u, caching %u\n", s.monitor, s.flags & REGCACHE_STATS_CACHING);
    /* This machine has no ummunotify module; auto must pick userfaultfd, which caches. */
    CHECK(s.monitor == REGCACHE_MONITOR_UFFD || s.monitor == REGCACHE_MONITOR_UMMUNOTIFY);
    CHECK(s.flags & REGCACHE_STATS_CACHING);
    CHECK(info.flags & REGCACHE_MR_CACHED);
    CHECK(s.misses == 1 && s.hits == 0 && s.registered_entries == 1);
    CHECK_RC(regcache_release(mr), 0);

    CHECK_RC(regcache_get(c, buf + 100, 5000, 1, &mr), 0);
    CHECK_RC(regcache_mr_keys(mr, &lkey2, &rkey2), 0);
    CHECK(lkey2 == lkey && rkey2 == rkey);
    s = get_stats(c);
    CHECK(s.hits == 1 && s.misses == 1 && s.cached_entries == 1);
    CHECK_RC(regcache_release(mr), 0);

    /* The software NIC moves data through the registration. */
    CHECK_RC(regcache_get(c, buf, len, 1, &mr), 0);
    CHECK_RC(regcache_softnic_dma_write(mr, buf + 8192, "hello", 5), 0);
    CHECK(memcmp(buf + 8192, "hello", 5) == 0);
    char back[5];
    CHECK_RC(regcache_softnic_dma_read(mr, buf + 8192, back, 5), 0);
    CHECK(memcmp(back, "hello", 5) == 0);
    /* Outside the registration. */
    CHECK_RC(regcache_softnic_dma_write(mr, buf + len, "x", 1), -EINVAL);
    CHECK_RC(regcache_release(mr), 0);

    /* invalidate removes the entry: the next get is a miss. */
    s = get_stats(c);
    uint64_t misses = s.misses;
    int n = regcache_invalidate(c, buf, len);
    CHECK(n >= 1);
    s = get_stats(c);
    CHECK(s.cached_entries == 0 && s.invalidated >= (uint64_t)n);
    CHECK_RC(regcache_invalidate(c, buf, len), 0);
    CHECK_RC(regcache_get(c, buf, 4096, 1, &mr), 0);
    s = get_stats(c);
    CHECK(s.misses == misses + 1);

    /* flush with an entry in use: it stays valid until released, then is deregistered. */
    CHECK_RC(regcache_flush(c), 0);
    s = get_stats(c);
    CHECK(s.cached_entries == 0 && s.registered_entries == 1);
    CHECK_RC(regcache_softnic_dma_write(mr, buf, "in use", 6), 0);
    CHECK(memcmp(buf, "in use", 6) == 0);
    CHECK_RC(regcache_release(mr), 0);
    s = get_stats(c);
    CHECK(s.registered_entries == 0 && s.registered_bytes == 0);
    CHECK(s.deregistrations == s.registrations);

    CHECK_RC(regcache_destroy(c), 0);
    munmap(buf, len);
    puts("basic: ok");
    return 0;
}
