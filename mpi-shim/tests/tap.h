// SPDX-License-Identifier: MIT OR Apache-2.0
/* The shim tests' result lines: CHECK() prints "ok   <what>" or "FAIL <what>" and counts. */
#ifndef REGCACHE_SHIM_TAP_H
#define REGCACHE_SHIM_TAP_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...) do { \
	int ok_ = !!(cond); \
	ok_ ? passed++ : failed++; \
	printf("%s", ok_ ? "ok   " : "FAIL "); \
	printf(__VA_ARGS__); \
	printf("\n"); \
} while (0)

#endif /* REGCACHE_SHIM_TAP_H */
