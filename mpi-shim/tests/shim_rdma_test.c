// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * shim_rdma_test.c - a plain verbs program (ibv_reg_mr/ibv_dereg_mr only) that checks the
 * shim on a real device (rxe in vmtest/test-shim.sh):
 *   LD_PRELOAD=.../libregcache_shim.so shim_rdma_test [DEVICE]
 * One RC QP connected to itself; the same source buffer is registered, RDMA-written to a
 * destination buffer and deregistered ROUNDS times (the shim should serve all but the first
 * from its cache), then unmapped and mapped again at the same address with new contents: the
 * registration it gets must be fresh, i.e. the RDMA write must carry the new bytes.
 * Prints `N passed, M failed`; without the shim the hit checks are skipped.
 *
 *   shim_rdma_test --pair SERVER_DEVICE CLIENT_DEVICE
 * The same in two processes (a fork before any verbs call, so each has its own shim state,
 * cache and metrics): the client registers, RDMA-writes into the server's buffer and
 * deregisters ROUNDS times, and the server checks every round's bytes; then the munmap+mmap
 * round. The hits are the client's; the server registers its buffer once.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "shim.h"
#include "tap.h"

#define LEN (256 * 1024)
#define ROUNDS 50

#define DIE(...) do { \
	fprintf(stderr, __VA_ARGS__); \
	fprintf(stderr, "\n"); \
	printf("%d passed, %d failed\n", passed, failed + 1); \
	exit(1); \
} while (0)

struct rig {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qp;
	union ibv_gid gid;
	int gid_index;
	enum ibv_mtu mtu;
};

static int gid_index(struct ibv_context *ctx, union ibv_gid *gid)
{
	static const uint8_t v4[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	int i;

	for (i = 0; i < 16; i++)
		if (ibv_query_gid(ctx, 1, i, gid) == 0 && !memcmp(gid->raw, v4, sizeof(v4)))
			return i;
	if (ibv_query_gid(ctx, 1, 0, gid))
		DIE("ibv_query_gid failed");
	return 0;
}

static void setup(struct rig *r, const char *name)
{
	struct ibv_device **list = ibv_get_device_list(NULL);
	struct ibv_qp_init_attr init = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_recv_wr = 1, .max_send_sge = 1,
			 .max_recv_sge = 1 },
	};
	struct ibv_qp_attr a;
	struct ibv_port_attr port;
	int i;

	for (i = 0; list && list[i]; i++)
		if (!strcmp(ibv_get_device_name(list[i]), name))
			break;
	if (!list || !list[i])
		DIE("no device %s", name);
	r->ctx = ibv_open_device(list[i]);
	ibv_free_device_list(list);
	if (!r->ctx || ibv_query_port(r->ctx, 1, &port))
		DIE("cannot open %s", name);
	r->pd = ibv_alloc_pd(r->ctx);
	r->cq = ibv_create_cq(r->ctx, 8, NULL, NULL, 0);
	if (!r->pd || !r->cq)
		DIE("pd/cq");
	init.send_cq = init.recv_cq = r->cq;
	r->qp = ibv_create_qp(r->pd, &init);
	if (!r->qp)
		DIE("ibv_create_qp");
	r->gid_index = gid_index(r->ctx, &r->gid);
	r->mtu = port.active_mtu;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.port_num = 1;
	a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	if (ibv_modify_qp(r->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
			  IBV_QP_ACCESS_FLAGS))
		DIE("INIT");
}

/* RTR and RTS towards the peer QP (the rig's own for the one-process test). */
static void connect_qp(struct rig *r, uint32_t dest_qpn, union ibv_gid dgid)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = r->mtu;
	a.dest_qp_num = dest_qpn;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = dgid;
	a.ah_attr.grh.sgid_index = r->gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = 1;
	if (ibv_modify_qp(r->qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
			  IBV_QP_MIN_RNR_TIMER))
		DIE("RTR");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 18;	/* 1.07 s: 67 ms (14) expires spuriously in the emulated guest */
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	if (ibv_modify_qp(r->qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
			  IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))
		DIE("RTS");
}

/* RDMA-writes len bytes from src (mr) to dst (dmr); 0 on success. */
static int write_through(struct rig *r, struct ibv_mr *mr, void *src, struct ibv_mr *dmr,
			 void *dst, size_t len)
{
	struct ibv_sge sge = { .addr = (uintptr_t)src, .length = len, .lkey = mr->lkey };
	struct ibv_send_wr wr = {
		.sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = (uintptr_t)dst, .rkey = dmr->rkey },
	}, *bad;
	struct ibv_wc wc;
	int n;

	if (ibv_post_send(r->qp, &wr, &bad))
		return -1;
	do
		n = ibv_poll_cq(r->cq, 1, &wc);
	while (n == 0);
	if (n < 0 || wc.status != IBV_WC_SUCCESS) {
		fprintf(stderr, "completion: %s\n", n < 0 ? "poll failed" :
			ibv_wc_status_str(wc.status));
		return -1;
	}
	return 0;
}

static int all(const char *p, size_t len, int c)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != (char)c)
			return 0;
	return 1;
}

/* ---- two processes ---- */

/* What the peers tell each other over the socket pair. */
struct hello {
	uint32_t qpn;
	union ibv_gid gid;
	uint64_t addr;	/* the server's buffer */
	uint32_t rkey;
};

/* One round: the client wrote `fill` into the server's buffer (0: done, then counts). */
struct round {
	int fill;
	int passed, failed;	/* the client's, with fill 0 */
};

static void xfer(int fd, void *p, size_t len, int out)
{
	char *c = p;
	ssize_t n;

	while (len) {
		n = out ? write(fd, c, len) : read(fd, c, len);
		if (n <= 0)
			DIE("peer socket: %s", n ? "error" : "closed");
		c += n;
		len -= (size_t)n;
	}
}

static void pair_connect(struct rig *r, const char *dev, int fd, struct hello *me,
			 struct hello *peer)
{
	setup(r, dev);
	me->qpn = r->qp->qp_num;
	me->gid = r->gid;
	xfer(fd, me, sizeof(*me), 1);
	xfer(fd, peer, sizeof(*peer), 0);
	connect_qp(r, peer->qpn, peer->gid);
}

static void teardown(struct rig *r)
{
	ibv_destroy_qp(r->qp);
	ibv_destroy_cq(r->cq);
	CHECK(ibv_dealloc_pd(r->pd) == 0, "ibv_dealloc_pd (no registration left behind)");
	ibv_close_device(r->ctx);
}

/* The client: registers, writes into the server's buffer and deregisters, round by round. */
static int pair_client(const char *dev, int fd)
{
	int (*counts)(struct shim_counts *) =
		(int (*)(struct shim_counts *))dlsym(RTLD_DEFAULT, "regcache_shim_counts");
	int acc = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	struct shim_counts t0 = { 0 }, t1 = { 0 };
	struct hello me = { 0 }, peer;
	struct ibv_mr *mr, dmr = { 0 };
	struct round rd = { 0 };
	int i, ok = 1, keys_same = 1, verdict;
	uint32_t key = 0;
	char *src, *again;
	struct rig r;

	pair_connect(&r, dev, fd, &me, &peer);
	dmr.rkey = peer.rkey;	/* all write_through needs of the remote side */
	src = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		DIE("mmap");
	if (counts)
		counts(&t0);
	for (i = 0; i <= ROUNDS; i++) {
		if (i == ROUNDS) {
			/* Unmap, map again at the same address with new contents. */
			munmap(src, LEN);
			again = mmap(src, LEN, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (again != src)
				DIE("could not map again at %p", (void *)src);
		}
		rd.fill = i == ROUNDS ? 'Z' : 'a' + i % 26;
		memset(src, rd.fill, LEN);
		mr = ibv_reg_mr(r.pd, src, LEN, acc);
		if (!mr)
			DIE("ibv_reg_mr(src): %m");
		if (i == 0)
			key = mr->lkey;
		else if (i < ROUNDS)
			keys_same &= mr->lkey == key;
		if (write_through(&r, mr, src, &dmr, (void *)(uintptr_t)peer.addr, LEN))
			rd.fill = '?';	/* the server reports it as a bad round */
		xfer(fd, &rd, sizeof(rd), 1);
		xfer(fd, &verdict, sizeof(verdict), 0);
		if (i < ROUNDS) {
			ok &= verdict;
		} else {
			CHECK(verdict, "client: the RDMA write after munmap+mmap carries the new pages' bytes to the server");
			if (counts)
				CHECK(mr->lkey != key, "client: fresh lkey (%#x -> %#x)", key, mr->lkey);
		}
		if (ibv_dereg_mr(mr))
			ok = 0;
	}
	CHECK(ok, "client: %d rounds of reg, RDMA write to the server, checked there, dereg",
	      ROUNDS);
	if (counts) {
		counts(&t1);
		CHECK(t1.hits - t0.hits >= ROUNDS - 1 && keys_same,
		      "client: the shim served %llu of %d registrations from its cache",
		      (unsigned long long)(t1.hits - t0.hits), ROUNDS + 1);
		CHECK(t1.invalidated > t0.invalidated,
		      "client: the monitor invalidated the old registration");
	}
	teardown(&r);
	rd.fill = 0;
	rd.passed = passed;
	rd.failed = failed;
	xfer(fd, &rd, sizeof(rd), 1);
	return failed != 0;
}

/* The server: one registered buffer, every round's bytes checked. */
static int pair_server(const char *dev, int fd, pid_t client)
{
	int acc = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	struct hello me = { 0 }, peer;
	struct round rd;
	int rounds = 0, good = 0, verdict, status;
	struct ibv_mr *dmr;
	char *dst;
	struct rig r;

	dst = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		DIE("mmap");
	memset(&r, 0, sizeof(r));
	setup(&r, dev);
	dmr = ibv_reg_mr(r.pd, dst, LEN, acc);
	if (!dmr)
		DIE("ibv_reg_mr(dst): %m");
	me.qpn = r.qp->qp_num;
	me.gid = r.gid;
	me.addr = (uintptr_t)dst;
	me.rkey = dmr->rkey;
	xfer(fd, &me, sizeof(me), 1);
	xfer(fd, &peer, sizeof(peer), 0);
	connect_qp(&r, peer.qpn, peer.gid);
	for (;;) {
		xfer(fd, &rd, sizeof(rd), 0);
		if (!rd.fill)
			break;
		verdict = all(dst, LEN, rd.fill);
		rounds++;
		good += verdict;
		xfer(fd, &verdict, sizeof(verdict), 1);
	}
	CHECK(rounds == ROUNDS + 1 && good == rounds,
	      "server: %d of %d rounds arrived intact in the server's buffer", good, rounds);
	CHECK(ibv_dereg_mr(dmr) == 0, "server: dereg");
	teardown(&r);
	passed += rd.passed;
	failed += rd.failed;
	CHECK(waitpid(client, &status, 0) == client && WIFEXITED(status) &&
	      WEXITSTATUS(status) == (rd.failed != 0), "client exited cleanly");
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}

static int pair_main(const char *server_dev, const char *client_dev)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		DIE("socketpair: %m");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		DIE("fork: %m");
	if (pid == 0) {
		close(sv[0]);
		exit(pair_client(client_dev, sv[1]));
	}
	close(sv[1]);
	return pair_server(server_dev, sv[0], pid);
}

/* `len` (< 2 MiB - a page) bytes one page into a 2 MiB-aligned block of a fresh anonymous
 * mapping that contains the whole block. */
static char *inner(size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), huge = 2 << 20;
	char *p = mmap(NULL, len + 2 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		DIE("mmap");
	return (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1)) + pg;
}

int main(int argc, char **argv)
{
	int (*counts)(struct shim_counts *) =
		(int (*)(struct shim_counts *))dlsym(RTLD_DEFAULT, "regcache_shim_counts");
	int acc = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	struct shim_counts t0 = { 0 }, t1 = { 0 };
	struct ibv_mr *mr, *dmr;
	char *src, *dst, *again;
	int i, ok = 1, keys_same = 1;
	uint32_t key = 0;
	struct rig r;

	if (argc == 4 && !strcmp(argv[1], "--pair"))
		return pair_main(argv[2], argv[3]);
	setup(&r, argc > 1 ? argv[1] : "rxe0");
	connect_qp(&r, r.qp->qp_num, r.gid);
	/*
	 * Each buffer inside a larger mapping, as a heap buffer is: anything that changes the
	 * buffer's VMA flags (rdma-core's MADV_DONTFORK under fork protection) then splits the
	 * VMA, which the kernel reports for the whole 2 MiB block around each split point when
	 * that block lies inside the VMA.
	 */
	src = inner(LEN);
	dst = inner(LEN);
	dmr = ibv_reg_mr(r.pd, dst, LEN, acc);
	if (!dmr)
		DIE("ibv_reg_mr(dst): %m");
	if (counts)
		counts(&t0);

	for (i = 0; i < ROUNDS; i++) {
		memset(src, 'a' + i % 26, LEN);
		mr = ibv_reg_mr(r.pd, src, LEN, acc);
		if (!mr) {
			ok = 0;
			break;
		}
		if (i == 0)
			key = mr->lkey;
		keys_same &= mr->lkey == key;
		if (write_through(&r, mr, src, dmr, dst, LEN) || !all(dst, LEN, 'a' + i % 26))
			ok = 0;
		if (ibv_dereg_mr(mr))
			ok = 0;
	}
	CHECK(ok, "%d rounds of reg, RDMA write, verify, dereg", ROUNDS);
	if (counts) {
		counts(&t1);
		CHECK(t1.hits - t0.hits >= ROUNDS - 1 && keys_same,
		      "the shim served %llu of %d registrations from its cache",
		      (unsigned long long)(t1.hits - t0.hits), ROUNDS);
	}

	/* Unmap, map again at the same address with new contents. */
	munmap(src, LEN);
	again = mmap(src, LEN, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (again != src)
		DIE("could not map again at %p", (void *)src);
	memset(src, 'Z', LEN);
	mr = ibv_reg_mr(r.pd, src, LEN, acc);
	CHECK(mr != NULL, "registration after munmap+mmap");
	if (mr) {
		CHECK(write_through(&r, mr, src, dmr, dst, LEN) == 0 && all(dst, LEN, 'Z'),
		      "the RDMA write carries the new pages' bytes (not a stale registration)");
		if (counts)
			CHECK(mr->lkey != key, "fresh lkey (%#x -> %#x)", key, mr->lkey);
		CHECK(ibv_dereg_mr(mr) == 0, "dereg");
	}
	if (counts) {
		counts(&t1);
		CHECK(t1.invalidated > t0.invalidated, "the monitor invalidated the old registration");
	}
	CHECK(ibv_dereg_mr(dmr) == 0, "dereg dst");
	ibv_destroy_qp(r.qp);
	ibv_destroy_cq(r.cq);
	CHECK(ibv_dealloc_pd(r.pd) == 0, "ibv_dealloc_pd (no registration left behind)");
	ibv_close_device(r.ctx);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
