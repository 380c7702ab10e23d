// SPDX-License-Identifier: MIT OR Apache-2.0
/* shim_unit.c - the shim's wrapper pool (shim_pool.c): states, recognition by address, and
 * threads taking and giving back wrappers at once (each wrapper handed to one owner only). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

#define THREADS 4
#define ROUNDS 200000
#define HELD 256

static int passed, failed;

static void check(int ok, const char *what)
{
	ok ? passed++ : failed++;
	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
}

static int zeroed(const struct shim_mr *w)
{
	static const struct shim_mr zero;

	return !memcmp(w, &zero, sizeof(*w));
}

/* Each thread keeps up to HELD wrappers, stamped with its id and a sequence number, and
 * checks the stamp when it gives one back: a wrapper handed out twice is caught. */
static void *worker(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	struct shim_mr *held[HELD] = { 0 };
	unsigned int seed = (unsigned int)id + 1;
	long bad = 0;
	int i;

	for (i = 0; i < ROUNDS; i++) {
		int k = rand_r(&seed) % HELD;
		struct shim_mr *w = held[k];

		if (w) {
			if (w->mr.handle != (uint32_t)id || w->mr.lkey != (uint32_t)k ||
			    shim_pool_claim(w) != 1)
				bad++;
			shim_pool_put(w);
			held[k] = NULL;
		} else {
			w = shim_pool_get();
			if (!w || !zeroed(w)) {
				bad++;
				continue;
			}
			w->mr.handle = (uint32_t)id;
			w->mr.lkey = (uint32_t)k;
			held[k] = w;
		}
	}
	for (i = 0; i < HELD; i++) {
		if (held[i] && (shim_pool_claim(held[i]) != 1 || held[i]->mr.handle != id))
			bad++;
		if (held[i])
			shim_pool_put(held[i]);
	}
	return (void *)bad;
}

#define HANDOFF 10000

static struct shim_mr *handed[HANDOFF];

/* Another thread gives back what main took: its list overflows into the global one. */
static void *giver(void *arg)
{
	long bad = 0;
	int i;

	(void)arg;
	for (i = 0; i < HANDOFF; i++) {
		if (shim_pool_claim(handed[i]) != 1)
			bad++;
		shim_pool_put(handed[i]);
	}
	return (void *)bad;
}

static int cmp_ptr(const void *x, const void *y)
{
	uintptr_t a = *(const uintptr_t *)x, b = *(const uintptr_t *)y;

	return a < b ? -1 : a > b;
}

/* Takes HANDOFF wrappers; 1 if they are all distinct and live. */
static int take_distinct(void)
{
	static struct shim_mr *sorted[HANDOFF];
	int i, ok = 1;

	for (i = 0; i < HANDOFF; i++) {
		handed[i] = shim_pool_get();
		ok &= handed[i] && shim_pool_state(handed[i]) == 1;
	}
	if (!ok)
		return 0;
	memcpy(sorted, handed, sizeof(sorted));
	qsort(sorted, HANDOFF, sizeof(sorted[0]), cmp_ptr);
	for (i = 1; i < HANDOFF; i++)
		ok &= sorted[i] != sorted[i - 1];
	return ok;
}

int main(void)
{
	struct shim_mr *a, *b;
	pthread_t t[THREADS];
	long bad = 0;
	size_t carved;
	void *r;
	int x, i;

	a = shim_pool_get();
	b = shim_pool_get();
	check(a && b && a != b && zeroed(a) && zeroed(b), "two wrappers: distinct, zeroed");
	check(shim_pool_state(a) == 1 && shim_pool_live() == 2, "a new wrapper is live");
	check(shim_pool_state(&x) == -1 && shim_pool_claim(&x) == -1,
	      "an address outside the pool is not a wrapper");
	check(shim_pool_state((char *)a + 8) == -1 && shim_pool_claim((char *)a + 8) == -1,
	      "an address inside a wrapper is not a wrapper");
	check(shim_pool_claim(a) == 1 && shim_pool_claim(a) == 0,
	      "a wrapper is claimed once (a second ibv_dereg_mr is refused)");
	shim_pool_unclaim(a);
	check(shim_pool_state(a) == 1 && shim_pool_claim(a) == 1, "unclaim makes it live again");
	shim_pool_put(a);
	check(shim_pool_state(a) == 0 && shim_pool_claim(a) == 0 && shim_pool_live() == 1,
	      "a wrapper given back is not live, and cannot be claimed");
	a = shim_pool_get();
	check(a && zeroed(a) && shim_pool_state(a) == 1, "a wrapper taken again is zeroed and live");
	shim_pool_claim(a);
	shim_pool_put(a);
	shim_pool_claim(b);
	shim_pool_put(b);

	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
	for (i = 0; i < THREADS; i++) {
		pthread_join(t[i], &r);
		bad += (long)r;
	}
	check(bad == 0, "4 threads x 200000 get/put: every wrapper had one owner");
	check(shim_pool_live() == 0, "no wrapper live after every thread gave its wrappers back");

	/* Taken here, given back by another thread, taken again (from the global list). */
	check(take_distinct(), "10000 wrappers taken: distinct and live");
	pthread_create(&t[0], NULL, giver, NULL);
	pthread_join(t[0], &r);
	check(r == NULL && shim_pool_live() == 0, "another thread gave them all back");
	carved = shim_pool_carved();
	check(take_distinct(), "10000 taken again (from what the other thread gave back): distinct");
	check(shim_pool_carved() == carved, "... and no new slot carved for them");
	for (i = 0; i < HANDOFF; i++) {
		shim_pool_claim(handed[i]);
		shim_pool_put(handed[i]);
	}

	/* The exited threads' lists went back to the pool: taking many again reuses them. */
	for (i = 0; i < 1000 && (a = shim_pool_get()); i++)
		if (shim_pool_state(a) != 1)
			bad++;
	check(i == 1000 && bad == 0 && shim_pool_live() == 1000, "1000 more wrappers, all live");
	/* A fork() child takes and gives back wrappers (the pool's lock is not left held). */
	{
		pid_t pid = fork();
		int status = -1;

		if (pid == 0) {
			for (i = 0; i < 3 * HANDOFF; i++) {
				a = shim_pool_get();
				if (!a || shim_pool_claim(a) != 1)
					_exit(1);
				handed[i % HANDOFF] = a;
			}
			for (i = 0; i < HANDOFF; i++)
				shim_pool_put(handed[i]);
			_exit(0);
		}
		if (pid > 0)
			waitpid(pid, &status, 0);
		check(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "a fork() child takes 30000 wrappers and gives 10000 back");
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
