/* fg_worker.c - one thread, one loop, its own sockets; see fg_worker.h. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_clock.h"
#include "fg_error.h"
#include "fg_file.h"
#include "fg_h2front.h"
#include "fg_listener.h"
#include "fg_log.h"
#include "fg_pipeline.h"
#include "fg_upstream.h"
#include "fg_worker.h"

/* What travels through the control pipe: one write of this size is atomic
 * (it is below PIPE_BUF), so commands from the main thread never tear. */
struct worker_msg {
	enum fg_worker_cmd cmd;
	void *arg;
};

/* Each worker opens the access log itself, on its own thread, and opens it
 * again on every reload: nothing is shared, O_APPEND keeps lines whole, and
 * a SIGHUP after logrotate moves the log to the new file. */
static void worker_open_access_log(struct fg_worker *w)
{
	const char *path = w->cfg->log.access_log;

	if (w->access_fd >= 0)
		close(w->access_fd);
	w->access_fd = -1;
	if (!path)
		return;
	if (strcmp(path, "-") == 0)
		w->access_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	else
		w->access_fd = fg_file_open_append(path, O_CREAT, 0640);
	if (w->access_fd < 0)
		fg_log(FG_LOG_ERROR, "access_log_failed", "worker=%d path=\"%s\" why=\"%s\"", w->id, path,
		       strerror(errno));
}

static void stall_arm(struct fg_worker *w);

static void worker_take_config(struct fg_worker *w, struct fg_config *cfg)
{
	struct fg_config *old = w->cfg;
	struct fg_front *f;

	w->cfg = cfg;
	worker_open_access_log(w);
	fg_pipeline_env_config(w->pipelines, cfg);
	fg_upstream_configure(w->upstream, cfg);
	LIST_FOREACH(f, &w->fronts, link)
		fg_h2front_configure(f, cfg);
	/* the sweep's period follows new stall timeouts at once */
	if (cfg->timeouts.stalled_stream_us != old->timeouts.stalled_stream_us ||
	    cfg->timeouts.stalled_overloaded_us != old->timeouts.stalled_overloaded_us)
		stall_arm(w);
	fg_config_unref(old);
}

static void worker_maybe_exit(struct fg_worker *w)
{
	if (w->draining && w->nfronts == 0)
		event_base_loopexit(w->base, NULL);
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_worker *w = arg;

	fg_log(FG_LOG_WARN, "drain_timeout", "worker=%d connections=%u", w->id, w->nfronts);
	while (!LIST_EMPTY(&w->fronts))
		fg_h2front_free(LIST_FIRST(&w->fronts));
	event_base_loopexit(w->base, NULL);
}

static void worker_drain(struct fg_worker *w)
{
	struct fg_front *f;
	struct timeval tv;
	int i;

	if (w->draining)
		return;
	w->draining = 1;
	/* Closing our sockets makes the kernel refuse new connections here
	 * while the calls in flight finish. */
	for (i = 0; i < w->nlisteners; i++) {
		evconnlistener_free(w->listeners[i]);
		w->listeners[i] = NULL;
	}
	w->nlisteners = 0;
	LIST_FOREACH(f, &w->fronts, link)
		fg_h2front_drain(f);
	tv.tv_sec = (time_t)(w->cfg->timeouts.drain_us / 1000000);
	tv.tv_usec = (suseconds_t)(w->cfg->timeouts.drain_us % 1000000);
	w->drain_ev = evtimer_new(w->base, drain_timeout_cb, w);
	if (w->drain_ev)
		evtimer_add(w->drain_ev, &tv);
	worker_maybe_exit(w);
}

static void ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_worker *w = arg;
	struct worker_msg m;
	ssize_t n;

	while ((n = read(fd, &m, sizeof(m))) == (ssize_t)sizeof(m)) {
		switch (m.cmd) {
		case FG_WORKER_CMD_CONFIG:
			worker_take_config(w, m.arg);
			break;
		case FG_WORKER_CMD_DRAIN:
			worker_drain(w);
			break;
		case FG_WORKER_CMD_STOP:
			event_base_loopbreak(w->base);
			break;
		}
	}
}

/* connection_refused lines: at most one a second per worker */
#define REFUSED_LOG_US 1000000ULL

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
	struct fg_worker *w = arg;

	uint64_t unlogged;

	if (w->draining || w->nfronts >= (unsigned)w->cfg->limits.max_connections) {
		/* a client that reconnects in a loop is counted, and logged once a
		 * second (README, Logs: what a client can make feedguardd write) */
		if (fg_log_limit_take(&w->refused_log, fg_clock_now_us(), REFUSED_LOG_US, &unlogged))
			fg_log(FG_LOG_WARN, "connection_refused", "worker=%d connections=%u limit=%d unlogged=%" PRIu64,
			       w->id, w->nfronts, w->cfg->limits.max_connections, unlogged);
		fg_metrics_add(&w->metrics.connections_refused, 1);
		close(fd);
		return;
	}
	fg_h2front_accept(w, fd, sa, (socklen_t)salen);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct fg_worker *w = arg;

	fg_listener_accept_failed(w->accept_pause, EVUTIL_SOCKET_ERROR());
}

/* The stall sweep runs four times per timeouts.stalled_stream (the config
 * of the moment: a reload re-arms it), between 10ms and 1s apart.  A stall's
 * clock starts at the first sweep that sees bytes waiting, so a stalled
 * stream is cut between 1 and 1.5 timeouts after its last progress (one
 * to two seconds late for timeouts over 4s). */
#define STALL_SWEEP_MIN_US 10000
#define STALL_SWEEP_MAX_US 1000000

/* The stall timeout of the moment: timeouts.stalled_stream, or the
 * shorter timeouts.stalled_stream_overloaded while the worker's
 * intercepted calls hold more than limits.worker_buffer (as Envoy's
 * overload manager shortens its idle timeouts under memory pressure): a
 * few connections that read nothing would otherwise keep every new
 * intercepted call of the worker refused for the whole long timeout. */
static int64_t stall_timeout(const struct fg_worker *w)
{
	const struct fg_config *cfg = w->cfg;
	int64_t t = cfg->timeouts.stalled_stream_us;

	if (fg_pipeline_env_held(w->pipelines) > cfg->limits.worker_buffer && cfg->timeouts.stalled_overloaded_us < t)
		t = cfg->timeouts.stalled_overloaded_us;
	return t;
}

static void stall_arm(struct fg_worker *w)
{
	int64_t us = w->cfg->timeouts.stalled_stream_us < w->cfg->timeouts.stalled_overloaded_us
	             ? w->cfg->timeouts.stalled_stream_us / 4 : w->cfg->timeouts.stalled_overloaded_us / 4;
	struct timeval tv;

	if (us < STALL_SWEEP_MIN_US)
		us = STALL_SWEEP_MIN_US;
	if (us > STALL_SWEEP_MAX_US)
		us = STALL_SWEEP_MAX_US;
	tv.tv_sec = (time_t)(us / 1000000);
	tv.tv_usec = (suseconds_t)(us % 1000000);
	evtimer_add(w->stall_ev, &tv);
}

static void stall_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_worker *w = arg;
	uint64_t now = fg_clock_now_us(), timeout = (uint64_t)stall_timeout(w);
	struct fg_front *f;

	LIST_FOREACH(f, &w->fronts, link)
		if (f->nstreams > 0)
			fg_h2front_check_stalls(f, now, timeout);
	stall_arm(w);
}

void fg_worker_front_closed(struct fg_worker *w, struct fg_front *f)
{
	w->nfronts--;
	worker_maybe_exit(w);
}

struct fg_worker *fg_worker_new(int id, struct fg_config *cfg, const int *fds, int nfds,
                                struct fg_capture *capture, char *err, size_t errlen)
{
	struct fg_worker *w = calloc(1, sizeof(*w));
	char who[FG_LISTENER_WHO_MAX];
	int i;

	if (!w) {
		snprintf(err, errlen, "out of memory");
		for (i = 0; i < nfds; i++)
			close(fds[i]);
		return NULL;
	}
	w->id = id;
	w->cfg = fg_config_ref(cfg);
	w->ctl_fd[0] = w->ctl_fd[1] = -1;
	w->note_fd = -1;
	w->access_fd = -1;
	worker_open_access_log(w);
	LIST_INIT(&w->fronts);
	fg_mempool_init(&w->mempool);
	TAILQ_INIT(&w->call_pool);
	w->base = event_base_new();
	if (!w->base || pipe2(w->ctl_fd, O_CLOEXEC | O_NONBLOCK) < 0)
		goto fail_join_worker;
	w->ctl_ev = event_new(w->base, w->ctl_fd[0], EV_READ | EV_PERSIST, ctl_cb, w);
	w->upstream = fg_upstream_new(w, cfg);
	w->stall_ev = evtimer_new(w->base, stall_cb, w);
	if (!w->stall_ev || fg_pipeline_env_new(&w->pipelines, w->base, cfg, (size_t)id, &w->metrics, capture) < 0)
		goto fail_join_worker;
	stall_arm(w);
	if (!w->ctl_ev || !w->upstream || event_add(w->ctl_ev, NULL) < 0)
		goto fail_join_worker;
	snprintf(who, sizeof(who), "worker=%d", id);
	w->accept_pause = fg_listener_pause_new(w->base, w->listeners, &w->nlisteners, who,
	                                        &w->metrics.accept_paused);
	if (!w->accept_pause)
		goto fail_join_worker;
	for (i = 0; i < nfds; i++) {
		w->listeners[i] = evconnlistener_new(w->base, accept_cb, w,
		                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fds[i]);
		if (!w->listeners[i])
			goto fail_join_worker;
		evconnlistener_set_error_cb(w->listeners[i], accept_error_cb);
		w->nlisteners++;
	}
	return w;

fail_join_worker:
	snprintf(err, errlen, "worker %d: %s", id, strerror(errno ? errno : ENOMEM));
	for (i = w->nlisteners; i < nfds; i++)
		close(fds[i]);
	fg_worker_join(w);
	return NULL;
}

static void note(struct fg_worker *w, enum fg_worker_note what)
{
	char byte = (char)what;

	if (w->note_fd >= 0 && write(w->note_fd, &byte, 1) < 0)
		fg_log(FG_LOG_ERROR, "worker_notify_failed", "worker=%d", w->id);
}

/* Runs as the loop's first event: the worker is taking connections, which
 * is what the daemon's readiness (sd_notify READY=1) waits for. */
static void running_cb(evutil_socket_t fd, short what, void *arg)
{
	note(arg, FG_WORKER_NOTE_RUNNING);
}

static void *worker_main(void *arg)
{
	struct fg_worker *w = arg;
	const struct timeval now = { 0, 0 };

	if (event_base_once(w->base, -1, EV_TIMEOUT, running_cb, w, &now) < 0)
		note(w, FG_WORKER_NOTE_RUNNING);
	event_base_dispatch(w->base);
	note(w, FG_WORKER_NOTE_DONE);
	return NULL;
}

int fg_worker_start(struct fg_worker *w)
{
	sigset_t all, old;
	int rv;

	/* Asynchronous signals belong to the main thread alone; faults
	 * (SIGSEGV, SIGBUS, SIGFPE, SIGILL) stay deliverable to the thread that
	 * caused them, for sanitizers and crash reporters. */
	sigemptyset(&all);
	sigaddset(&all, SIGHUP);
	sigaddset(&all, SIGTERM);
	sigaddset(&all, SIGINT);
	sigaddset(&all, SIGPIPE);
	sigaddset(&all, SIGUSR1);
	sigaddset(&all, SIGUSR2);
	sigaddset(&all, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rv = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rv != 0)
		return FG_EIO;
	w->thread_started = 1;
	return 0;
}

int fg_worker_send(struct fg_worker *w, enum fg_worker_cmd cmd, void *arg)
{
	struct worker_msg m;
	ssize_t n;

	/* Whole-struct memset: the padding goes through write(2) too. */
	memset(&m, 0, sizeof(m));
	m.cmd = cmd;
	m.arg = arg;

	do {
		n = write(w->ctl_fd[1], &m, sizeof(m));
	} while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(m) ? 0 : FG_EIO;
}

void fg_worker_join(struct fg_worker *w)
{
	struct worker_msg m;
	int i;

	if (w->thread_started)
		pthread_join(w->thread, NULL);
	while (!LIST_EMPTY(&w->fronts))
		fg_h2front_free(LIST_FIRST(&w->fronts));
	fg_upstream_free(w->upstream);
	fg_call_pool_free(w);
	fg_pipeline_env_free(w->pipelines);
	fg_mempool_free(&w->mempool);
	fg_h2conn_scope_free(&w->h2scope);
	for (i = 0; i < w->nlisteners; i++)
		evconnlistener_free(w->listeners[i]);
	fg_listener_pause_free(w->accept_pause);
	/* Snapshots posted but never read still carry a reference. */
	if (w->ctl_fd[0] >= 0) {
		while (read(w->ctl_fd[0], &m, sizeof(m)) == (ssize_t)sizeof(m))
			if (m.cmd == FG_WORKER_CMD_CONFIG)
				fg_config_unref(m.arg);
		close(w->ctl_fd[0]);
		close(w->ctl_fd[1]);
	}
	if (w->ctl_ev)
		event_free(w->ctl_ev);
	if (w->drain_ev)
		event_free(w->drain_ev);
	if (w->stall_ev)
		event_free(w->stall_ev);
	if (w->base)
		event_base_free(w->base);
	if (w->access_fd >= 0)
		close(w->access_fd);
	fg_config_unref(w->cfg);
	free(w);
}
