/* fg_admin.c - /metrics, /healthz, /readyz over evhttp; see fg_admin.h. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "fg_addr.h"
#include "fg_admin.h"
#include "fg_error.h"

struct fg_admin {
	struct evhttp *http;
	const struct fg_admin_source *src;
};

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

static void notfound_cb(struct evhttp_request *req, void *arg)
{
	if (admin_method_ok(req))
		reply_text(req, 404, "Not Found", "not found: try /metrics, /healthz or /readyz");
}

static int admin_bind(struct fg_admin *a, const struct fg_config_addr *addr, struct fg_config_addr *bound)
{
	struct evhttp_bound_socket *bs;
	int fd, one = 1;

	fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) < 0 || listen(fd, 128) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	bs = evhttp_accept_socket_with_handle(a->http, fd);
	if (!bs) {
		close(fd);
		return -ENOMEM;
	}
	if (bound) {
		*bound = *addr;
		bound->salen = sizeof(bound->sa);
		getsockname(fd, (struct sockaddr *)&bound->sa, &bound->salen);
		fg_addr_format((struct sockaddr *)&bound->sa, bound->text, sizeof(bound->text));
	}
	return 0;
}

struct fg_admin *fg_admin_new(struct event_base *base, const struct fg_config_addr *addr,
                              const struct fg_admin_source *src, struct fg_config_addr *bound,
                              char *err, size_t errlen)
{
	struct fg_admin *a = calloc(1, sizeof(*a));
	int rv;

	if (!a || !(a->http = evhttp_new(base))) {
		snprintf(err, errlen, "admin: out of memory");
		free(a);
		return NULL;
	}
	a->src = src;
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	                                    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_timeout(a->http, 10);
	evhttp_set_cb(a->http, "/metrics", metrics_cb, a);
	evhttp_set_cb(a->http, "/healthz", healthz_cb, a);
	evhttp_set_cb(a->http, "/readyz", readyz_cb, a);
	evhttp_set_gencb(a->http, notfound_cb, a);
	rv = admin_bind(a, addr, bound);
	if (rv < 0) {
		snprintf(err, errlen, "admin.listen %s: %s", addr->text, strerror(-rv));
		fg_admin_free(a);
		return NULL;
	}
	return a;
}

void fg_admin_free(struct fg_admin *a)
{
	if (!a)
		return;
	evhttp_free(a->http);
	free(a);
}
