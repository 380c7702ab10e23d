/* Shared helpers of the C tests: CHECK() stops the test with the failing line and regcache's
 * last error message; each test is one program that exits 0 when it passes. */
#ifndef REGCACHE_TEST_CHECK_H
#define REGCACHE_TEST_CHECK_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <regcache.h>

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            char msg_[512];                                                                   \
            regcache_last_error(msg_, sizeof msg_);                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, msg_);                                                             \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

/* rc must equal want; prints both otherwise. */
#define CHECK_RC(call, want)                                                                  \
    do {                                                                                      \
        long rc_ = (long)(call);                                                              \
        if (rc_ != (long)(want)) {                                                            \
            char msg_[512];                                                                   \
            regcache_last_error(msg_, sizeof msg_);                                           \
            fprintf(stderr, "%s:%d: %s returned %ld (%s), want %ld (last error: %s)\n",       \
                    __FILE__, __LINE__, #call, rc_, rc_ < 0 ? strerror((int)-rc_) : "-",      \
                    (long)(want), msg_);                                                      \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static inline struct regcache_attr test_attr(uint32_t registrar, uint32_t monitor) {
    struct regcache_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.registrar = registrar;
    a.monitor = monitor;
    return a;
}

/* A cache on the software NIC with the monitor that auto picks. */
static inline struct regcache_cache *softnic_cache(uint64_t flags) {
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_SOFTNIC, REGCACHE_MONITOR_AUTO);
    a.softnic_slots = 256;
    a.flags = flags;
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);
    CHECK(c != NULL);
    return c;
}

static inline struct regcache_stats get_stats(struct regcache_cache *c) {
    struct regcache_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    CHECK_RC(regcache_stats(c, &s), 0);
    CHECK(s.size == sizeof s);
    return s;
}

static inline void *map_pages(void *hint, size_t len, int extra_flags) {
    void *p = mmap(hint, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags,
                   -1, 0);
    CHECK(p != MAP_FAILED);
    return p;
}

#endif
