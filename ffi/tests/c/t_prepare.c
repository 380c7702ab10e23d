/* A custom registrar's optional prepare/settle: called around every attempt to register a
 * range the cache will watch (prepare before the watch, settle after reg returned, either way),
 * never for hits; both or neither; an older caller's smaller ops (without them) still works. */
#include "check.h"
#include <stddef.h>

struct trace {
    int prepares, settles, regs, fail_next;
    int open;          /* prepares not yet settled */
    int reg_open;      /* `open` seen by the last reg */
    void *addr;
    size_t len;
};

static void my_prepare(void *ctx, void *addr, size_t len) {
    struct trace *t = ctx;
    t->prepares++;
    t->open++;
    t->addr = addr;
    t->len = len;
}

static void my_settle(void *ctx, void *addr, size_t len) {
    struct trace *t = ctx;
    if (addr != t->addr || len != t->len) abort(); /* the same range as prepare */
    t->settles++;
    t->open--;
}

static int my_reg(void *ctx, void *addr, size_t len, uint32_t access, struct regcache_reg *out) {
    struct trace *t = ctx;
    (void)addr, (void)len, (void)access;
    t->reg_open = t->open;
    if (t->fail_next) {
        t->fail_next = 0;
        return -EFAULT;
    }
    t->regs++;
    out->lkey = out->rkey = (uint32_t)t->regs;
    out->token = 0;
    return 0;
}

static void my_dereg(void *ctx, void *addr, size_t len, const struct regcache_reg *reg) {
    (void)ctx, (void)addr, (void)len, (void)reg;
}

static struct regcache_cache *make(struct regcache_registrar_ops *ops, struct trace *t) {
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_CUSTOM, REGCACHE_MONITOR_AUTO);
    a.ops = ops;
    a.ops_context = t;
    struct regcache_cache *c = NULL;
    CHECK_RC(regcache_create(&a, &c), 0);
    return c;
}

int main(void) {
    struct trace t = {0};
    struct regcache_registrar_ops ops = {
        .size = sizeof ops, .reg = my_reg, .dereg = my_dereg, .prepare = my_prepare, .settle = my_settle};
    struct regcache_cache *c = make(&ops, &t);
    char *mem = map_pages(NULL, 8 * 4096, 0);
    struct regcache_mr *mr = NULL;

    /* A miss: prepare, reg inside it, settle after; page-aligned range. */
    CHECK_RC(regcache_get(c, mem + 100, 200, 1, &mr), 0);
    CHECK(t.prepares == 1 && t.settles == 1 && t.regs == 1 && t.reg_open == 1 && t.open == 0);
    CHECK(t.addr == mem && t.len == 4096);
    CHECK_RC(regcache_release(mr), 0);
    /* A hit: neither. */
    CHECK_RC(regcache_get(c, mem, 4096, 1, &mr), 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK(t.prepares == 1 && t.settles == 1 && t.regs == 1);
    /* A failed reg is settled too. */
    t.fail_next = 1;
    CHECK_RC(regcache_get(c, mem + 4 * 4096, 4096, 1, &mr), -EFAULT);
    CHECK(t.prepares >= 2 && t.prepares == t.settles && t.open == 0 && t.reg_open == 1);
    CHECK_RC(regcache_destroy(c), 0);

    /* Both or neither. */
    struct regcache_registrar_ops half = {
        .size = sizeof half, .reg = my_reg, .dereg = my_dereg, .prepare = my_prepare};
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_CUSTOM, REGCACHE_MONITOR_AUTO);
    a.ops = &half;
    a.ops_context = &t;
    c = NULL;
    CHECK_RC(regcache_create(&a, &c), -EINVAL);
    CHECK(c == NULL);

    /* A caller compiled before prepare/settle existed: its size ends at max_length. */
    struct trace old_t = {0};
    struct regcache_registrar_ops old = {.size = offsetof(struct regcache_registrar_ops, prepare),
                                         .reg = my_reg, .dereg = my_dereg,
                                         .prepare = my_prepare, .settle = my_settle};
    c = make(&old, &old_t);
    CHECK_RC(regcache_get(c, mem, 4096, 1, &mr), 0);
    CHECK_RC(regcache_release(mr), 0);
    CHECK(old_t.regs == 1 && old_t.prepares == 0 && old_t.settles == 0);
    CHECK_RC(regcache_destroy(c), 0);
    puts("prepare: ok");
    return 0;
}
