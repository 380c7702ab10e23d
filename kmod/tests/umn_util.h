/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the ummunotify guest tests. */
#ifndef UMN_UTIL_H
#define UMN_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "../include/uapi/linux/ummunotify.h"

#define UMN_DEV "/dev/ummunotify"
#define PAGE ((size_t)sysconf(_SC_PAGESIZE))

static inline int umn_open_flags(int flags)
{
	int fd = open(UMN_DEV, O_RDONLY | O_CLOEXEC | flags);

	if (fd < 0) {
		fprintf(stderr, "  open %s: %s\n", UMN_DEV, strerror(errno));
		_exit(1);
	}
	return fd;
}

static inline int umn_open(void)
{
	return umn_open_flags(O_NONBLOCK);
}

static inline volatile uint64_t *umn_counter(int fd)
{
	void *p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "  mmap counter: %s\n", strerror(errno));
		_exit(1);
	}
	return p;
}

/* 0 or -1/errno, like the ioctl. */
static inline int umn_reg(int fd, const void *start, size_t len,
			  uint64_t cookie)
{
	struct ummunotify_register_ioctl r = {
		.start = (uintptr_t)start,
		.end = (uintptr_t)start + len,
		.user_cookie = cookie,
	};

	return ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r);
}

static inline int umn_unreg(int fd, uint64_t cookie)
{
	return ioctl(fd, UMMUNOTIFY_UNREGISTER_REGION, &cookie);
}

static inline int umn_features(int fd, uint32_t want, uint32_t *got)
{
	uint32_t v = want;
	int ret = ioctl(fd, UMMUNOTIFY_EXCHANGE_FEATURES, &v);

	if (got)
		*got = v;
	return ret;
}

/* Number of records read (non-blocking fd), 0 if EAGAIN, -1 on error. */
static inline int umn_read(int fd, struct ummunotify_event *ev, int max)
{
	ssize_t n = read(fd, ev, max * sizeof(*ev));

	if (n < 0)
		return errno == EAGAIN ? 0 : -1;
	return n / sizeof(*ev);
}

static inline void *map_pages(size_t n, int populate)
{
	void *p = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0),
		       -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "  mmap %zu pages: %s\n", n, strerror(errno));
		_exit(1);
	}
	return p;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static inline long read_long_file(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/*
 * The number on the line "<key><sep>" of a keyed file: /proc/meminfo
 * ("SUnreclaim:   123 kB", sep ':') or a cgroup's memory.stat ("slab 123",
 * sep ' ').  0 and *out set, or -errno (*out untouched): the file's (open,
 * read), -ENODATA if no line has the key, -EINVAL if no number follows it,
 * -ERANGE if the number does not fit.
 */
static inline int read_keyed_long(const char *path, const char *key, char sep,
				  long *out)
{
	char line[256], *num, *end;
	size_t len = strlen(key);
	int at_start = 1, ret = -ENODATA, err;
	FILE *f = fopen(path, "r");
	long v;

	if (!f) {
		err = errno;
		return err > 0 ? -err : -EIO;
	}
	errno = 0;
	while (fgets(line, sizeof(line), f)) {
		/* Only the start of a line (a long one takes several reads). */
		int match = at_start && !strncmp(line, key, len) &&
			    line[len] == sep;

		at_start = !!strchr(line, '\n');
		if (!match)
			continue;
		num = line + len + 1;
		errno = 0;
		v = strtol(num, &end, 10);
		if (end == num) {
			ret = -EINVAL;
		} else if (errno == ERANGE) {
			ret = -ERANGE;
		} else {
			*out = v;
			ret = 0;
		}
		break;
	}
	err = errno;
	if (ret == -ENODATA && ferror(f))
		ret = err > 0 ? -err : -EIO;
	fclose(f);
	return ret;
}

#define MEMINFO "/proc/meminfo"

#define UMN_SLAB_DIR "/sys/kernel/slab/ummunotify_region"

/* An attribute of the module's slab cache ("object_size", ...), or -1. */
static inline long umn_slab_attr(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), UMN_SLAB_DIR "/%s", name);
	return read_long_file(path);
}

static inline int write_str_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	int ret;

	if (!f)
		return -1;
	ret = fputs(s, f) < 0 ? -1 : 0;
	if (fclose(f))
		ret = -1;
	return ret;
}

#define MAX_REGIONS "/sys/module/ummunotify/parameters/max_regions"
#define MAX_USER_REGIONS "/sys/module/ummunotify/parameters/max_user_regions"
#define MAX_MM_REGIONS "/sys/module/ummunotify/parameters/max_mm_regions"
#define UMN_DEBUGFS "/sys/kernel/debug/ummunotify"
#define LIVE_REGIONS_DEBUGFS UMN_DEBUGFS "/live_regions"
#define LIVE_REGIONS_PARAM "/sys/module/ummunotify/parameters/live_regions"

/* The live count is in debugfs; mounts debugfs if needed (root). */
static inline int umn_debugfs_mounted(void)
{
	if (access(UMN_DEBUGFS, F_OK) == 0)
		return 1;
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	return access(UMN_DEBUGFS, F_OK) == 0;
}

/* Path of the live count (a module older than issue 12: a parameter). */
static inline const char *umn_live_regions_path(void)
{
	return umn_debugfs_mounted() ? LIVE_REGIONS_DEBUGFS : LIVE_REGIONS_PARAM;
}

#define LIVE_REGIONS umn_live_regions_path()

/* Writes a number to a parameter file; 0 or -1. */
static inline int write_long_file(const char *path, long v)
{
	char s[32];

	snprintf(s, sizeof(s), "%ld", v);
	return write_str_file(path, s);
}

/* Passes fd over a unix socket (SCM_RIGHTS); 0 on success. */
static inline int umn_send_fd(int sock, int fd)
{
	char data = 'x';
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

/* Receives an fd sent by umn_send_fd(); -1 on failure. */
static inline int umn_recv_fd(int sock)
{
	char data;
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(sock, &msg, 0) != 1)
		return -1;
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

#endif /* UMN_UTIL_H */
