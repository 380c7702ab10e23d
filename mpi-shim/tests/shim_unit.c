// SPDX-License-Identifier: MIT OR Apache-2.0
/* shim_unit.c - the shim's pointer set (wrapper bookkeeping) against a reference. */
#include <stdio.h>
#include <stdlib.h>

#include "shim.h"

#define N 5000

int main(void)
{
	static struct shim_set s = SHIM_SET_INIT;
	static char in[N];
	int passed = 0, failed = 0, ok = 1, i;
	unsigned int seed = 1;
	size_t live = 0;

	for (i = 0; i < 200000; i++) {
		int k = rand_r(&seed) % N;
		void *p = (void *)(uintptr_t)(0x10000 + 64 * (uintptr_t)k);

		if (rand_r(&seed) % 2) {
			if (shim_set_add(&s, p))
				ok = 0;
			live += !in[k];
			in[k] = 1;
		} else {
			if (shim_set_remove(&s, p) != in[k])
				ok = 0;
			live -= in[k];
			in[k] = 0;
		}
		if (shim_set_contains(&s, p) != in[k])
			ok = 0;
	}
	ok ? passed++ : failed++;
	printf("%s random add/remove/contains agree with a reference\n", ok ? "ok  " : "FAIL");
	ok = shim_set_size(&s) == live;
	ok ? passed++ : failed++;
	printf("%s size %zu == %zu, capacity %zu\n", ok ? "ok  " : "FAIL", shim_set_size(&s),
	       live, s.cap);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
