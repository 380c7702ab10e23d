/* The size field of the output structs: an older caller's smaller struct is filled only up to
 * its size; sizes below the minimum or absurdly large are -EINVAL. */
#include "check.h"
#include <stddef.h>

int main(void) {
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_NONE);
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);
    char buf[64];
    struct regcache_mr *mr = NULL;
    CHECK_RC(regcache_get(c, buf, sizeof buf, 1, &mr), 0);

    struct regcache_stats s;
    memset(&s, 0xab, sizeof s);
    s.size = offsetof(struct regcache_stats, uncacheable); /* size, hits, misses */
    CHECK_RC(regcache_stats(c, &s), 0);
    CHECK(s.size == offsetof(struct regcache_stats, uncacheable));
    CHECK(s.hits == 0 && s.misses == 0);
    CHECK(s.uncacheable == 0xababababababababULL); /* untouched */
    s.size = 8;
    CHECK_RC(regcache_stats(c, &s), -EINVAL);
    s.size = 0;
    CHECK_RC(regcache_stats(c, &s), -EINVAL);
    s.size = (size_t)-1;
    CHECK_RC(regcache_stats(c, &s), -EINVAL);
    /* A newer caller's larger struct: filled up to ours, size says how much. */
    struct {
        struct regcache_stats st;
        uint64_t future;
    } big;
    memset(&big, 0, sizeof big);
    big.st.size = sizeof big;
    big.future = 77;
    CHECK_RC(regcache_stats(c, &big.st), 0);
    CHECK(big.st.size == sizeof(struct regcache_stats));
    CHECK(big.future == 77);
    CHECK(big.st.uncacheable == 1 && big.st.monitor == REGCACHE_MONITOR_NONE);
    CHECK((big.st.flags & REGCACHE_STATS_CACHING) == 0);

    struct regcache_mr_info info;
    memset(&info, 0, sizeof info);
    info.size = offsetof(struct regcache_mr_info, lkey);
    CHECK_RC(regcache_mr_query(mr, &info), 0);
    CHECK(info.addr != 0 && info.length >= sizeof buf && info.lkey == 0);
    info.size = 4;
    CHECK_RC(regcache_mr_query(mr, &info), -EINVAL);

    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_destroy(c), 0);
    puts("sizes: ok");
    return 0;
}
