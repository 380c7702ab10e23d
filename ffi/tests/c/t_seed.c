/* The seed scenario: a = mmap; get; DMA; munmap; b = mmap at the same address; get must give a
 * NEW registration, and the NIC's write must reach b. Run with "--negative-control" on a cache
 * that ignores invalidations (REGCACHE_ATTR_DANGER_IGNORE_INVALIDATIONS): the stale
 * registration is handed out and the write lands in a's old pages, not in b, which proves this
 * test would catch a stale cache. */
#include "check.h"

int main(int argc, char **argv) {
    int negative = argc > 1 && strcmp(argv[1], "--negative-control") == 0;
    struct regcache_cache *c =
        softnic_cache(negative ? REGCACHE_ATTR_DANGER_IGNORE_INVALIDATIONS : 0);
    size_t len = 8 * 4096;
    const uint32_t access = 1 | 2 | 4;

    char *a = map_pages(NULL, len, 0);
    memset(a, 'a', len);
    struct regcache_mr *mr = NULL;
    CHECK_RC(regcache_get(c, a, len, access, &mr), 0);
    CHECK_RC(regcache_softnic_dma_write(mr, a, "first", 5), 0);
    CHECK(memcmp(a, "first", 5) == 0);
    uint32_t lkey_a;
    CHECK_RC(regcache_mr_keys(mr, &lkey_a, NULL), 0);
    CHECK_RC(regcache_release(mr), 0); /* stays cached */

    CHECK(munmap(a, len) == 0);
    char *b = map_pages(a, len, MAP_FIXED_NOREPLACE);
    CHECK(b == a); /* the same address, new pages */
    memset(b, 'b', len);

    CHECK_RC(regcache_get(c, b, len, access, &mr), 0);
    uint32_t lkey_b;
    CHECK_RC(regcache_mr_keys(mr, &lkey_b, NULL), 0);
    CHECK_RC(regcache_softnic_dma_write(mr, b + 4096, "second", 6), 0);
    int reached = memcmp(b + 4096, "second", 6) == 0;
    struct regcache_stats s = get_stats(c);
    printf("lkey a %u b %u, hits %llu misses %llu invalidated %llu reregistrations %llu, "
           "write reached b: %d\n",
           lkey_a, lkey_b, (unsigned long long)s.hits, (unsigned long long)s.misses,
           (unsigned long long)s.invalidated, (unsigned long long)s.reregistrations, reached);
    if (negative) {
        /* The stale registration was reused and the NIC wrote into a's old pages. */
        CHECK(s.hits == 1 && s.misses == 1 && s.invalidated == 0);
        CHECK(!reached);
        CHECK(b[4096] == 'b');
    } else {
        CHECK(s.misses == 2 && s.hits == 0);
        CHECK(s.invalidated >= 1 && s.reregistrations == 1);
        CHECK(reached);
        /* And the NIC reads b's data, not a's. */
        char back[4];
        CHECK_RC(regcache_softnic_dma_read(mr, b + 2 * 4096, back, 4), 0);
        CHECK(memcmp(back, "bbbb", 4) == 0);
    }
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_destroy(c), 0);
    munmap(b, len);
    puts(negative ? "seed negative control: ok (stale registration detected)" : "seed: ok");
    return 0;
}
