/*
 * ofi_churn_test: libfabric (verbs;ofi_rxm, RDM) send/recv of large messages from and into
 * churned buffers (munmap + mmap at the same address every message), each buffer registered with
 * fi_mr_reg (libfabric's MR cache on) and every received byte checked.
 *
 *   ofi_churn_test server|client MY_IP DIR [--msgs N] [--size BYTES] [--mode import|danger|plain]
 *
 * The server writes its endpoint name to DIR/server.addr; the client reads it. Modes:
 *   import  regcache_ofi_import(): ummunotify is libfabric's memory monitor (the bridge)
 *   danger  the bridge with valid() always true: the negative control (stale MRs expected)
 *   plain   libfabric's own monitor (FI_MR_CACHE_MONITOR decides)
 * Prints "ofi_churn_test: ROLE mode=M msgs=N bad=B reused=R" and exits 0 iff B == 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>

#include "../ofi_bridge.h"

#define CHECK(call)                                                                     \
	do {                                                                            \
		int rc_ = (call);                                                       \
		if (rc_) {                                                              \
			fprintf(stderr, "ofi_churn_test: %s: %s\n", #call, fi_strerror(-rc_)); \
			exit(2);                                                        \
		}                                                                       \
	} while (0)

static struct fid_cq *cq;

static void wait_cq(const char *what)
{
	struct fi_cq_entry e;
	for (;;) {
		ssize_t n = fi_cq_read(cq, &e, 1);
		if (n == 1)
			return;
		if (n == -FI_EAGAIN)
			continue;
		if (n == -FI_EAVAIL) {
			struct fi_cq_err_entry err = { 0 };
			fi_cq_readerr(cq, &err, 0);
			fprintf(stderr, "ofi_churn_test: %s failed: %s (prov %d)\n", what,
				fi_strerror(err.err), err.prov_errno);
			exit(2);
		}
		fprintf(stderr, "ofi_churn_test: fi_cq_read: %s\n", fi_strerror((int)-n));
		exit(2);
	}
}

static uint64_t pattern(unsigned msg, size_t word)
{
	return ((uint64_t)(msg + 1) << 40) ^ (word * 0x9E3779B97F4A7C15ULL);
}

int main(int argc, char **argv)
{
	unsigned msgs = 20, bad = 0, reused = 0;
	size_t size = 1 << 20;
	const char *mode = "import";
	struct fi_info *hints, *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_ep *ep;
	struct fi_cq_attr cq_attr = { .format = FI_CQ_FORMAT_CONTEXT };
	struct fi_av_attr av_attr = { .type = FI_AV_TABLE };
	char path[512], name[256];
	size_t namelen = sizeof(name);
	fi_addr_t peer = FI_ADDR_UNSPEC;
	void *prev = NULL;
	int server;

	if (argc < 4) {
		fprintf(stderr, "usage: %s server|client MY_IP DIR [--msgs N] [--size B] [--mode M]\n",
			argv[0]);
		return 2;
	}
	server = !strcmp(argv[1], "server");
	for (int i = 4; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--msgs"))
			msgs = (unsigned)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--size"))
			size = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--mode"))
			mode = argv[i + 1];
	}
	size &= ~(size_t)7;
	if (strcmp(mode, "plain")) {
		int rc = regcache_ofi_import();
		if (rc) {
			fprintf(stderr, "ofi_churn_test: regcache_ofi_import: %d\n", rc);
			return 2;
		}
		if (!strcmp(mode, "danger"))
			regcache_ofi_danger_ignore_invalidations(1);
	}

	hints = fi_allocinfo();
	hints->caps = FI_MSG;
	hints->ep_attr->type = FI_EP_RDM;
	hints->mode = FI_CONTEXT;
	hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	hints->fabric_attr->prov_name = strdup("verbs;ofi_rxm");
	CHECK(fi_getinfo(FI_VERSION(1, 13), argv[2], NULL, FI_SOURCE, hints, &info));
	fprintf(stderr, "ofi_churn_test: %s provider %s domain %s\n", argv[1],
		info->fabric_attr->prov_name, info->domain_attr->name);
	CHECK(fi_fabric(info->fabric_attr, &fabric, NULL));
	CHECK(fi_domain(fabric, info, &domain, NULL));
	CHECK(fi_cq_open(domain, &cq_attr, &cq, NULL));
	CHECK(fi_av_open(domain, &av_attr, &av, NULL));
	CHECK(fi_endpoint(domain, info, &ep, NULL));
	CHECK(fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV));
	CHECK(fi_ep_bind(ep, &av->fid, 0));
	CHECK(fi_enable(ep));

	snprintf(path, sizeof(path), "%s/server.addr", argv[3]);
	if (server) {
		char tmp[600];
		FILE *f;
		CHECK(fi_getname(&ep->fid, name, &namelen));
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		f = fopen(tmp, "w");
		if (!f || fwrite(name, 1, namelen, f) != namelen || fclose(f) || rename(tmp, path)) {
			perror("ofi_churn_test: writing the address");
			return 2;
		}
	} else {
		FILE *f = NULL;
		for (int i = 0; i < 600 && !(f = fopen(path, "r")); i++)
			usleep(100000);
		if (!f) {
			fprintf(stderr, "ofi_churn_test: no %s\n", path);
			return 2;
		}
		namelen = fread(name, 1, sizeof(name), f);
		fclose(f);
		if (fi_av_insert(av, name, 1, &peer, 0, NULL) != 1) {
			fprintf(stderr, "ofi_churn_test: fi_av_insert failed\n");
			return 2;
		}
	}

	for (unsigned m = 0; m < msgs; m++) {
		struct fi_context ctx;
		struct fid_mr *mr;
		uint64_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (buf == MAP_FAILED) {
			perror("mmap");
			return 2;
		}
		reused += (void *)buf == prev;
		prev = buf;
		for (size_t w = 0; w < size / 8; w++)
			buf[w] = server ? 0xdeadbeefdeadbeefULL : pattern(m, w);
		CHECK(fi_mr_reg(domain, buf, size, FI_SEND | FI_RECV, 0, 0, 0, &mr, NULL));
		if (server) {
			ssize_t r;
			while ((r = fi_recv(ep, buf, size, fi_mr_desc(mr), FI_ADDR_UNSPEC, &ctx)) ==
			       -FI_EAGAIN)
				fi_cq_read(cq, NULL, 0);
			CHECK((int)r);
			wait_cq("recv");
			size_t wrong = 0, first = 0;
			for (size_t w = 0; w < size / 8; w++)
				if (buf[w] != pattern(m, w) && !wrong++)
					first = w;
			if (wrong) {
				bad++;
				fprintf(stderr, "ofi_churn_test: message %u at %p: %zu of %zu words wrong, "
					"first [%zu] = %#llx\n", m, (void *)buf, wrong, size / 8, first,
					(unsigned long long)buf[first]);
			}
		} else {
			ssize_t r;
			while ((r = fi_send(ep, buf, size, fi_mr_desc(mr), peer, &ctx)) == -FI_EAGAIN)
				fi_cq_read(cq, NULL, 0);
			CHECK((int)r);
			wait_cq("send");
		}
		fi_close(&mr->fid); /* back to the cache: stays registered for later hits */
		munmap(buf, size);  /* the next mmap usually returns the same address */
	}
	if (!server) {
		/* Let the server's last receive finish before the client's QP goes away. */
		sleep(1);
	}
	printf("ofi_churn_test: %s mode=%s msgs=%u bad=%u reused=%u\n", argv[1], mode, msgs, bad,
	       reused);
	fflush(stdout);
	fi_close(&ep->fid);
	fi_close(&av->fid);
	fi_close(&cq->fid);
	fi_close(&domain->fid);
	fi_close(&fabric->fid);
	fi_freeinfo(info);
	fi_freeinfo(hints);
	return bad ? 1 : 0;
}
