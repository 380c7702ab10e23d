// SPDX-License-Identifier: GPL-2.0
/*
 * The original 2010 umn-test scenario, using only the 2010 ABI (no
 * feature exchange): counter 0 after open, munmap of the middle of a
 * registered 3-page range bumps it to 1 and reports one INVAL with the hint
 * set to the middle page, followed by LAST with counter 1; after
 * unregistering, another munmap leaves the counter alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../include/uapi/linux/ummunotify.h"

#define CHECK(c) do {							\
	if (!(c)) {							\
		fprintf(stderr, "umn-test: %s:%d: %s failed (%s)\n",	\
			__FILE__, __LINE__, #c, strerror(errno));	\
		return 1;						\
	}								\
} while (0)

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	struct ummunotify_register_ioctl r;
	struct ummunotify_event ev[8];
	volatile uint64_t *counter;
	uint64_t cookie = 123;
	char *p;
	ssize_t n;
	int fd;

	fd = open("/dev/ummunotify", O_RDONLY);
	CHECK(fd >= 0);
	counter = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(counter != MAP_FAILED);
	CHECK(*counter == 0);

	p = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	CHECK(p != MAP_FAILED);
	memset(&r, 0, sizeof(r));
	r.start = (uintptr_t)p;
	r.end = (uintptr_t)p + 3 * page;
	r.user_cookie = cookie;
	CHECK(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r) == 0);

	CHECK(munmap(p + page, page) == 0);
	CHECK(*counter == 1);

	n = read(fd, ev, sizeof(ev));
	CHECK(n == 2 * (ssize_t)sizeof(ev[0]));
	CHECK(ev[0].type == UMMUNOTIFY_EVENT_TYPE_INVAL);
	CHECK(ev[0].user_cookie_counter == cookie);
	CHECK(ev[0].flags & UMMUNOTIFY_EVENT_FLAG_HINT);
	CHECK(ev[0].hint_start == (uintptr_t)p + page);
	CHECK(ev[0].hint_end == (uintptr_t)p + 2 * page);
	CHECK(ev[1].type == UMMUNOTIFY_EVENT_TYPE_LAST);
	CHECK(ev[1].user_cookie_counter == 1);

	CHECK(ioctl(fd, UMMUNOTIFY_UNREGISTER_REGION, &cookie) == 0);
	CHECK(munmap(p, page) == 0);
	CHECK(*counter == 1);

	munmap(p + 2 * page, page);
	close(fd);
	printf("umn-test: ok\n");
	return 0;
}
