/* fg_admin.c - /metrics, /healthz, /readyz over evhttp; see fg_admin.h. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "fg_addr.h"
#include "fg_admin.h"
#include "fg_error.h"
#include "fg_listener.h"

/* The backlog handed to listen(2): scrapes and probes, not clients. */
#define ADMIN_BACKLOG 128

struct fg_admin {
	struct evhttp *http;
	const struct fg_admin_source *src;
	struct evconnlistener *listener;        /* ours, owned by <http> once bound */
	int nlisteners;                         /* 1 once <listener> is bound: what <pause> may touch */
	struct fg_listener_pause *pause;        /* stops accepting a moment when out of descriptors */
};

/*
 * The endpoint of this process, for accept_error_cb only.  evhttp_bind_listener()
 * makes the listener's user pointer the struct evhttp (libevent 2.1 http.c:
 * evconnlistener_set_cb(listener, accept_socket_cb, http)), and the error
 * callback receives that same pointer; evhttp gives back nothing of ours
 * either, and hands an accepted socket to no public call, so we cannot keep
 * the accept loop ourselves.  Hence one endpoint per process, set and read
 * on main's loop only.
 */
static struct fg_admin *the_admin;

static int admin_method_ok(struct evhttp_request *req)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
		return 1;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	evhttp_send_error(req, 405, "read-only endpoint");
	return 0;
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *body)
{
	struct evbuffer *b = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
	if (b)
		evbuffer_add_printf(b, "%s\n", body);
	evhttp_send_reply(req, code, reason, b);
	if (b)
		evbuffer_free(b);
}

static void metrics_cb(struct evhttp_request *req, void *arg)
{
	struct fg_admin *a = arg;
	const struct fg_admin_source *s = a->src;
	struct evbuffer *b;

	if (!admin_method_ok(req))
		return;
	b = evbuffer_new();
	if (!b || fg_metrics_render(b, *s->cfg, s->blocks, *s->nblocks, s->proc) < 0) {
		evhttp_send_error(req, 500, "out of memory");
		if (b)
			evbuffer_free(b);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void healthz_cb(struct evhttp_request *req, void *arg)
{
	if (admin_method_ok(req))
		reply_text(req, 200, "OK", "ok");
}

static void readyz_cb(struct evhttp_request *req, void *arg)
{
	struct fg_admin *a = arg;

	if (!admin_method_ok(req))
		return;
	if (*a->src->not_ready)
		reply_text(req, 503, "Service Unavailable", "draining");
	else
		reply_text(req, 200, "OK", "ready");
}

/* Each connection's bufferevent, made here so its reading stops at
 * FG_ADMIN_MAX_INPUT (fg_admin.h); evhttp sets its socket. */
static struct bufferevent *admin_bev_cb(struct event_base *base, void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

	(void)arg;
	if (bev)
		bufferevent_setwatermark(bev, EV_READ, 0, FG_ADMIN_MAX_INPUT);
	return bev;
}

static void notfound_cb(struct evhttp_request *req, void *arg)
{
	if (admin_method_ok(req))
		reply_text(req, 404, "Not Found", "not found: try /metrics, /healthz or /readyz");
}

/* accept(2) failed on the admin socket.  <http> is evhttp's (see the_admin).
 * Without this callback libevent logs "Error from accept() call" and, on
 * EMFILE, retries at once for as long as the shortage lasts. */
static void accept_error_cb(struct evconnlistener *l, void *http)
{
	fg_listener_accept_failed(the_admin->pause, EVUTIL_SOCKET_ERROR());
}

/* Our own listener on the bound socket <fd> (taken), with accept_error_cb,
 * handed to <a>->http, which frees it (and closes <fd>) in evhttp_free.
 * Returns 0 or -ENOMEM; <fd> is closed on failure. */
static int admin_listen(struct fg_admin *a, struct event_base *base, int fd)
{
	struct evconnlistener *l;

	/* backlog 0: listen(2) was called already */
	l = evconnlistener_new(base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(l, accept_error_cb);
	if (!evhttp_bind_listener(a->http, l)) {
		evconnlistener_free(l);
		return -ENOMEM;
	}
	a->listener = l;
	a->nlisteners = 1;
	return 0;
}

static int admin_bind(struct fg_admin *a, struct event_base *base, const struct fg_config_addr *addr,
                      struct fg_config_addr *bound)
{
	int fd, one = 1;

	fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) < 0 || listen(fd, ADMIN_BACKLOG) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	if (bound) {
		*bound = *addr;
		bound->salen = sizeof(bound->sa);
		getsockname(fd, (struct sockaddr *)&bound->sa, &bound->salen);
		fg_addr_format((struct sockaddr *)&bound->sa, bound->text, sizeof(bound->text));
	}
	return admin_listen(a, base, fd);
}

struct fg_admin *fg_admin_new(struct event_base *base, const struct fg_config_addr *addr,
                              const struct fg_admin_source *src, struct fg_config_addr *bound,
                              char *err, size_t errlen)
{
	struct fg_admin *a;
	int rv;

	if (the_admin) {
		snprintf(err, errlen, "admin: one endpoint per process");
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a || !(a->http = evhttp_new(base))) {
		snprintf(err, errlen, "admin: out of memory");
		free(a);
		return NULL;
	}
	a->src = src;
	a->pause = fg_listener_pause_new(base, &a->listener, &a->nlisteners, "listener=admin", src->accept_paused);
	if (!a->pause) {
		snprintf(err, errlen, "admin: out of memory");
		fg_admin_free(a);
		return NULL;
	}
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	                                    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_timeout(a->http, 10);
	/* Read-only: no request needs a body, and a scrape's headers are a
	 * few hundred bytes.  Unbounded, libevent read whatever a client sent
	 * before answering: a 50 MiB header or a 200 MiB POST body took the
	 * daemon to 166 and 223 MB of RSS. */
	evhttp_set_max_headers_size(a->http, FG_ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(a->http, 0);
	evhttp_set_bevcb(a->http, admin_bev_cb, a);
	evhttp_set_cb(a->http, "/metrics", metrics_cb, a);
	evhttp_set_cb(a->http, "/healthz", healthz_cb, a);
	evhttp_set_cb(a->http, "/readyz", readyz_cb, a);
	evhttp_set_gencb(a->http, notfound_cb, a);
	rv = admin_bind(a, base, addr, bound);
	if (rv < 0) {
		snprintf(err, errlen, "admin.listen %s: %s", addr->text, strerror(-rv));
		fg_admin_free(a);
		return NULL;
	}
	the_admin = a;
	return a;
}

void fg_admin_free(struct fg_admin *a)
{
	if (!a)
		return;
	if (the_admin == a)
		the_admin = NULL;
	/* first: a pending resume must not outlive the listener evhttp_free frees */
	fg_listener_pause_free(a->pause);
	a->pause = NULL;
	evhttp_free(a->http);
	free(a);
}
