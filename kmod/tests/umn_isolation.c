// SPDX-License-Identifier: GPL-2.0
/*
 * Isolation: an fd works only in the address space that opened it.  A fork
 * child, or a process that received the fd over a Unix socket, gets EIO
 * from every ioctl, read, mmap and O_ASYNC change (fcntl F_SETFL, ioctl
 * FIOASYNC), and nothing of the opener's state moves.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include "harness.h"
#include "umn_util.h"

/* Every fd operation from another mm: EIO, nothing changed.  0 if so. */
static int foreign_ops_fail_eio(int fd, const void *p)
{
	struct ummunotify_event ev[2];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint32_t f = UMMUNOTIFY_FEATURE_FILTER;
	int fl, on;

	errno = 0;
	if (umn_reg(fd, p, PAGE, 77) != -1 || errno != EIO)
		return 1;
	if (umn_unreg(fd, 1) != -1 || errno != EIO)
		return 2;
	if (ioctl(fd, UMMUNOTIFY_EXCHANGE_FEATURES, &f) != -1 || errno != EIO)
		return 3;
	if (read(fd, ev, sizeof(ev)) != -1 || errno != EIO)
		return 4;
	if (mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED ||
	    errno != EIO)
		return 5;
	if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLERR))
		return 6;
	if (ioctl(fd, 0x5401, NULL) != -1 || errno != EIO)
		return 7;
	/* fasync: no SIGIO for the opener's invalidations (issue 12, 11). */
	fl = fcntl(fd, F_GETFL);
	if (fcntl(fd, F_SETFL, fl ^ O_ASYNC) != -1 || errno != EIO)
		return 8;
	if (fcntl(fd, F_GETFL) != fl)
		return 9;
	on = !(fl & O_ASYNC);
	if (ioctl(fd, FIOASYNC, &on) != -1 || errno != EIO)
		return 10;
	if (fcntl(fd, F_GETFL) != fl)
		return 11;
	return 0;
}

static int run_in_child(int fd, const void *p)
{
	pid_t pid = fork();
	int st;

	if (!pid)
		_exit(foreign_ops_fail_eio(fd, p));
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

TEST(fork_child_gets_eio_on_every_operation)
{
	int fd = umn_open();
	char *p = map_pages(1, 1);

	ASSERT_EQ(run_in_child(fd, p), 0);
}

TEST(fork_child_attempts_leave_parent_state_untouched)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	volatile uint64_t *c = umn_counter(fd);
	char *p = map_pages(1, 1);
	long live;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	live = read_long_file(LIVE_REGIONS);
	ASSERT_EQ(run_in_child(fd, p), 0);
	ASSERT_EQ(read_long_file(LIVE_REGIONS), live);
	ASSERT_EQ(*c, 1);
	/* The child could not consume the parent's event. */
	ASSERT_EQ(umn_read(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 1);
	ASSERT_EQ(umn_unreg(fd, 1), 0);
}

TEST(fork_child_features_attempt_does_not_change_parent)
{
	int fd = umn_open();
	char *p = map_pages(2, 1);
	struct ummunotify_event ev[4];
	uint32_t got;

	ASSERT_EQ(run_in_child(fd, p), 0);
	/* Parent may still negotiate: the child's attempt did nothing. */
	ASSERT_EQ(umn_features(fd, 0, &got), 0);
	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 1), 0);
	ASSERT_EQ(mprotect(p, PAGE, PROT_READ), 0);
	ASSERT_EQ(umn_read(fd, ev, 4), 2);
}

TEST(fork_child_mappings_do_not_report_to_parent_fd)
{
	struct ummunotify_event ev[4];
	int fd = umn_open();
	char *p = map_pages(1, 1);
	pid_t pid;
	int st;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 1), 0);
	ASSERT_EQ(umn_read(fd, ev, 4), 0);
	pid = fork();
	if (!pid) {
		munmap(p, PAGE);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	/*
	 * fork() write-protected the parent's page (an event for the parent,
	 * without FILTER); the child's munmap is in another mm: nothing more.
	 */
	umn_read(fd, ev, 4);
	p[0] = 1;	/* the page is still the parent's */
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(umn_read(fd, ev, 4), 2);
}

TEST(fd_passed_over_unix_socket_gets_eio)
{
	int sv[2], fd, st;
	char *p = map_pages(1, 1);
	pid_t pid;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		/* The child opens and hands its fd to the parent. */
		int cfd = umn_open();
		char *q = map_pages(1, 1);

		if (umn_reg(cfd, q, PAGE, 1))
			_exit(1);
		if (umn_send_fd(sv[1], cfd))
			_exit(2);
		/* Wait for the parent to be done. */
		if (read(sv[1], &st, 1) != 1)
			_exit(3);
		_exit(0);
	}
	fd = umn_recv_fd(sv[0]);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(foreign_ops_fail_eio(fd, p), 0);
	ASSERT_EQ(write(sv[0], "x", 1), 1);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The opener is gone; the fd is still EIO here, close cleans up. */
	ASSERT_EQ(foreign_ops_fail_eio(fd, p), 0);
	ASSERT_EQ(close(fd), 0);
}

TEST(fd_sent_to_other_process_still_works_for_opener)
{
	struct ummunotify_event ev[4];
	int sv[2], fd = umn_open(), st;
	char *p = map_pages(1, 1);
	pid_t pid;

	ASSERT_EQ(umn_reg(fd, p, PAGE, 3), 0);
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		int r;

		close(fd);
		r = umn_recv_fd(sv[1]);
		if (r < 0)
			_exit(1);
		_exit(foreign_ops_fail_eio(r, p));
	}
	ASSERT_EQ(umn_send_fd(sv[0], fd), 0);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(umn_read(fd, ev, 4), 2);
	ASSERT_EQ(ev[0].user_cookie_counter, 3);
}

static void *thread_ops(void *arg)
{
	int fd = *(int *)arg;
	char *p = map_pages(1, 1);
	long ok;

	ok = umn_reg(fd, p, PAGE, 9) == 0 && munmap(p, PAGE) == 0 &&
	     umn_unreg(fd, 9) == 0;
	return (void *)ok;
}

TEST(threads_of_the_opener_may_use_the_fd)
{
	int fd = umn_open();
	pthread_t t;
	void *ok;

	ASSERT_EQ(pthread_create(&t, NULL, thread_ops, &fd), 0);
	ASSERT_EQ(pthread_join(t, &ok), 0);
	ASSERT_EQ((long)ok, 1);
}

TEST(exec_after_fork_gets_eio)
{
	int fd = umn_open(), st;
	char cmd[256];
	pid_t pid;

	/* Keep the fd across exec; dd reads it as its stdin. */
	ASSERT_EQ(fcntl(fd, F_SETFD, 0), 0);
	snprintf(cmd, sizeof(cmd),
		 "dd bs=32 count=1 <&%d 2>&1 >/dev/null | "
		 "grep -q 'Input/output error'", fd);
	pid = fork();
	if (!pid) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
}

static volatile sig_atomic_t sigios;

static void count_sigio(int sig)
{
	sigios++;
}

/*
 * A process that received the fd cannot subscribe to SIGIO (F_SETOWN to
 * itself, then O_ASYNC): EIO, and the opener's invalidations signal nobody.
 * Nor can it turn off the opener's own subscription.
 */
TEST(fd_passed_over_unix_socket_gets_no_sigio)
{
	int sv[2], fd = umn_open(), st;
	char *p = map_pages(2, 1);
	pid_t pid;

	signal(SIGIO, count_sigio);
	ASSERT_EQ(umn_reg(fd, p, 2 * PAGE, 3), 0);
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		struct ummunotify_event ev[4];
		int r, i, res;

		close(fd);
		close(sv[0]);
		r = umn_recv_fd(sv[1]);
		if (r < 0)
			_exit(1);
		if (fcntl(r, F_SETOWN, getpid()))
			_exit(2);
		res = fcntl(r, F_SETFL, fcntl(r, F_GETFL) | O_ASYNC);
		if (res != -1 || errno != EIO)
			_exit(3);
		if (write(sv[1], "r", 1) != 1)	/* the parent may munmap */
			_exit(4);
		if (read(sv[1], ev, 1) != 1)	/* it did */
			_exit(5);
		for (i = 0; i < 50 && !sigios; i++)
			usleep(10000);
		_exit(sigios ? 6 : 0);
	}
	close(sv[1]);
	ASSERT_EQ(umn_send_fd(sv[0], fd), 0);
	ASSERT_EQ(read(sv[0], &st, 1), 1);
	ASSERT_EQ(munmap(p, PAGE), 0);
	ASSERT_EQ(write(sv[0], "x", 1), 1);
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);

	/* The opener subscribes; a foreign process cannot unsubscribe it. */
	ASSERT_EQ(fcntl(fd, F_SETOWN, getpid()), 0);
	ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC), 0);
	pid = fork();
	if (!pid) {
		int fl = fcntl(fd, F_GETFL);

		if (fcntl(fd, F_SETFL, fl & ~O_ASYNC) != -1 || errno != EIO)
			_exit(1);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	ASSERT_TRUE(fcntl(fd, F_GETFL) & O_ASYNC);
	{
		struct ummunotify_event ev[4];

		ASSERT_TRUE(umn_read(fd, ev, 4) >= 0);	/* empty the queue */
	}
	sigios = 0;
	ASSERT_EQ(munmap(p + PAGE, PAGE), 0);
	for (st = 0; st < 100 && !sigios; st++)
		usleep(10000);
	ASSERT_NE(sigios, 0);
}
