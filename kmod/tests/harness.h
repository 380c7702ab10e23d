/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A small kselftest-like harness for the ummunotify guest tests.
 *
 * TEST(name) { ... } defines one test, named after the behaviour it checks.
 * Each test runs in its own child process with a timeout; ASSERT_*() print
 * the failing line and end the test.  Output is TAP-like:
 *   ok 3 read_short_buffer_einval
 *   not ok 4 poll_reports_readable
 * and a last line "# N passed, M failed".  Arguments select tests by name.
 */
#ifndef UMN_HARNESS_H
#define UMN_HARNESS_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct umn_test {
	const char *name;
	void (*fn)(void);
	unsigned int timeout;
	struct umn_test *next;
};

static struct umn_test *umn_tests, **umn_tests_tail = &umn_tests;

static inline void umn_test_add(struct umn_test *t)
{
	*umn_tests_tail = t;
	umn_tests_tail = &t->next;
}

#define TEST_TIMEOUT(name, secs)					\
	static void name(void);						\
	static struct umn_test umn_t_##name = { #name, name, secs, NULL }; \
	__attribute__((constructor)) static void umn_reg_##name(void)	\
	{ umn_test_add(&umn_t_##name); }				\
	static void name(void)

#define TEST(name) TEST_TIMEOUT(name, 120)

#define UMN_SKIP_EXIT 4

#define FAIL(fmt, ...) do {						\
	fprintf(stderr, "  %s:%d: " fmt "\n", __FILE__, __LINE__,	\
		##__VA_ARGS__);						\
	fflush(NULL);							\
	_exit(1);							\
} while (0)

#define SKIP(fmt, ...) do {						\
	fprintf(stderr, "  skip: " fmt "\n", ##__VA_ARGS__);		\
	_exit(UMN_SKIP_EXIT);						\
} while (0)

#define ASSERT_TRUE(c) do {						\
	if (!(c))							\
		FAIL("ASSERT_TRUE(%s) (errno %d %s)", #c, errno,	\
		     strerror(errno));					\
} while (0)

#define ASSERT_EQ(a, b) do {						\
	long long _a = (long long)(a), _b = (long long)(b);		\
	if (_a != _b)							\
		FAIL("ASSERT_EQ(%s, %s): %lld != %lld (errno %d %s)",	\
		     #a, #b, _a, _b, errno, strerror(errno));		\
} while (0)

#define ASSERT_NE(a, b) do {						\
	long long _a = (long long)(a), _b = (long long)(b);		\
	if (_a == _b)							\
		FAIL("ASSERT_NE(%s, %s): both %lld", #a, #b, _a);	\
} while (0)

/* Expect a syscall-style call to fail with errno e. */
#define ASSERT_ERRNO(call, e) do {					\
	errno = 0;							\
	long _r = (long)(call);						\
	if (_r != -1 || errno != (e))					\
		FAIL("%s: got %ld errno %d (%s), want -1 errno %d (%s)", \
		     #call, _r, errno, strerror(errno), e, strerror(e)); \
} while (0)

static int umn_run_one(struct umn_test *t)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		alarm(t->timeout);
		t->fn();
		fflush(NULL);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	fprintf(stderr, "  %s: killed by signal %d%s\n", t->name,
		WTERMSIG(status),
		WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
	return -1;
}

static int umn_selected(const char *name, int argc, char **argv)
{
	int i;

	if (argc < 2)
		return 1;
	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	struct umn_test *t;
	int n = 0, passed = 0, failed = 0, rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "-l")) {
		for (t = umn_tests; t; t = t->next)
			printf("%s\n", t->name);
		return 0;
	}
	for (t = umn_tests; t; t = t->next) {
		if (!umn_selected(t->name, argc, argv))
			continue;
		rc = umn_run_one(t);
		n++;
		if (rc == 0) {
			passed++;
			printf("ok %d %s\n", n, t->name);
		} else if (rc == UMN_SKIP_EXIT) {
			passed++;
			printf("ok %d %s # SKIP\n", n, t->name);
		} else {
			failed++;
			printf("not ok %d %s\n", n, t->name);
		}
	}
	printf("# %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif /* UMN_HARNESS_H */
