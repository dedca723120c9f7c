/*
 * fg_admin.h - the read-only admin endpoint: /metrics (Prometheus text),
 * /healthz and /readyz, served by libevent's evhttp on the main thread's
 * loop, bound to 127.0.0.1 by default.  Only GET and HEAD are answered;
 * nothing here changes the daemon.
 *
 * /healthz is 200 while the process runs its loops.  /readyz is 200 until
 * a stop begins, then 503, so load balancers stop sending before the drain
 * (see timeouts.readiness_delay).
 *
 * When accept(2) runs out of descriptors the endpoint stops accepting for
 * FG_LISTENER_PAUSE_MS, as the workers do (fg_listener.h), logs
 * event=accept_failed listener=admin and counts the pause in
 * feedguard_admin_accept_paused_total.  There is one endpoint per process.
 *
 * What a client can make it hold: a request's headers at most
 * FG_ADMIN_MAX_HEADERS (a larger request is refused before it is read
 * further), no body (a request with one is refused, 413), input read
 * ahead of the request being answered at most FG_ADMIN_MAX_INPUT (what a
 * client pipelines behind it waits in the socket), one response, and a
 * connection with nothing to read for 10 s is closed.
 */
#ifndef FG_ADMIN_H
#define FG_ADMIN_H

#include <stdint.h>
#include <event2/event.h>

#include "fg_config.h"
#include "fg_metrics.h"

/* The request line and headers of one admin request, at most. */
#define FG_ADMIN_MAX_HEADERS 8192
/* Input a connection reads ahead, at most: libevent's HTTP server keeps
 * reading while it writes a response (to notice a close), and a client
 * that pipelined requests without reading the answers had the daemon
 * hold every byte it sent (350 MB for 10 million GET /metrics). */
#define FG_ADMIN_MAX_INPUT (2 * FG_ADMIN_MAX_HEADERS)

struct fg_admin;

/* What the admin endpoint reads, and the one counter it writes; owned by
 * main, used on main's loop only. */
struct fg_admin_source {
	struct fg_config *const *cfg;           /* points at main's current snapshot pointer */
	struct fg_metrics *const *blocks;       /* one per worker */
	const int *nblocks;
	const struct fg_metrics_process *proc;
	const unsigned *not_ready;              /* nonzero once a stop began */
	uint64_t *accept_paused;                /* written: main's proc.admin_accept_paused */
};

/*
 * fg_admin_new - listen on <addr> on <base>.  <src> is borrowed and must
 * outlive the endpoint.  Returns NULL with a message in <err> when the
 * address cannot be bound, when out of memory, or when an endpoint exists
 * already (one per process: see fg_admin.c).  <bound> (may be NULL)
 * receives the real address (port 0 works).  Main thread only.
 */
struct fg_admin *fg_admin_new(struct event_base *base, const struct fg_config_addr *addr,
                              const struct fg_admin_source *src, struct fg_config_addr *bound,
                              char *err, size_t errlen);

/* fg_admin_free - stop listening, cancel a pending accept pause, free <a>.
 * NULL is a no-op.  Call it before freeing the event base. */
void fg_admin_free(struct fg_admin *a);

#endif /* FG_ADMIN_H */
