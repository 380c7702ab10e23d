/* In a fork() child the parent's cache is disabled (-ECHILD) and the child's exit leaves the
 * parent's registrations intact, on the software NIC and on a custom registrar (whose
 * callbacks would otherwise be asked to deregister the parent's registrations). */
#include "check.h"
#include <sys/wait.h>

static int regs, deregs;

static int count_reg(void *ctx, void *addr, size_t len, uint32_t access,
                     struct regcache_reg *out) {
    (void)ctx, (void)addr, (void)len, (void)access;
    out->lkey = out->rkey = (uint32_t)++regs;
    return 0;
}

static void count_dereg(void *ctx, void *addr, size_t len, const struct regcache_reg *reg) {
    (void)ctx, (void)addr, (void)len, (void)reg;
    deregs++;
}

static void custom_registrar_in_child(void) {
    struct regcache_registrar_ops ops = {.size = sizeof ops, .reg = count_reg, .dereg = count_dereg};
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_CUSTOM, REGCACHE_MONITOR_AUTO);
    a.ops = &ops;
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);
    char *buf = map_pages(NULL, 4 * 4096, 0);
    struct regcache_mr *mr = NULL;
    CHECK_RC(regcache_get(c, buf, 4096, 1, &mr), 0);
    CHECK_RC(regcache_release(mr), 0); /* cached, unused */
    CHECK_RC(regcache_get(c, buf + 8192, 4096, 1, &mr), 0); /* in use across the fork */
    CHECK(regs == 2 && deregs == 0);

    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        CHECK_RC(regcache_flush(c), -ECHILD);
        CHECK_RC(regcache_invalidate(c, buf, 4096), -ECHILD);
        CHECK_RC(regcache_release(mr), 0);
        CHECK_RC(regcache_destroy(c), 0);
        CHECK(regs == 2 && deregs == 0); /* nothing of the parent's was deregistered */
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(deregs == 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_destroy(c), 0);
    CHECK(regs == 2 && deregs == 2);
    munmap(buf, 4 * 4096);
}

int main(void) {
    struct regcache_cache *c = softnic_cache(0);
    size_t len = 4 * 4096;
    char *buf = map_pages(NULL, len, 0);
    memset(buf, 0, len);
    struct regcache_mr *mr = NULL;
    CHECK_RC(regcache_get(c, buf, len, 1, &mr), 0);

    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct regcache_mr *m2 = (struct regcache_mr *)0x1;
        CHECK_RC(regcache_get(c, buf, len, 1, &m2), -ECHILD);
        CHECK(m2 == NULL);
        CHECK_RC(regcache_softnic_dma_write(mr, buf, "c", 1), -ECHILD);
        struct regcache_stats s = get_stats(c);
        CHECK((s.flags & REGCACHE_STATS_CACHING) == 0 || 1); /* readable, whatever it says */
        /* Releasing and destroying in the child touch nothing of the parent's. */
        CHECK_RC(regcache_release(mr), 0);
        CHECK_RC(regcache_destroy(c), 0);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The parent's registration still works, and so does the cache. */
    CHECK_RC(regcache_softnic_dma_write(mr, buf + 4096, "parent", 6), 0);
    CHECK(memcmp(buf + 4096, "parent", 6) == 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_get(c, buf, len, 1, &mr), 0);
    struct regcache_stats s = get_stats(c);
    CHECK(s.hits == 1);
    CHECK_RC(regcache_release(mr), 0);
    CHECK_RC(regcache_destroy(c), 0);
    munmap(buf, len);

    custom_registrar_in_child();
    puts("fork: ok");
    return 0;
}
