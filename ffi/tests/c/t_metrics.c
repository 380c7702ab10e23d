/* The Prometheus exporter over the C ABI: /metrics over HTTP shows the cache's hits, several
 * caches are summed (and a destroyed one's counters stay), the textfile, the environment and
 * the rank offset, and bad arguments. */
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* GETs /metrics from "IP:PORT" (IPv4) into buf; returns the body (inside buf). */
static char *fetch(const char *addr, char *buf, size_t len) {
    char host[64];
    const char *colon = strrchr(addr, ':');
    CHECK(colon && (size_t)(colon - addr) < sizeof host);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    CHECK(inet_pton(AF_INET, host, &sa.sin_addr) == 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    size_t n = 0;
    for (;;) {
        CHECK(n + 1 < len);
        ssize_t r = read(fd, buf + n, len - 1 - n);
        CHECK(r >= 0);
        if (r == 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    close(fd);
    CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    char *body = strstr(buf, "\r\n\r\n");
    CHECK(body != NULL);
    return body + 4;
}

/* The value of the first sample line starting with `series` (e.g. `name{labels}`), or -1. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, series, n) == 0 && l[n] == ' ') return strtod(l + n + 1, NULL);
    }
    return -1;
}

#define HITS "regcache_lookups_total{result=\"hit\"}"

static char *read_file(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void hits(struct regcache_cache *c, char *buf, int times) {
    for (int i = 0; i < times; i++) {
        struct regcache_mr *mr;
        CHECK_RC(regcache_get(c, buf, 4096, 1, &mr), 0);
        CHECK_RC(regcache_release(mr), 0);
    }
}

/* A TCP socket bound to a loopback port the kernel picked; the port in *port. */
static int bind_loopback(int *port) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A free loopback TCP port (closed again: another process could take it meanwhile). */
static int free_port(void) {
    int port;
    close(bind_loopback(&port));
    return port;
}

static char page[1 << 16];

int main(void) {
    struct regcache_metrics *m = (struct regcache_metrics *)0x1, *m2;
    char addr[64], path[512];
    unsetenv("REGCACHE_METRICS_ADDR");
    unsetenv("REGCACHE_METRICS_TEXTFILE_DIR");

    /* Nothing asked for: success, no exporter. */
    CHECK_RC(regcache_metrics_start(NULL, "", &m), 0);
    CHECK(m == NULL);
    m = (struct regcache_metrics *)0x1;
    CHECK_RC(regcache_metrics_start(NULL, "off", &m), 0);
    CHECK(m == NULL);
    m = (struct regcache_metrics *)0x1;
    CHECK_RC(regcache_metrics_start(NULL, NULL, &m), 0); /* environment: unset */
    CHECK(m == NULL);

    /* HTTP on a port the kernel picks; the hits show up in /metrics. */
    struct regcache_cache *c = softnic_cache(0);
    char *buf = map_pages(NULL, 8 * 4096, 0);
    CHECK_RC(regcache_metrics_start(c, "127.0.0.1:0", &m), 0);
    CHECK(m != NULL);
    int n = regcache_metrics_address(m, addr, sizeof addr);
    CHECK(n > 10 && (size_t)n < sizeof addr && strncmp(addr, "127.0.0.1:", 10) == 0);
    CHECK(atoi(addr + 10) > 0);
    CHECK_RC(regcache_metrics_address(m, NULL, 0), n);
    char small[5];
    CHECK_RC(regcache_metrics_address(m, small, sizeof small), n); /* truncated */
    CHECK(strlen(small) == 4 && strncmp(small, addr, 4) == 0);
    CHECK_RC(regcache_metrics_textfile(m, path, sizeof path), 0); /* none */
    CHECK(path[0] == 0);
    hits(c, buf, 3);
    struct regcache_stats s = get_stats(c);
    CHECK(s.hits == 2);
    double h = sample(fetch(addr, page, sizeof page), HITS);
    printf("metrics at %s: %s %.0f (regcache_stats: %llu)\n", addr, HITS, h,
           (unsigned long long)s.hits);
    CHECK(h > 0 && h == (double)s.hits);
    CHECK(sample(page + 0, "regcache_caching") == 1);

    /* A second cache is summed in; a destroyed one's counters stay. */
    struct regcache_attr a = test_attr(REGCACHE_REGISTRAR_NOOP, REGCACHE_MONITOR_AUTO);
    struct regcache_cache *c2 = NULL;
    CHECK_RC(regcache_create(&a, &c2), 0);
    CHECK_RC(regcache_metrics_add(m, c2), 0);
    CHECK_RC(regcache_metrics_add(m, c2), -EEXIST);
    CHECK_RC(regcache_metrics_add(m, c), -EEXIST);
    hits(c2, buf + 4096, 4); /* 3 hits */
    h = sample(fetch(addr, page, sizeof page), HITS);
    printf("two caches: %s %.0f\n", HITS, h);
    CHECK(h == 5);
    CHECK_RC(regcache_destroy(c2), 0);
    h = sample(fetch(addr, page, sizeof page), HITS);
    CHECK(h == 5);
    CHECK(sample(page, "regcache_registered_entries") == 1); /* c's only */

    /* Textfile, rewritten every 100 ms and when stopped; one cache in two exporters. */
    char dir[] = "/tmp/regcache-ctest-metrics.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char spec[128];
    snprintf(spec, sizeof spec, "textfile=%s,interval=100ms", dir);
    CHECK_RC(regcache_metrics_start(NULL, spec, &m2), 0);
    CHECK(m2 != NULL);
    CHECK_RC(regcache_metrics_address(m2, addr + 0, sizeof addr), 0);
    n = regcache_metrics_textfile(m2, path, sizeof path);
    CHECK(n > (int)strlen(dir) && strncmp(path, dir, strlen(dir)) == 0);
    CHECK(strstr(path, ".prom") != NULL);
    struct stat st;
    CHECK(stat(path, &st) == 0); /* written at start */
    CHECK(sample(read_file(path, page, sizeof page), HITS) == 0);
    CHECK_RC(regcache_metrics_add(m2, c), 0);
    hits(c, buf, 1);
    CHECK_RC(regcache_metrics_stop(m2), 0); /* last write */
    s = get_stats(c);
    h = sample(read_file(path, page, sizeof page), HITS);
    printf("textfile %s: %s %.0f\n", path, HITS, h);
    CHECK(h == (double)s.hits && h == 3);
    unlink(path);
    rmdir(dir);
    CHECK_RC(regcache_metrics_stop(m), 0);

    /* The environment (spec NULL), and the local rank added to the port. */
    setenv("REGCACHE_METRICS_ADDR", "127.0.0.1:0", 1);
    CHECK_RC(regcache_metrics_start(c, NULL, &m), 0);
    CHECK(m != NULL && regcache_metrics_address(m, addr, sizeof addr) > 0);
    CHECK(sample(fetch(addr, page, sizeof page), HITS) == 3);
    CHECK_RC(regcache_metrics_stop(m), 0);
    unsetenv("REGCACHE_METRICS_ADDR");
    int port = free_port();
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_RANK", "7", 1);
    snprintf(spec, sizeof spec, ":%d", port - 1);
    CHECK_RC(regcache_metrics_start(c, spec, &m), 0);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK(regcache_metrics_address(m, addr, sizeof addr) > 0 && strcmp(addr, want) == 0);
#define RANK_HITS "regcache_lookups_total{rank=\"7\",local_rank=\"1\",result=\"hit\"}"
    CHECK(sample(fetch(addr, page, sizeof page), RANK_HITS) == 3);
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("OMPI_COMM_WORLD_RANK");

    /* Destroying a served cache first is allowed; its counters stay. */
    CHECK_RC(regcache_destroy(c), 0);
    CHECK(sample(fetch(addr, page, sizeof page), RANK_HITS) == 3);
    CHECK_RC(regcache_metrics_stop(m), 0);

    /* Bad arguments. */
    c = softnic_cache(0);
    CHECK_RC(regcache_metrics_start(c, "127.0.0.1:0", NULL), -EINVAL);
    m = (struct regcache_metrics *)0x1;
    CHECK_RC(regcache_metrics_start((struct regcache_cache *)(void *)buf, "1", &m), -EINVAL);
    CHECK(m == NULL);
    const char *bad[] = {"bogus", ":99999", "port=1", "1,2", "interval=0,:0", "/tmp/x", "\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = (struct regcache_metrics *)0x1;
        CHECK_RC(regcache_metrics_start(c, bad[i], &m), -EINVAL);
        CHECK(m == NULL);
    }
    char msg[512];
    regcache_metrics_start(c, ":99999", &m);
    regcache_last_error(msg, sizeof msg);
    printf("bad spec: %s\n", msg);
    CHECK(strstr(msg, "addr=\":99999\"") && strstr(msg, ":PORT") && !strchr(msg, '\n'));
    char *longspec = malloc(5000);
    CHECK(longspec != NULL);
    memset(longspec, 'a', 4999);
    longspec[4999] = 0;
    CHECK_RC(regcache_metrics_start(c, longspec, &m), -EINVAL);
    free(longspec);
    CHECK_RC(regcache_metrics_start(c, "textfile=/nonexistent/regcache", &m), -ENOENT);
    CHECK(m == NULL);
    /* A port in use. */
    int busy;
    int fd = bind_loopback(&busy);
    CHECK(listen(fd, 1) == 0);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", busy);
    CHECK_RC(regcache_metrics_start(c, spec, &m), -EADDRINUSE);
    CHECK(m == NULL);
    close(fd);
    /* Handles. */
    CHECK_RC(regcache_metrics_start(c, "127.0.0.1:0", &m), 0);
    CHECK_RC(regcache_metrics_add(NULL, c), -EINVAL);
    CHECK_RC(regcache_metrics_add(m, NULL), -EINVAL);
    CHECK_RC(regcache_metrics_add((struct regcache_metrics *)(void *)c, c), -EINVAL);
    CHECK_RC(regcache_metrics_add(m, (struct regcache_cache *)(void *)m), -EINVAL);
    CHECK_RC(regcache_metrics_address(NULL, addr, sizeof addr), -EINVAL);
    CHECK_RC(regcache_metrics_address(m, NULL, 5), -EINVAL);
    CHECK_RC(regcache_metrics_address((struct regcache_metrics *)(void *)c, addr, 8), -EINVAL);
    CHECK_RC(regcache_metrics_textfile(NULL, path, sizeof path), -EINVAL);
    CHECK_RC(regcache_metrics_textfile(m, NULL, 1), -EINVAL);
    CHECK_RC(regcache_metrics_stop(NULL), -EINVAL);
    CHECK_RC(regcache_metrics_stop((struct regcache_metrics *)(void *)c), -EINVAL);
    CHECK_RC(regcache_metrics_stop((struct regcache_metrics *)(void *)(buf + 1)), -EINVAL);
    CHECK_RC(regcache_metrics_stop(m), 0);
    CHECK_RC(regcache_destroy(c), 0);
    munmap(buf, 8 * 4096);
    puts("metrics: ok");
    return 0;
}
