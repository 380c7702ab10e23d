/* Application metrics over the C ABI (regcache_metrics_add_metric): a counter and a gauge read
 * through callbacks on the exporter's thread appear in the textfile, with the exporter's labels,
 * next to the cache's own series, at the next write and at the last one; bad names, kinds and
 * arguments are -EINVAL, names served already -EEXIST. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static _Atomic uint64_t hits = 42;
static _Atomic uint64_t state = 7;
static _Atomic unsigned calls;
static _Atomic int foreign_thread; /* a call came from a thread other than main's */
static pthread_t main_thread;

static uint64_t read_u64(void *ctx) {
    atomic_fetch_add(&calls, 1);
    if (!pthread_equal(pthread_self(), main_thread)) atomic_store(&foreign_thread, 1);
    return atomic_load((_Atomic uint64_t *)ctx);
}

static uint64_t read_const(void *ctx) {
    (void)ctx;
    return 1;
}

static char page[1 << 16];

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t n = fread(page, 1, sizeof page - 1, f);
    page[n] = 0;
    fclose(f);
    return page;
}

/* The value of the first sample line starting with `series` followed by a space, or -1. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, series, n) == 0 && l[n] == ' ') return strtod(l + n + 1, NULL);
    }
    return -1;
}

#define HITS "app_bridge_hits_total{rank=\"5\"}"
#define STATE "app_bridge_state{rank=\"5\"}"

int main(void) {
    main_thread = pthread_self();
    unsetenv("REGCACHE_METRICS_ADDR");
    unsetenv("REGCACHE_METRICS_TEXTFILE_DIR");
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    setenv("OMPI_COMM_WORLD_RANK", "5", 1); /* every series gets rank="5" */

    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_AUTO);
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);

    char dir[] = "/tmp/regcache-ctest-appmetrics.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char spec[128], path[512];
    snprintf(spec, sizeof spec, "textfile=%s,interval=100ms", dir);
    struct regcache_metrics *m = NULL;
    CHECK_RC(regcache_metrics_start(c, spec, &m), 0);
    CHECK(m != NULL);
    CHECK(regcache_metrics_textfile(m, path, sizeof path) > 0);
    CHECK(read_file(path) != NULL && strstr(page, "app_bridge") == NULL); /* the first write */

    CHECK_RC(regcache_metrics_add_metric(m, "app_bridge_hits", "UCX rcache hits (\\ bridged)",
                                         REGCACHE_METRIC_COUNTER, read_u64, (void *)&hits),
             0);
    CHECK_RC(regcache_metrics_add_metric(m, "app_bridge_state", NULL, REGCACHE_METRIC_GAUGE,
                                         read_u64, (void *)&state),
             0);

    /* The next periodic write has both, read on the exporter's thread. */
    int tries = 0;
    for (;; tries++) {
        CHECK(tries < 1000); /* 10 s */
        if (read_file(path) && sample(page, HITS) == 42 && sample(page, STATE) == 7) break;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    printf("after %d ms: %s 42, %s 7\n", tries * 10, HITS, STATE);
    CHECK(strstr(page, "# TYPE app_bridge_hits_total counter\n") != NULL);
    CHECK(strstr(page, "# HELP app_bridge_hits_total UCX rcache hits (\\\\ bridged)\n") != NULL);
    CHECK(strstr(page, "# TYPE app_bridge_state gauge\n") != NULL);
    CHECK(sample(page, "regcache_lookups_total{rank=\"5\",result=\"hit\"}") == 0);
    CHECK(atomic_load(&calls) >= 2 && atomic_load(&foreign_thread) == 1);

    /* Bad arguments: -EINVAL, with a message. */
    char msg[512];
    CHECK_RC(regcache_metrics_add_metric(NULL, "x", NULL, REGCACHE_METRIC_GAUGE, read_const, NULL),
             -EINVAL);
    CHECK_RC(regcache_metrics_add_metric((struct regcache_metrics *)(void *)c, "x", NULL,
                                         REGCACHE_METRIC_GAUGE, read_const, NULL),
             -EINVAL);
    CHECK_RC(regcache_metrics_add_metric(m, NULL, NULL, REGCACHE_METRIC_GAUGE, read_const, NULL),
             -EINVAL);
    CHECK_RC(regcache_metrics_add_metric(m, "x", NULL, REGCACHE_METRIC_GAUGE, NULL, NULL),
             -EINVAL);
    regcache_last_error(msg, sizeof msg);
    CHECK(strstr(msg, "regcache_metrics_add_metric") && strstr(msg, "read"));
    CHECK_RC(regcache_metrics_add_metric(m, "x", NULL, 2, read_const, NULL), -EINVAL);
    CHECK_RC(regcache_metrics_add_metric(m, "x", NULL, 0xffffffffu, read_const, NULL), -EINVAL);
    regcache_last_error(msg, sizeof msg);
    CHECK(strstr(msg, "kind"));
    const char *bad[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "x{a=\"1\"}", "\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(regcache_metrics_add_metric(m, bad[i], NULL, REGCACHE_METRIC_GAUGE, read_const,
                                             NULL),
                 -EINVAL);
    }
    regcache_last_error(msg, sizeof msg);
    printf("bad name: %s\n", msg);
    char name[200];
    memset(name, 'n', sizeof name);
    name[129] = 0; /* 129 bytes: too long */
    CHECK_RC(regcache_metrics_add_metric(m, name, NULL, REGCACHE_METRIC_GAUGE, read_const, NULL),
             -EINVAL);
    CHECK_RC(regcache_metrics_add_metric(m, "x_total", NULL, REGCACHE_METRIC_COUNTER, read_const,
                                         NULL),
             -EINVAL); /* the exposition adds _total */
    CHECK_RC(regcache_metrics_add_metric(m, "x", "two\nlines", REGCACHE_METRIC_GAUGE, read_const,
                                         NULL),
             -EINVAL);
    name[128] = 0; /* 128 bytes: the longest */
    CHECK_RC(regcache_metrics_add_metric(m, name, NULL, REGCACHE_METRIC_GAUGE, read_const, NULL),
             0);
    CHECK_RC(regcache_metrics_add_metric(m, "x_total", NULL, REGCACHE_METRIC_GAUGE, read_const,
                                         NULL),
             0); /* a gauge may end in _total */

    /* Names served already: -EEXIST. */
    CHECK_RC(regcache_metrics_add_metric(m, "app_bridge_hits", NULL, REGCACHE_METRIC_COUNTER,
                                         read_const, NULL),
             -EEXIST);
    regcache_last_error(msg, sizeof msg);
    printf("duplicate: %s\n", msg);
    CHECK(strstr(msg, "app_bridge_hits"));
    CHECK_RC(regcache_metrics_add_metric(m, "app_bridge_hits_total", NULL, REGCACHE_METRIC_GAUGE,
                                         read_const, NULL),
             -EEXIST);
    CHECK_RC(regcache_metrics_add_metric(m, "app_bridge_state", NULL, REGCACHE_METRIC_COUNTER,
                                         read_const, NULL),
             -EEXIST);
    CHECK_RC(regcache_metrics_add_metric(m, "x", NULL, REGCACHE_METRIC_COUNTER, read_const, NULL),
             -EEXIST); /* x_total, the gauge above */
    CHECK_RC(regcache_metrics_add_metric(m, "regcache_lookups", NULL, REGCACHE_METRIC_COUNTER,
                                         read_const, NULL),
             -EEXIST);
    CHECK_RC(regcache_metrics_add_metric(m, "regcache_caching", NULL, REGCACHE_METRIC_GAUGE,
                                         read_const, NULL),
             -EEXIST);

    /* New values: the last write, at stop, reads them. */
    atomic_store(&hits, 1000);
    atomic_store(&state, 3);
    CHECK_RC(regcache_metrics_stop(m), 0);
    unsigned after_stop = atomic_load(&calls);
    CHECK(read_file(path) != NULL);
    CHECK(sample(page, HITS) == 1000 && sample(page, STATE) == 3);
    CHECK(sample(page, "x_total{rank=\"5\"}") == 1);
    nanosleep(&(struct timespec){.tv_nsec = 300 * 1000 * 1000}, NULL);
    CHECK(atomic_load(&calls) == after_stop); /* never called after regcache_metrics_stop() */
    printf("after stop: %s 1000, %s 3 (%u reads)\n", HITS, STATE, after_stop);

    unlink(path);
    rmdir(dir);
    CHECK_RC(regcache_destroy(c), 0);
    unsetenv("OMPI_COMM_WORLD_RANK");
    puts("app_metrics: ok");
    return 0;
}
