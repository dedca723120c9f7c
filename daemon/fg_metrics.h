/*
 * fg_metrics.h - counters and histograms, one block per worker, rendered
 * in the Prometheus text format (version 0.0.4) by the admin endpoint.
 *
 * Each block has exactly one writer, its worker's loop thread, which bumps
 * values with relaxed atomic stores (a plain mov on x86-64: no lock and no
 * shared cache line on the call path).  The admin thread reads every block
 * with relaxed atomic loads and sums them; a scrape may see one worker a
 * few calls ahead of another, never a torn value.
 *
 * Label sets are bounded by construction: the method label only takes the
 * names listed in the config (metrics.methods) and "other", the code label
 * only the 17 gRPC status names.
 */
#ifndef FG_METRICS_H
#define FG_METRICS_H

#include <stdint.h>
#include <event2/buffer.h>

#include "fg_config.h"

#define FG_METRICS_NSTATUS 17           /* gRPC codes 0..16 */
#define FG_METRICS_NBUCKETS 15          /* call duration buckets, see fg_metrics.c */
#define FG_METRICS_NMETHODS (FG_CONFIG_MAX_METHODS + 1)   /* named methods + "other" */
#define FG_METRICS_NREDIS_BUCKETS 12    /* Redis latency buckets, see fg_metrics.c */

/* Kinds of failed Redis commands (feedguard_redis_errors_total{kind}). */
enum fg_metrics_redis_error {
	FG_METRICS_REDIS_ERROR = 0,     /* an error reply */
	FG_METRICS_REDIS_TIMEOUT,       /* no answer within state.timeout */
	FG_METRICS_REDIS_DOWN,          /* the link was lost with the command in flight */
	FG_METRICS_REDIS_BUSY,          /* refused: state.max_pending in flight */
	FG_METRICS_REDIS_UNAVAILABLE,   /* refused: the link was not connected */
	FG_METRICS_NREDIS_ERRORS,
};

struct fg_metrics {
	uint64_t calls[FG_METRICS_NMETHODS][FG_METRICS_NSTATUS];  /* ended calls by method and code */
	uint64_t duration_bucket[FG_METRICS_NMETHODS][FG_METRICS_NBUCKETS]; /* not cumulative */
	uint64_t duration_count[FG_METRICS_NMETHODS];
	uint64_t duration_sum_us[FG_METRICS_NMETHODS];
	uint64_t calls_started;
	uint64_t connections_accepted;
	uint64_t connections_refused;               /* over limits.max_connections */
	uint64_t accept_paused;                     /* accept pauses: out of descriptors (fg_listener.h) */
	uint64_t client_write_timeouts;             /* client sockets that took nothing for timeouts.write */
	uint64_t client_stalled_streams;            /* client streams reset: windows shut for timeouts.stalled_stream */
	uint64_t buffer_refused_worker;             /* intercepted calls refused: limits.worker_buffer */
	uint64_t intercept_buffered;                /* gauge: bytes intercepted calls hold (fg_pipeline.c writes it) */
	uint64_t upstream_connects;
	uint64_t upstream_connect_failures;
	int64_t active_streams;                     /* gauge */
	int64_t client_connections;                 /* gauge */
	int64_t upstream_connections;               /* gauge */
	/* The worker's Redis link (fg_stage_screen.c keeps them). */
	uint64_t redis_connected;                   /* gauge: 1 while connected */
	uint64_t redis_commands;
	uint64_t redis_errors[FG_METRICS_NREDIS_ERRORS];
	uint64_t redis_reconnects;
	uint64_t redis_latency_bucket[FG_METRICS_NREDIS_BUCKETS]; /* not cumulative */
	uint64_t redis_latency_count;
	uint64_t redis_latency_sum_us;
};

struct fg_capture_counters;

/* Process-wide values kept by the main thread. */
struct fg_metrics_process {
	uint64_t reloads;
	uint64_t reload_failures;
	uint64_t admin_accept_paused;   /* the admin endpoint's accept pauses (fg_listener.h); the
	                                   workers' are apart, in each block's accept_paused */
	double last_reload_success;     /* unix time of the last good (re)load */
	double start_time;              /* unix time the daemon started */
	const struct fg_capture_counters *capture; /* the capture writer's (atomics), or NULL */
};

/* fg_metrics_add - <*v> += <d>; single writer (the owning worker). */
static inline void fg_metrics_add(uint64_t *v, uint64_t d)
{
	__atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

/* fg_metrics_gauge - <*v> += <d> for a gauge; single writer. */
static inline void fg_metrics_gauge(int64_t *v, int64_t d)
{
	__atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

/*
 * fg_metrics_method_index - the label slot of the request path <path>
 * (<len> bytes): its position in cfg->metrics.methods, or
 * cfg->metrics.nmethods ("other").
 */
unsigned fg_metrics_method_index(const struct fg_config *cfg, const char *path, size_t len);

/*
 * fg_metrics_record_call - count one ended call: <method> slot, gRPC
 * <code> as the client saw it (0..16), <usec> from request headers to the
 * end of the client stream.
 */
void fg_metrics_record_call(struct fg_metrics *m, unsigned method, int code, uint64_t usec);

/* fg_metrics_observe_redis - one Redis reply <usec> after its command. */
void fg_metrics_observe_redis(struct fg_metrics *m, uint64_t usec);

/*
 * fg_metrics_render - append the exposition of the sum of <blocks>
 * (<n> of them, read concurrently with their writers) and <proc> to <out>.
 * Method names come from <cfg>.  Returns 0 or FG_ENOMEM.
 */
int fg_metrics_render(struct evbuffer *out, const struct fg_config *cfg, struct fg_metrics *const *blocks,
                      int n, const struct fg_metrics_process *proc);

#endif /* FG_METRICS_H */
