/*
 * fg_notify.c - sd_notify(3) by hand: one datagram to NOTIFY_SOCKET.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fg_error.h"
#include "fg_notify.h"

static void say(char *why, size_t whylen, const char *what, int err)
{
	if (whylen)
		snprintf(why, whylen, "%s: %s", what, strerror(err));
}

/* <path> as a sockaddr_un: "@name" is the abstract namespace (a leading
 * NUL), anything else an absolute path.  Returns the address length, or
 * -1 when it does not fit or is neither. */
static int address_of(const char *path, struct sockaddr_un *sun)
{
	size_t len = strlen(path);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (len < 2 || len >= sizeof(sun->sun_path) || (path[0] != '/' && path[0] != '@'))
		return -1;
	memcpy(sun->sun_path, path, len);
	if (path[0] == '@')
		sun->sun_path[0] = '\0';
	return (int)(offsetof(struct sockaddr_un, sun_path) + len);
}

int fg_notify_send(const char *state, char *why, size_t whylen)
{
	const struct timeval send_timeout = { 1, 0 };
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	size_t len = strlen(state);
	int fd, addrlen, err;
	ssize_t n;

	if (!path || !*path)
		return 0;
	addrlen = address_of(path, &sun);
	if (addrlen < 0) {
		if (whylen)
			snprintf(why, whylen, "NOTIFY_SOCKET is neither an absolute path nor @name");
		return FG_EINVAL;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		say(why, whylen, "socket", errno);
		return FG_EIO;
	}
	/* A full queue at the service manager waits a moment, no longer: a
	 * lost READY=1 would get the unit killed at its start timeout, a
	 * blocked main loop would stall reloads and stops. */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
	n = sendto(fd, state, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, (socklen_t)addrlen);
	err = errno;
	close(fd);
	if (n != (ssize_t)len) {
		say(why, whylen, "sendto NOTIFY_SOCKET", n < 0 ? err : EMSGSIZE);
		return FG_EIO;
	}
	return 0;
}

int fg_notify_reloading(const char *status, char *why, size_t whylen)
{
	char state[FG_NOTIFY_MAX];
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
	         (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000u, status);
	return fg_notify_send(state, why, whylen);
}
