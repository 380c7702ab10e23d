/* Two threads hitting the same registration and their own ones concurrently. */
#include "check.h"
#include <pthread.h>

#define ROUNDS 20000
static struct regcache_cache *cache;
static char *shared_buf;
static uint32_t shared_lkey;

static void *worker(void *arg) {
    char *own = arg;
    uint32_t own_lkey = 0;
    for (int i = 0; i < ROUNDS; i++) {
        struct regcache_mr *mr = NULL;
        char *p = (i & 1) ? own : shared_buf;
        CHECK_RC(regcache_get(cache, p, 4096, 1, &mr), 0);
        uint32_t lkey;
        CHECK_RC(regcache_mr_keys(mr, &lkey, NULL), 0);
        if (p == shared_buf) {
            CHECK(lkey == shared_lkey);
        } else {
            if (own_lkey == 0) own_lkey = lkey;
            CHECK(lkey == own_lkey);
        }
        CHECK_RC(regcache_release(mr), 0);
    }
    return NULL;
}

int main(void) {
    cache = softnic_cache(0);
    char *mem = map_pages(NULL, 3 * 4096 * 4, 0);
    memset(mem, 0, 3 * 4096 * 4);
    shared_buf = mem;
    struct regcache_mr *mr = NULL;
    CHECK_RC(regcache_get(cache, shared_buf, 4096, 1, &mr), 0);
    CHECK_RC(regcache_mr_keys(mr, &shared_lkey, NULL), 0);
    CHECK_RC(regcache_release(mr), 0);

    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, worker, mem + (size_t)(i + 1) * 4 * 4096) == 0);
    for (int i = 0; i < 2; i++) CHECK(pthread_join(t[i], NULL) == 0);

    struct regcache_stats s = get_stats(cache);
    printf("hits %llu misses %llu\n", (unsigned long long)s.hits, (unsigned long long)s.misses);
    CHECK(s.hits + s.misses == 2 * ROUNDS + 1);
    CHECK(s.misses == 3 && s.cached_entries == 3);
    CHECK_RC(regcache_destroy(cache), 0);
    puts("threads: ok");
    return 0;
}
