/* fg_listener.c - SO_REUSEPORT listening sockets, the accept pause; see fg_listener.h. */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_addr.h"
#include "fg_clock.h"
#include "fg_error.h"
#include "fg_listener.h"
#include "fg_log.h"
#include "fg_metrics.h"

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

struct fg_listener_pause {
	struct event *resume_ev;                /* one-shot: ends the pause */
	struct evconnlistener *const *ls;       /* the owner's listeners (borrowed) */
	const int *nls;                         /* how many of <ls> are live; 0 once drained */
	uint64_t *npaused;                      /* the owner's pause counter (borrowed) */
	char who[FG_LISTENER_WHO_MAX];          /* "worker=3", "listener=admin": for the log line */
	uint64_t next_log_us;                   /* monotonic; failures before it are only counted */
	uint64_t unlogged;                      /* failures since the last accept_failed line */
};

/* The listeners are read here, not remembered at pause time: a drain may
 * have freed them since. */
static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_listener_pause *p = arg;
	int i;

	for (i = 0; i < *p->nls; i++)
		evconnlistener_enable(p->ls[i]);
}

struct fg_listener_pause *fg_listener_pause_new(struct event_base *base, struct evconnlistener *const *ls,
                                                const int *nls, const char *who, uint64_t *npaused)
{
	struct fg_listener_pause *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->resume_ev = evtimer_new(base, resume_cb, p);
	if (!p->resume_ev) {
		free(p);
		return NULL;
	}
	p->ls = ls;
	p->nls = nls;
	p->npaused = npaused;
	snprintf(p->who, sizeof(p->who), "%s", who);
	return p;
}

void fg_listener_pause_free(struct fg_listener_pause *p)
{
	if (!p)
		return;
	event_free(p->resume_ev);
	free(p);
}

static int is_shortage(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void pause_listeners(struct fg_listener_pause *p)
{
	struct timeval tv = {
		.tv_sec = FG_LISTENER_PAUSE_MS / 1000,
		.tv_usec = (FG_LISTENER_PAUSE_MS % 1000) * 1000,
	};
	int i;

	if (evtimer_pending(p->resume_ev, NULL))
		return;
	for (i = 0; i < *p->nls; i++)
		evconnlistener_disable(p->ls[i]);
	evtimer_add(p->resume_ev, &tv);
	fg_metrics_add(p->npaused, 1);
}

void fg_listener_accept_failed(struct fg_listener_pause *p, int err)
{
	uint64_t now = fg_clock_now_us();
	int shortage = is_shortage(err);

	if (shortage)
		pause_listeners(p);
	p->unlogged++;
	if (now < p->next_log_us)
		return;
	fg_log(FG_LOG_WARN, "accept_failed", "%s why=\"%s\" failures=%llu pause_ms=%d", p->who,
	       evutil_socket_error_to_string(err), (unsigned long long)p->unlogged,
	       shortage ? FG_LISTENER_PAUSE_MS : 0);
	p->unlogged = 0;
	p->next_log_us = now + (uint64_t)FG_LISTENER_LOG_EVERY_MS * 1000u;
}
