/*
 * fg_worker.h - one worker: one thread, one event_base, its own listening
 * sockets (SO_REUSEPORT), client connections, upstream pool.  Nothing on
 * the per-request path is shared with another worker or locked.
 *
 * The main thread talks to a worker only through the worker's control
 * pipe, read on the worker's own loop: a new config snapshot, drain, stop.
 * A worker therefore never dereferences a snapshot another thread may
 * free: it holds its own reference, and each call holds one for its life.
 */
#ifndef FG_WORKER_H
#define FG_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "fg_call.h"
#include "fg_config.h"
#include "fg_h2conn.h"
#include "fg_log.h"
#include "fg_mempool.h"
#include "fg_metrics.h"

struct fg_front;
struct fg_pipeline_env;
struct fg_listener_pause;
struct fg_upstream;

enum fg_worker_cmd {
	FG_WORKER_CMD_CONFIG = 1,   /* arg: struct fg_config * with a reference for the worker */
	FG_WORKER_CMD_DRAIN,        /* stop accepting, GOAWAY everyone, exit when idle or at the drain timeout */
	FG_WORKER_CMD_STOP,         /* exit the loop now */
};

/* What a worker writes to main's pipe (<note_fd>), one byte each. */
enum fg_worker_note {
	FG_WORKER_NOTE_RUNNING = 'R',   /* its loop runs: it accepts from now on */
	FG_WORKER_NOTE_DONE = 'D',      /* its loop ended: it may be joined */
};

struct fg_capture;

struct fg_worker {
	int id;                             /* 0..n-1, for logs */
	pthread_t thread;
	unsigned thread_started;            /* <thread> must be joined */
	struct event_base *base;
	struct fg_config *cfg;              /* this worker's reference to the current snapshot */
	struct evconnlistener *listeners[FG_CONFIG_MAX_LISTEN];
	int nlisteners;
	struct fg_listener_pause *accept_pause; /* stops accepting a moment when out of descriptors; reads
	                                           <listeners> and <nlisteners> (0 once drained) */
	struct fg_upstream *upstream;       /* this worker's upstream pool */
	LIST_HEAD(, fg_front) fronts;       /* client connections */
	struct fg_call_list call_pool;      /* ended calls kept for reuse (fg_call.c) */
	struct event *stall_ev;             /* the stalled-stream sweep (timeouts.stalled_stream) */
	unsigned ncall_pool;
	size_t call_pool_body;              /* bytes of body buffers the pooled calls keep (fg_call.c) */
	unsigned nfronts;
	int ctl_fd[2];                      /* control pipe: main writes [1], the loop reads [0] */
	struct event *ctl_ev;
	struct event *drain_ev;             /* drain deadline */
	unsigned draining;
	struct fg_log_limit refused_log;    /* connection_refused lines */
	int access_fd;                      /* log.access_log opened by this worker (O_APPEND); -1 when off */
	int note_fd;                        /* main's pipe for enum fg_worker_note bytes; -1 for none */
	struct fg_pipeline_env *pipelines;  /* pooled pipelines and the stages' per-worker state */
	struct fg_mempool mempool;          /* small blocks for this worker's nghttp2 sessions */
	struct fg_h2conn_scope h2scope;     /* which of its connections write from a read's buffer */
	struct fg_metrics metrics;          /* written by this worker only; read by the admin endpoint */
};

/*
 * fg_worker_new - a worker with <cfg> (a reference is taken) that will
 * accept on the listening sockets <fds>[0..<nfds>-1] (taken), and hand
 * capture records to <capture> (borrowed, outlives the worker; NULL:
 * none).  The thread is not started.  Returns NULL on failure with a
 * message in <err>.
 */
struct fg_worker *fg_worker_new(int id, struct fg_config *cfg, const int *fds, int nfds,
                                struct fg_capture *capture, char *err, size_t errlen);

/* fg_worker_start - run the worker's loop on a new thread.  0 or FG_EIO. */
int fg_worker_start(struct fg_worker *w);

/*
 * fg_worker_send - post <cmd> (with <arg>) to the worker's loop.  Any
 * thread.  For FG_WORKER_CMD_CONFIG the worker takes over the reference
 * held by <arg>.  Returns 0 or FG_EIO.
 */
int fg_worker_send(struct fg_worker *w, enum fg_worker_cmd cmd, void *arg);

/* fg_worker_join - wait for the thread to end, then free the worker. */
void fg_worker_join(struct fg_worker *w);

/* fg_worker_front_closed - <f> left the worker's list (called by fg_h2front_free). */
void fg_worker_front_closed(struct fg_worker *w, struct fg_front *f);

#endif /* FG_WORKER_H */
