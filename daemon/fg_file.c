/* fg_file.c - opening the files a configuration names; see fg_file.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fg_file.h"

/* <fd>, opened non-blocking, as a blocking descriptor when <ok> says its
 * type is fine; else closed, -1 and EINVAL. */
static int settle(int fd, int (*ok)(mode_t))
{
	struct stat st;
	int fl, err;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || (fl = fcntl(fd, F_GETFL)) < 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	if (!ok(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	if (fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

static int regular(mode_t m)
{
	return S_ISREG(m);
}

static int regular_or_device(mode_t m)
{
	return S_ISREG(m) || S_ISCHR(m);
}

int fg_file_open_read(const char *path)
{
	return settle(open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), regular);
}

int fg_file_open_append(const char *path, int flags, unsigned mode)
{
	flags &= O_CREAT | O_EXCL;
	return settle(open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | flags, (mode_t)mode),
	              regular_or_device);
}

const char *fg_file_why(int err)
{
	return err == EINVAL ? "not a regular file (a FIFO, a socket, a device or a directory)" : strerror(err);
}
