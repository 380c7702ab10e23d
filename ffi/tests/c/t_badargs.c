/* Bad arguments are negative errno values, never a crash. */
#include "check.h"

#include <dlfcn.h>

static struct regcache_cache *create_rc(const struct regcache_attr *a, int want) {
    struct regcache_cache *c = (struct regcache_cache *)0x1; /* must be overwritten */
    CHECK_RC(regcache_create(a, &c), want);
    if (want != 0) CHECK(c == NULL);
    return c;
}

int main(void) {
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_SOFTNIC, REGCACHE_MONITOR_AUTO);
    struct regcache_cache *c = NULL;

    /* regcache_create */
    CHECK_RC(regcache_create(NULL, &c), -EINVAL);
    CHECK_RC(regcache_create(&a, NULL), -EINVAL);
    a.size = 0;
    create_rc(&a, -EINVAL);
    a.size = 15;
    create_rc(&a, -EINVAL);
    a.size = 1 << 20;
    create_rc(&a, -EINVAL);
    a = test_attr(0, REGCACHE_MONITOR_AUTO);
    create_rc(&a, -EINVAL); /* no registrar */
    a = test_attr(77, REGCACHE_MONITOR_AUTO);
    create_rc(&a, -EINVAL);
    a = test_attr(REGCACHE_REGISTRAR_SOFTNIC, 9);
    create_rc(&a, -EINVAL);
    a = test_attr(REGCACHE_REGISTRAR_SOFTNIC, REGCACHE_MONITOR_AUTO);
    a.flags = 1u << 7;
    create_rc(&a, -EINVAL);
    a.flags = 0;
    a.softnic_slots = 16385;
    create_rc(&a, -EINVAL);
    a.softnic_slots = 0;
    a.ops_context = &a; /* not CUSTOM */
    create_rc(&a, -EINVAL);
    a = test_attr(REGCACHE_REGISTRAR_VERBS_PD, REGCACHE_MONITOR_AUTO);
    create_rc(&a, -EINVAL); /* NULL pd */
    /* A library built with the verbs registrar (the Debian package's) links libibverbs and would
     * use the pd: only one without it can be handed any non-NULL pointer. */
    if (dlopen("libibverbs.so.1", RTLD_LAZY | RTLD_NOLOAD) == NULL) {
        a.pd = &a;
        create_rc(&a, -EOPNOTSUPP);
    } else {
        puts("libregcache has the verbs registrar: the -EOPNOTSUPP case does not apply");
    }
    if (access("/dev/ummunotify", F_OK) != 0) {
        a = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_UMMUNOTIFY);
        struct regcache_cache *u = NULL;
        int rc = regcache_create(&a, &u);
        CHECK(rc < 0 && u == NULL); /* an explicit monitor that is missing is an error */
    }

    /* A newer caller's struct: larger, with a zero tail (accepted) or not (rejected). */
    struct {
        struct regcache_attr attr;
        uint64_t future[3];
    } newer;
    memset(&newer, 0, sizeof newer);
    newer.attr = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_NONE);
    newer.attr.size = sizeof newer;
    c = create_rc(&newer.attr, 0);
    CHECK_RC(regcache_destroy(c), 0);
    newer.future[2] = 1;
    create_rc(&newer.attr, -EINVAL);
    /* An older caller's struct: just size, monitor and registrar. */
    a = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_NONE);
    a.size = 16;
    a.max_entries = 12345; /* beyond its size: ignored */
    c = create_rc(&a, 0);
    CHECK_RC(regcache_destroy(c), 0);

    /* regcache_get and friends */
    c = softnic_cache(0);
    size_t len = 4 * 4096;
    char *buf = map_pages(NULL, len, 0);
    struct regcache_mr *mr = (struct regcache_mr *)0x1;
    CHECK_RC(regcache_get(NULL, buf, 10, 0, &mr), -EINVAL);
    CHECK(mr == NULL);
    CHECK_RC(regcache_get(c, buf, 10, 0, NULL), -EINVAL);
    CHECK_RC(regcache_get(c, NULL, 10, 0, &mr), -EINVAL);
    CHECK_RC(regcache_get(c, buf, 0, 0, &mr), -EINVAL);
    CHECK_RC(regcache_get(c, (void *)(uintptr_t)-4096, 8192, 0, &mr), -EINVAL); /* overflow */
    CHECK_RC(regcache_get(c, buf, SIZE_MAX, 0, &mr), -EINVAL);
    CHECK_RC(regcache_get(c, buf, 10, 1u << 31, &mr), -EINVAL); /* unknown access bit */
    CHECK(regcache_last_error(NULL, 0) > 0);
    /* Foreign and misaligned handles. */
    CHECK_RC(regcache_get((struct regcache_cache *)(void *)buf, buf, 10, 0, &mr), -EINVAL);
    CHECK_RC(regcache_get((struct regcache_cache *)(void *)(buf + 1), buf, 10, 0, &mr), -EINVAL);
    CHECK_RC(regcache_release((struct regcache_mr *)(void *)c), -EINVAL);
    CHECK_RC(regcache_release(NULL), -EINVAL);
    CHECK_RC(regcache_mr_keys(NULL, NULL, NULL), -EINVAL);
    CHECK_RC(regcache_mr_query(NULL, NULL), -EINVAL);
    CHECK_RC(regcache_invalidate(NULL, buf, 10), -EINVAL);
    CHECK_RC(regcache_invalidate(c, NULL, 10), -EINVAL);
    CHECK_RC(regcache_invalidate(c, buf, 0), -EINVAL);
    CHECK_RC(regcache_invalidate(c, buf, SIZE_MAX), -EINVAL);
    CHECK_RC(regcache_flush(NULL), -EINVAL);
    CHECK_RC(regcache_stats(NULL, NULL), -EINVAL);
    CHECK_RC(regcache_stats(c, NULL), -EINVAL);
    CHECK_RC(regcache_destroy(NULL), -EINVAL);
    CHECK_RC(regcache_last_error(NULL, 10), -EINVAL);

    /* Memory that cannot be pinned: a PROT_NONE mapping. */
    char *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    int rc = regcache_get(c, none, 4096, 1, &mr);
    CHECK(rc < 0 && mr == NULL);
    munmap(none, 4096);

    /* DMA arguments. */
    CHECK_RC(regcache_get(c, buf, len, 1, &mr), 0);
    char x = 'x';
    CHECK_RC(regcache_softnic_dma_write(NULL, buf, &x, 1), -EINVAL);
    CHECK_RC(regcache_softnic_dma_write(mr, NULL, &x, 1), -EINVAL);
    CHECK_RC(regcache_softnic_dma_write(mr, buf, NULL, 1), -EINVAL);
    CHECK_RC(regcache_softnic_dma_write(mr, buf, &x, 0), -EINVAL);
    CHECK_RC(regcache_softnic_dma_write(mr, buf + len - 1, "xy", 2), -EINVAL);
    CHECK_RC(regcache_softnic_dma_read(mr, buf, NULL, 1), -EINVAL);
    CHECK_RC(regcache_mr_keys(mr, NULL, NULL), -EINVAL);
    CHECK_RC(regcache_release(mr), 0);

    /* DMA on a cache whose registrar is not the software NIC. */
    a = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_NONE);
    struct regcache_cache *noop = create_rc(&a, 0);
    CHECK_RC(regcache_get(noop, buf, len, 1, &mr), 0);
    CHECK_RC(regcache_softnic_dma_write(mr, buf, &x, 1), -EOPNOTSUPP);
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_destroy(noop), 0);

    CHECK_RC(regcache_destroy(c), 0);
    munmap(buf, len);
    puts("badargs: ok");
    return 0;
}
