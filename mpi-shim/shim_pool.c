// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * shim_pool.c - the wrappers (struct shim_mr) the shim hands out as struct ibv_mr *.
 *
 * Every cached registration makes a wrapper and every ibv_dereg_mr must tell the shim's
 * wrappers from rdma-core's MRs. A malloc'ed wrapper in a mutex-locked pointer set cost two
 * lock round trips and a malloc/free per reg+dereg pair, a third of the shim's hit (issue 13),
 * and made every registering thread take one global lock. Here the wrappers live in one
 * address range the shim reserves, so "is it ours" is a bounds and stride check on the
 * pointer (it never reads an MR the shim did not make), and a state word per slot says
 * whether it is live.
 *
 * - The range: POOL_RESERVE bytes of PROT_NONE address space (no memory), reserved at the
 *   first wrapper; made readable and writable POOL_CHUNK bytes at a time as wrappers are
 *   needed; never unmapped (a wrapper's address must stay recognisable while the program
 *   holds it, and a slot is reused, not returned).
 * - Free slots: each thread keeps a short list of its own (no lock, no atomic); it takes
 *   BATCH slots from the global list (or carves them from the range) under pool.lock when
 *   empty, and gives BATCH back when it holds more than 2 * BATCH. A thread's list goes back
 *   to the global one when the thread exits (pthread key destructor).
 * - States: FREE -> LIVE (shim_pool_get) -> CLAIMED (shim_pool_claim, in ibv_dereg_mr) ->
 *   FREE (shim_pool_put), or back to LIVE (shim_pool_unclaim, when the real deregistration
 *   failed and the program may retry). The claim is a compare-and-swap, so of two threads
 *   deregistering the same wrapper one wins and the other is told it is not a live wrapper.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "shim.h"

enum { FREE, LIVE, CLAIMED };

struct slot {
	struct shim_mr w;	/* first: the wrapper's address is the slot's */
	struct slot *next;	/* free list link while FREE */
	int state;		/* FREE, LIVE, CLAIMED; atomic */
};

#define SLOT sizeof(struct slot)
#define POOL_RESERVE ((size_t)256 << 20)	/* 3.3 million wrappers of 80 bytes */
#define POOL_RESERVE_SMALL ((size_t)8 << 20)	/* if the address space is limited */
#define POOL_CHUNK ((size_t)1 << 20)
#define BATCH 32

static struct {
	pthread_mutex_t lock;	/* free, bump, committed (its growth), the key */
	pthread_once_t once;
	pthread_key_t key;	/* only for its destructor: the exiting thread's list */
	uintptr_t base;		/* start of the range; 0 until reserved (atomic) */
	uintptr_t end;		/* end of the reservation */
	uintptr_t committed;	/* end of the usable part (atomic: read without the lock) */
	uintptr_t bump;		/* first slot never handed out */
	struct slot *free;	/* slots given back by threads */
	size_t live;		/* LIVE or CLAIMED slots, for tests (atomic) */
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.once = PTHREAD_ONCE_INIT,
};

static __thread struct slot *tls_free;
static __thread unsigned int tls_n;
static __thread int tls_keyed;

/* Gives a thread's whole list back (thread exit). */
static void give_back_all(void *unused)
{
	struct slot *s, *last = NULL;

	(void)unused;
	for (s = tls_free; s; s = s->next)
		last = s;
	if (!last)
		return;
	pthread_mutex_lock(&pool.lock);
	last->next = pool.free;
	pool.free = tls_free;
	pthread_mutex_unlock(&pool.lock);
	tls_free = NULL;
	tls_n = 0;
}

static void lock_for_fork(void)
{
	pthread_mutex_lock(&pool.lock);
}

static void unlock_after_fork(void)
{
	pthread_mutex_unlock(&pool.lock);
}

/* Once a process: the key, and fork handlers so that a child never starts with pool.lock
 * held by a thread it does not have (its first wrapper would wait forever). */
static void make_key(void)
{
	if (pthread_key_create(&pool.key, give_back_all))
		pool.key = (pthread_key_t)-1;
	pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
}

/* Makes sure this thread's list goes back when it exits (once a thread). */
static void keyed(void)
{
	if (tls_keyed)
		return;
	tls_keyed = 1;
	pthread_once(&pool.once, make_key);
	/* Any non-NULL value: the destructor runs only for those. */
	if (pool.key != (pthread_key_t)-1)
		pthread_setspecific(pool.key, &tls_keyed);
}

/* Reserves the range; lock held. 0 or -ENOMEM. */
static int reserve(void)
{
	size_t len = POOL_RESERVE;
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED) {
		len = POOL_RESERVE_SMALL;
		p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	}
	if (p == MAP_FAILED)
		return -ENOMEM;
	pool.end = (uintptr_t)p + len;
	pool.bump = (uintptr_t)p;
	pool.committed = (uintptr_t)p;
	/* Release: a reader that sees base sees end (committed has its own ordering). */
	__atomic_store_n(&pool.base, (uintptr_t)p, __ATOMIC_RELEASE);
	return 0;
}

/* Moves up to BATCH slots to this thread's list; lock held. 0 or -ENOMEM. */
static int refill_locked(void)
{
	unsigned int n;

	if (!pool.base && reserve())
		return -ENOMEM;
	for (n = 0; n < BATCH; n++) {
		struct slot *s = pool.free;

		if (s) {
			pool.free = s->next;
		} else {
			if (pool.bump + SLOT > pool.committed) {
				uintptr_t next = pool.committed + POOL_CHUNK;

				if (next > pool.end ||
				    mprotect((void *)pool.committed, POOL_CHUNK,
					     PROT_READ | PROT_WRITE))
					break;
				/* Release: shim_pool_claim reads it without the lock; the
				 * slots below it are then mapped for it. */
				__atomic_store_n(&pool.committed, next, __ATOMIC_RELEASE);
			}
			s = (struct slot *)pool.bump;
			pool.bump += SLOT;
		}
		s->next = tls_free;
		tls_free = s;
		tls_n++;
	}
	return n ? 0 : -ENOMEM;
}

struct shim_mr *shim_pool_get(void)
{
	struct slot *s;

	if (!tls_free) {
		int rc;

		keyed();
		pthread_mutex_lock(&pool.lock);
		rc = refill_locked();
		pthread_mutex_unlock(&pool.lock);
		if (rc)
			return NULL;
	}
	s = tls_free;
	tls_free = s->next;
	tls_n--;
	memset(&s->w, 0, sizeof(s->w));
	/* Relaxed: the program hands the wrapper to whichever thread deregisters it, and that
	 * hand-off orders this store before the claim; the count is only read by tests. */
	__atomic_store_n(&s->state, LIVE, __ATOMIC_RELAXED);
	__atomic_fetch_add(&pool.live, 1, __ATOMIC_RELAXED);
	return &s->w;
}

/* The slot at p, if p is a slot address in the usable part of the range. */
static struct slot *slot_of(const void *p)
{
	/* Acquire (both): pairs with the release stores in reserve() and refill_locked(), so a
	 * slot below `committed` is mapped here. */
	uintptr_t base = __atomic_load_n(&pool.base, __ATOMIC_ACQUIRE);
	uintptr_t a = (uintptr_t)p;

	if (!base || a < base || a >= __atomic_load_n(&pool.committed, __ATOMIC_ACQUIRE) ||
	    (a - base) % SLOT)
		return NULL;
	return (struct slot *)a;
}

int shim_pool_claim(const void *p)
{
	struct slot *s = slot_of(p);
	int live = LIVE;

	if (!s)
		return -1;
	/* Acquire: the wrapper's fields as the last unclaim (another thread) left them. */
	return __atomic_compare_exchange_n(&s->state, &live, CLAIMED, 0, __ATOMIC_ACQUIRE,
					   __ATOMIC_RELAXED);
}

int shim_pool_state(const void *p)
{
	struct slot *s = slot_of(p);

	if (!s)
		return -1;
	/* Relaxed: as in shim_pool_get; a wrapper deregistered concurrently is the program's
	 * error (ibv_rereg_mr and ibv_dereg_mr of one MR at once). */
	return __atomic_load_n(&s->state, __ATOMIC_RELAXED) == LIVE;
}

void shim_pool_unclaim(struct shim_mr *w)
{
	/* Release: pairs with the next claim's acquire. */
	__atomic_store_n(&((struct slot *)w)->state, LIVE, __ATOMIC_RELEASE);
}

void shim_pool_put(struct shim_mr *w)
{
	struct slot *s = (struct slot *)w;

	/* Relaxed: only this thread touches a FREE slot until it leaves this thread's list under
	 * the lock, which orders it. */
	__atomic_store_n(&s->state, FREE, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&pool.live, 1, __ATOMIC_RELAXED);
	keyed();
	s->next = tls_free;
	tls_free = s;
	if (++tls_n > 2 * BATCH) {
		struct slot *first = tls_free, *last = first;
		unsigned int n;

		for (n = 1; n < BATCH; n++)
			last = last->next;
		tls_free = last->next;
		tls_n -= BATCH;
		pthread_mutex_lock(&pool.lock);
		last->next = pool.free;
		pool.free = first;
		pthread_mutex_unlock(&pool.lock);
	}
}

size_t shim_pool_live(void)
{
	return __atomic_load_n(&pool.live, __ATOMIC_RELAXED);
}

size_t shim_pool_carved(void)
{
	size_t n;

	pthread_mutex_lock(&pool.lock);
	n = pool.base ? (pool.bump - pool.base) / SLOT : 0;
	pthread_mutex_unlock(&pool.lock);
	return n;
}
