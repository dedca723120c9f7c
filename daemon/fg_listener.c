/* fg_listener.c - SO_REUSEPORT listening sockets; see fg_listener.h. */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fg_addr.h"
#include "fg_error.h"
#include "fg_listener.h"

/* Bind <a> without SO_REUSEPORT to prove nobody holds it, and learn the
 * real address into <bound>.  Returns 0 or an errno. */
static int probe(const struct fg_config_addr *a, struct fg_config_addr *bound)
{
	int fd, one = 1, err = 0;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	*bound = *a;
	bound->salen = sizeof(bound->sa);
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 || listen(fd, 1) < 0 ||
	    getsockname(fd, (struct sockaddr *)&bound->sa, &bound->salen) < 0)
		err = errno;
	close(fd);
	if (!err)
		fg_addr_format((struct sockaddr *)&bound->sa, bound->text, sizeof(bound->text));
	return err;
}

static int open_one(const struct fg_config_addr *a)
{
	int fd, one = 1;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 || listen(fd, FG_LISTENER_BACKLOG) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

int fg_listener_open(const struct fg_config *cfg, int nworkers, int *fds, struct fg_config_addr *bound,
                     char *err, size_t errlen)
{
	int i, w, n = cfg->nlisten, rv;

	for (i = 0; i < n * nworkers; i++)
		fds[i] = -1;
	for (i = 0; i < n; i++) {
		rv = probe(&cfg->listen[i], &bound[i]);
		if (rv) {
			snprintf(err, errlen, "listen %s: %s", cfg->listen[i].text, strerror(rv));
			goto fail_close_opened;
		}
		for (w = 0; w < nworkers; w++) {
			rv = open_one(&bound[i]);
			if (rv < 0) {
				snprintf(err, errlen, "listen %s: %s", bound[i].text, strerror(-rv));
				goto fail_close_opened;
			}
			fds[w * n + i] = rv;
		}
	}
	return 0;

fail_close_opened:
	for (i = 0; i < n * nworkers; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
	return FG_EIO;
}
