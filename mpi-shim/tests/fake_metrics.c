// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * fake_metrics.c - a verbs program for tests/metrics-check.sh, run under the shim over
 * tests/fakeverbs.c: registers and deregisters one buffer ROUNDS times (ROUNDS - 1 hits), then,
 * given HOST:PORT, scrapes the shim's /metrics with a plain socket and checks that its hit
 * counter equals the shim's own count. Prints `hits=N` (the shim's count) and, when it
 * scraped, `metrics_hits=N`; exits 0 when every check passed.
 *   REGCACHE_SHIM_METRICS=127.0.0.1:PORT LD_PRELOAD=build/libregcache_shim.so \
 *       build/fake_metrics 127.0.0.1:PORT
 * With `--serve SECONDS` (exporter/tests/prometheus-e2e.sh, where Prometheus scrapes it), it
 * then keeps its counters moving for SECONDS: every 100 ms it maps a new buffer, registers it
 * three times (a miss, two hits) and once with an iova of its own (passed through to rdma-core
 * uncached), and unmaps it (an invalidation, a drain with an event).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "shim.h"

#define LEN (64 * 1024)
#define ROUNDS 10
#define HITS "regcache_lookups_total{result=\"hit\"} "

static char resp[1 << 16];

/* GETs /metrics from IPv4 HOST:PORT into resp; 0 on an HTTP 200 answer. */
static int scrape(const char *target)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const char *colon = strrchr(target, ':');
	const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	char host[64];
	size_t n = 0;
	ssize_t r;
	int fd;

	if (!colon || (size_t)(colon - target) >= sizeof(host))
		return -1;
	memcpy(host, target, (size_t)(colon - target));
	host[colon - target] = 0;
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	while (n + 1 < sizeof(resp) && (r = read(fd, resp + n, sizeof(resp) - 1 - n)) > 0)
		n += (size_t)r;
	resp[n] = 0;
	close(fd);
	return strncmp(resp, "HTTP/1.1 200 ", 13) ? -1 : 0;
}

/* Maps, registers (three times cached, once passed through) and unmaps a buffer every 100 ms
 * for `seconds`; 0 when every registration worked. */
static int serve(struct ibv_pd *pd, long seconds)
{
	const struct timespec tick = { .tv_nsec = 100 * 1000 * 1000 };
	struct ibv_mr *mr;
	char *b;

	for (long n = 0; n < seconds * 10; n++) {
		b = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b == MAP_FAILED)
			return 1;
		for (int i = 0; i < 3; i++) {
			mr = ibv_reg_mr(pd, b, LEN, IBV_ACCESS_LOCAL_WRITE);
			if (!mr || ibv_dereg_mr(mr)) {
				printf("serve: registration failed\n");
				return 1;
			}
		}
		/* iova != addr: not cacheable, the shim passes it through. */
		mr = ibv_reg_mr_iova(pd, b, LEN, 0x1000, IBV_ACCESS_LOCAL_WRITE);
		if (!mr || ibv_dereg_mr(mr)) {
			printf("serve: passthrough registration failed\n");
			return 1;
		}
		munmap(b, LEN);
		nanosleep(&tick, NULL);
	}
	return 0;
}

int main(int argc, char **argv)
{
	int (*counts)(struct shim_counts *) =
		(int (*)(struct shim_counts *))dlsym(RTLD_DEFAULT, "regcache_shim_counts");
	struct ibv_pd pd = { .context = (struct ibv_context *)&pd };
	struct shim_counts t;
	struct ibv_mr *mr;
	const char *line;
	char *buf;
	int i;

	if (!counts) {
		printf("not run under LD_PRELOAD=libregcache_shim.so\n");
		return 1;
	}
	buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 1;
	for (i = 0; i < ROUNDS; i++) {
		mr = ibv_reg_mr(&pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
		if (!mr || ibv_dereg_mr(mr)) {
			printf("registration %d failed\n", i);
			return 1;
		}
	}
	counts(&t);
	printf("hits=%llu enabled=%d\n", (unsigned long long)t.hits, t.enabled);
	if (argc > 2 && !strcmp(argv[1], "--serve")) {
		fflush(stdout);
		if (!t.enabled || t.hits != ROUNDS - 1)
			return 1;
		return serve(&pd, atol(argv[2]));
	}
	if (argc > 1) {
		if (scrape(argv[1])) {
			printf("cannot scrape http://%s/metrics\n", argv[1]);
			return 1;
		}
		line = strstr(resp, "\n" HITS);
		if (!line) {
			printf("no hit counter in /metrics:\n%s\n", resp);
			return 1;
		}
		printf("metrics_hits=%llu\n", strtoull(line + 1 + strlen(HITS), NULL, 10));
		if (strtoull(line + 1 + strlen(HITS), NULL, 10) != t.hits)
			return 1;
	}
	/* No ibv_dealloc_pd: the cache is still live when the exporter stops at exit. */
	return t.enabled && t.hits == ROUNDS - 1 ? 0 : 1;
}
