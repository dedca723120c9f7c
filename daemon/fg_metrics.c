/* fg_metrics.c - per-worker metrics, Prometheus text; see fg_metrics.h. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_capture.h"
#include "fg_metrics.h"
#include "fg_policy-t.h"

/* Upper bounds in microseconds; the last bucket is +Inf.  Chosen for a
 * sidecar in front of a ranker: sub-millisecond to tens of seconds. */
static const uint64_t bucket_le_us[FG_METRICS_NBUCKETS - 1] = {
	250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000,
};

/* Redis round trips: from a local socket's tens of microseconds to a
 * stalled server's timeouts. */
static const uint64_t redis_le_us[FG_METRICS_NREDIS_BUCKETS - 1] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 20000, 50000, 100000, 500000,
};

void fg_metrics_observe_redis(struct fg_metrics *m, uint64_t usec)
{
	unsigned b = 0;

	while (b < FG_METRICS_NREDIS_BUCKETS - 1 && usec > redis_le_us[b])
		b++;
	fg_metrics_add(&m->redis_latency_bucket[b], 1);
	fg_metrics_add(&m->redis_latency_count, 1);
	fg_metrics_add(&m->redis_latency_sum_us, usec);
}

unsigned fg_metrics_method_index(const struct fg_config *cfg, const char *path, size_t len)
{
	int i;

	for (i = 0; i < cfg->metrics.nmethods; i++)
		if (strlen(cfg->metrics.methods[i]) == len && memcmp(cfg->metrics.methods[i], path, len) == 0)
			return (unsigned)i;
	return (unsigned)cfg->metrics.nmethods;
}

void fg_metrics_record_call(struct fg_metrics *m, unsigned method, int code, uint64_t usec)
{
	unsigned b = 0;

	if (method >= FG_METRICS_NMETHODS)
		method = FG_METRICS_NMETHODS - 1;
	if (code < 0 || code >= FG_METRICS_NSTATUS)
		code = FG_GRPC_UNKNOWN;
	fg_metrics_add(&m->calls[method][code], 1);
	while (b < FG_METRICS_NBUCKETS - 1 && usec > bucket_le_us[b])
		b++;
	fg_metrics_add(&m->duration_bucket[method][b], 1);
	fg_metrics_add(&m->duration_count[method], 1);
	fg_metrics_add(&m->duration_sum_us[method], usec);
}

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)

static uint64_t sum_u(struct fg_metrics *const *b, int n, size_t off)
{
	uint64_t s = 0;
	int i;

	for (i = 0; i < n; i++)
		s += LOAD((const uint64_t *)((const char *)b[i] + off));
	return s;
}

static int64_t sum_i(struct fg_metrics *const *b, int n, size_t off)
{
	int64_t s = 0;
	int i;

	for (i = 0; i < n; i++)
		s += LOAD((const int64_t *)((const char *)b[i] + off));
	return s;
}

static const char *method_name(const struct fg_config *cfg, int m)
{
	return m < cfg->metrics.nmethods ? cfg->metrics.methods[m] : "other";
}

static void render_calls(struct evbuffer *out, const struct fg_config *cfg, struct fg_metrics *const *b, int n)
{
	int m, c;

	evbuffer_add_printf(out, "# HELP feedguard_calls_total Calls ended, by method and gRPC status code as the client saw it.\n"
	                         "# TYPE feedguard_calls_total counter\n");
	for (m = 0; m <= cfg->metrics.nmethods; m++)
		for (c = 0; c < FG_METRICS_NSTATUS; c++) {
			uint64_t v = sum_u(b, n, offsetof(struct fg_metrics, calls) + (size_t)(m * FG_METRICS_NSTATUS + c) * sizeof(uint64_t));
			if (v)
				evbuffer_add_printf(out, "feedguard_calls_total{method=\"%s\",code=\"%s\"} %llu\n",
				                    method_name(cfg, m), fg_grpc_status_name(c), (unsigned long long)v);
		}
}

static void render_durations(struct evbuffer *out, const struct fg_config *cfg, struct fg_metrics *const *b, int n)
{
	int m, k;

	evbuffer_add_printf(out, "# HELP feedguard_call_duration_seconds Time from request headers to the end of the client stream.\n"
	                         "# TYPE feedguard_call_duration_seconds histogram\n");
	for (m = 0; m <= cfg->metrics.nmethods; m++) {
		uint64_t cum = 0;
		const char *name = method_name(cfg, m);
		for (k = 0; k < FG_METRICS_NBUCKETS; k++) {
			cum += sum_u(b, n, offsetof(struct fg_metrics, duration_bucket) +
			                       (size_t)(m * FG_METRICS_NBUCKETS + k) * sizeof(uint64_t));
			if (k < FG_METRICS_NBUCKETS - 1)
				evbuffer_add_printf(out, "feedguard_call_duration_seconds_bucket{method=\"%s\",le=\"%g\"} %llu\n",
				                    name, (double)bucket_le_us[k] / 1e6, (unsigned long long)cum);
			else
				evbuffer_add_printf(out, "feedguard_call_duration_seconds_bucket{method=\"%s\",le=\"+Inf\"} %llu\n",
				                    name, (unsigned long long)cum);
		}
		evbuffer_add_printf(out, "feedguard_call_duration_seconds_sum{method=\"%s\"} %.6f\n", name,
		                    (double)sum_u(b, n, offsetof(struct fg_metrics, duration_sum_us) + (size_t)m * sizeof(uint64_t)) / 1e6);
		evbuffer_add_printf(out, "feedguard_call_duration_seconds_count{method=\"%s\"} %llu\n", name,
		                    (unsigned long long)sum_u(b, n, offsetof(struct fg_metrics, duration_count) + (size_t)m * sizeof(uint64_t)));
	}
}

/* One line per simple metric: name, type, help, and where it lives. */
struct simple_metric {
	const char *name;
	const char *type;
	const char *help;
	size_t off;
	int is_signed;
};

static const struct simple_metric simple_metrics[] = {
	{ "feedguard_calls_started_total", "counter", "Client streams that became calls.",
	  offsetof(struct fg_metrics, calls_started), 0 },
	{ "feedguard_active_streams", "gauge", "Calls in flight.", offsetof(struct fg_metrics, active_streams), 1 },
	{ "feedguard_client_connections", "gauge", "Open client connections.",
	  offsetof(struct fg_metrics, client_connections), 1 },
	{ "feedguard_client_connections_accepted_total", "counter", "Client connections accepted.",
	  offsetof(struct fg_metrics, connections_accepted), 0 },
	{ "feedguard_client_connections_refused_total", "counter", "Client connections closed at once: over limits.max_connections.",
	  offsetof(struct fg_metrics, connections_refused), 0 },
	{ "feedguard_accept_paused_total", "counter",
	  "Times a worker stopped accepting for a short pause because accept(2) ran out of file descriptors or memory.",
	  offsetof(struct fg_metrics, accept_paused), 0 },
	{ "feedguard_client_write_timeouts_total", "counter",
	  "Client connections closed because their socket took no byte for timeouts.write.",
	  offsetof(struct fg_metrics, client_write_timeouts), 0 },
	{ "feedguard_client_stalled_streams_total", "counter",
	  "Client streams reset (CANCEL) because the client's windows stayed shut on their queued response bytes, or an intercepted request sat in the middle of a message, for timeouts.stalled_stream.",
	  offsetof(struct fg_metrics, client_stalled_streams), 0 },
	{ "feedguard_intercept_buffered_bytes", "gauge",
	  "Bytes intercepted calls hold in feedguardd (messages being assembled or edited, output not yet taken).",
	  offsetof(struct fg_metrics, intercept_buffered), 0 },
	{ "feedguard_upstream_connections", "gauge", "Upstream connections open or opening.",
	  offsetof(struct fg_metrics, upstream_connections), 1 },
	{ "feedguard_upstream_connects_total", "counter", "Upstream connections attempted.",
	  offsetof(struct fg_metrics, upstream_connects), 0 },
	{ "feedguard_upstream_connect_failures_total", "counter", "Upstream connection attempts that failed or timed out.",
	  offsetof(struct fg_metrics, upstream_connect_failures), 0 },
};

/* Label values from an operator's file, escaped as the exposition format
 * wants (backslash, double quote, newline). */
static void add_label_value(struct evbuffer *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(out, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

/* Sum over worker slots of policy counter <i> in an array laid out [slot][n]. */
static uint64_t sum_slots(const uint64_t *arr, size_t nslots, size_t n, size_t i)
{
	uint64_t s = 0;
	size_t k;

	for (k = 0; k < nslots; k++)
		s += LOAD(&arr[k * n + i]);
	return s;
}

static void render_policy(struct evbuffer *out, const struct fg_policy *p)
{
	static const char *const unknown_names[FG_POLICY_NUNKNOWN] = { "absent", "unmatched" };
	size_t m, b, st, u, nb = p->nbands;
	uint64_t v;

	/* the policy in force, so an alert can tell hosts of a fleet apart
	 * that run another one (a reload that failed on some) */
	evbuffer_add_printf(out, "# HELP feedguard_policy_info The policy in force: its id, as captured calls carry it.\n"
	                         "# TYPE feedguard_policy_info gauge\nfeedguard_policy_info{policy_id=\"%s\"} 1\n", p->id);
	evbuffer_add_printf(out, "# HELP feedguard_policy_calls_total Intercepted calls, by method and age band.\n"
	                         "# TYPE feedguard_policy_calls_total counter\n");
	for (m = 0; m < p->nmethods; m++)
		for (b = 0; b < nb; b++) {
			v = sum_slots(p->counters.calls, p->counters.nslots, p->nmethods * nb, m * nb + b);
			evbuffer_add_printf(out, "feedguard_policy_calls_total{method=\"");
			add_label_value(out, p->methods[m].path);
			evbuffer_add_printf(out, "\",band=\"");
			add_label_value(out, p->bands[b].name);
			evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
		}
	evbuffer_add_printf(out, "# HELP feedguard_policy_unknown_band_total Intercepted calls put in the "
	                         "unknown_band because no band matched, by method and reason (absent: no value; "
	                         "unmatched: a value no band lists).\n"
	                         "# TYPE feedguard_policy_unknown_band_total counter\n");
	for (m = 0; m < p->nmethods; m++)
		for (u = 0; u < FG_POLICY_NUNKNOWN; u++) {
			v = sum_slots(p->counters.unknown_band, p->counters.nslots, p->nmethods * FG_POLICY_NUNKNOWN,
			              m * FG_POLICY_NUNKNOWN + u);
			evbuffer_add_printf(out, "feedguard_policy_unknown_band_total{method=\"");
			add_label_value(out, p->methods[m].path);
			evbuffer_add_printf(out, "\",reason=\"%s\"} %llu\n", unknown_names[u], (unsigned long long)v);
		}
	evbuffer_add_printf(out, "# HELP feedguard_policy_fields_stripped_total Field occurrences removed or "
	                         "coarsened, by policy field path and age band.\n"
	                         "# TYPE feedguard_policy_fields_stripped_total counter\n");
	for (st = 0; st < p->nstats; st++)
		for (b = 0; b < nb; b++) {
			v = sum_slots(p->counters.stripped, p->counters.nslots, p->nstats * nb, st * nb + b);
			if (!v)
				continue;
			evbuffer_add_printf(out, "feedguard_policy_fields_stripped_total{field=\"");
			add_label_value(out, p->stat_names[st]);
			evbuffer_add_printf(out, "\",band=\"");
			add_label_value(out, p->bands[b].name);
			evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
		}
}

static const char *const filter_actions[FG_POLICY_FILTER_NACTIONS] = { "removed", "demoted", "surplus", "limited" };

static void method_band_labels(struct evbuffer *out, const struct fg_policy *p, size_t m, size_t b)
{
	evbuffer_add_printf(out, "{method=\"");
	add_label_value(out, p->methods[m].path);
	evbuffer_add_printf(out, "\",band=\"");
	add_label_value(out, p->bands[b].name);
	evbuffer_add_printf(out, "\"");
}

/* The filter's counters: items per class and action (only those that
 * happened: the label space is methods x bands x classes x actions), pages
 * per method and band (every feed's, zero included). */
static void render_filter(struct evbuffer *out, const struct fg_policy *p)
{
	size_t m, b, k, a, nb = p->nbands, ncls = p->nclasses + 1;
	size_t row = p->nfeeds * nb * ncls * FG_POLICY_FILTER_NACTIONS;
	uint64_t v;

	if (!p->counters.filtered)
		return;
	evbuffer_add_printf(out, "# HELP feedguard_filter_items_total Feed items the filter removed, demoted, "
	                         "found no room for (surplus) or limited (exposure), by method, age band and deciding class.\n"
	                         "# TYPE feedguard_filter_items_total counter\n");
	for (m = 0; m < p->nmethods; m++)
		for (b = 0; p->methods[m].feed && b < nb; b++)
			for (k = 0; k < ncls; k++)
				for (a = 0; a < FG_POLICY_FILTER_NACTIONS; a++) {
					size_t fi = p->methods[m].feed_index;
					size_t i = ((fi * nb + b) * ncls + k) * FG_POLICY_FILTER_NACTIONS + a;
					v = sum_slots(p->counters.filtered, p->counters.nslots, row, i);
					if (!v)
						continue;
					evbuffer_add_printf(out, "feedguard_filter_items_total");
					method_band_labels(out, p, m, b);
					evbuffer_add_printf(out, ",class=\"");
					add_label_value(out, k < p->nclasses ? p->classes[k].name : "unlabelled");
					evbuffer_add_printf(out, "\",action=\"%s\"} %llu\n", filter_actions[a],
					                    (unsigned long long)v);
				}
	for (a = 0; a < 2; a++) {
		const char *name = a ? "feedguard_filter_pages_unmet_total" : "feedguard_filter_pages_total";
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name,
		                    a ? "Feed pages on which the prominence rules could not all be met (surplus items)."
		                      : "Feed pages (response messages) the filter ran on.", name);
		for (m = 0; m < p->nmethods; m++)
			for (b = 0; p->methods[m].feed && b < nb; b++) {
				if (!p->methods[m].filter[b].active)
					continue;       /* bands with a filter block only */
				v = sum_slots(p->counters.pages, p->counters.nslots, p->nfeeds * nb * 2,
				              (p->methods[m].feed_index * nb + b) * 2 + a);
				evbuffer_add_printf(out, "%s", name);
				method_band_labels(out, p, m, b);
				evbuffer_add_printf(out, "} %llu\n", (unsigned long long)v);
			}
	}
}

static const char *const notice_names[FG_POLICY_NNOTICES] = {
	"daily-limit", "quiet-hours", "take-a-break", "exposure-limit", "daily-limit-soon", "quiet-hours-soon",
};
static const char *const rule_names[FG_POLICY_NRULES] = { "daily", "quiet_hours", "break", "fail_mode" };
static const char *const reason_names[FG_POLICY_NSREASONS] = { "timeout", "down", "busy", "error", "no_user" };
static const char *const mode_names[FG_POLICY_NSMODES] = { "open", "empty", "deny", "update" };

static void band_label(struct evbuffer *out, const struct fg_policy *p, size_t b)
{
	evbuffer_add_printf(out, "{band=\"");
	add_label_value(out, p->bands[b].name);
	evbuffer_add_printf(out, "\"");
}

/* Screen time: notices, answers and state failures that happened. */
static void render_screen(struct evbuffer *out, const struct fg_policy *p)
{
	size_t b, k, a, nb = p->nbands;
	uint64_t v;

	if (!p->limits)
		return;
	evbuffer_add_printf(out, "# HELP feedguard_screen_time_notices_total Screen-time notices given, by band and kind.\n"
	                         "# TYPE feedguard_screen_time_notices_total counter\n");
	for (b = 0; b < nb; b++)
		for (k = 0; k < FG_POLICY_NNOTICES; k++)
			if ((v = sum_slots(p->counters.notices, p->counters.nslots, nb * FG_POLICY_NNOTICES,
			                   b * FG_POLICY_NNOTICES + k))) {
				evbuffer_add_printf(out, "feedguard_screen_time_notices_total");
				band_label(out, p, b);
				evbuffer_add_printf(out, ",kind=\"%s\"} %llu\n", notice_names[k], (unsigned long long)v);
			}
	evbuffer_add_printf(out, "# HELP feedguard_screen_time_answered_total Feed calls feedguard answered itself "
	                         "(an empty feed or a denial), by band, rule and action.\n"
	                         "# TYPE feedguard_screen_time_answered_total counter\n");
	for (b = 0; b < nb; b++)
		for (k = 0; k < FG_POLICY_NRULES; k++)
			for (a = 0; a < 2; a++)
				if ((v = sum_slots(p->counters.answered, p->counters.nslots, nb * FG_POLICY_NRULES * 2,
				                   (b * FG_POLICY_NRULES + k) * 2 + a))) {
					evbuffer_add_printf(out, "feedguard_screen_time_answered_total");
					band_label(out, p, b);
					evbuffer_add_printf(out, ",rule=\"%s\",action=\"%s\"} %llu\n", rule_names[k],
					                    a ? "deny" : "empty", (unsigned long long)v);
				}
	evbuffer_add_printf(out, "# HELP feedguard_state_failures_total Screen-time state that could not be read "
	                         "(the fail mode applied) or written (update), by band and reason.\n"
	                         "# TYPE feedguard_state_failures_total counter\n");
	for (b = 0; b < nb; b++)
		for (k = 0; k < FG_POLICY_NSREASONS; k++)
			for (a = 0; a < FG_POLICY_NSMODES; a++)
				if ((v = sum_slots(p->counters.state_failures, p->counters.nslots,
				                   nb * FG_POLICY_NSREASONS * FG_POLICY_NSMODES,
				                   (b * FG_POLICY_NSREASONS + k) * FG_POLICY_NSMODES + a))) {
					evbuffer_add_printf(out, "feedguard_state_failures_total");
					band_label(out, p, b);
					evbuffer_add_printf(out, ",reason=\"%s\",mode=\"%s\"} %llu\n", reason_names[k],
					                    mode_names[a], (unsigned long long)v);
				}
}

static const char *const redis_error_names[FG_METRICS_NREDIS_ERRORS] = {
	"error", "timeout", "down", "busy", "unavailable",
};

/* The workers' Redis links, when the config has state. */
static void render_redis(struct evbuffer *out, struct fg_metrics *const *b, int n)
{
	uint64_t cum = 0;
	int k;

	evbuffer_add_printf(out, "# HELP feedguard_redis_connected Workers whose Redis link is connected.\n"
	                         "# TYPE feedguard_redis_connected gauge\nfeedguard_redis_connected %llu\n",
	                    (unsigned long long)sum_u(b, n, offsetof(struct fg_metrics, redis_connected)));
	evbuffer_add_printf(out, "# HELP feedguard_redis_commands_total Redis commands sent for screen-time state.\n"
	                         "# TYPE feedguard_redis_commands_total counter\nfeedguard_redis_commands_total %llu\n",
	                    (unsigned long long)sum_u(b, n, offsetof(struct fg_metrics, redis_commands)));
	evbuffer_add_printf(out, "# HELP feedguard_redis_errors_total Redis commands that failed, by kind.\n"
	                         "# TYPE feedguard_redis_errors_total counter\n");
	for (k = 0; k < FG_METRICS_NREDIS_ERRORS; k++)
		evbuffer_add_printf(out, "feedguard_redis_errors_total{kind=\"%s\"} %llu\n", redis_error_names[k],
		                    (unsigned long long)sum_u(b, n, offsetof(struct fg_metrics, redis_errors) +
		                                                        (size_t)k * sizeof(uint64_t)));
	evbuffer_add_printf(out, "# HELP feedguard_redis_reconnects_total Redis connection attempts after the first.\n"
	                         "# TYPE feedguard_redis_reconnects_total counter\nfeedguard_redis_reconnects_total %llu\n",
	                    (unsigned long long)sum_u(b, n, offsetof(struct fg_metrics, redis_reconnects)));
	evbuffer_add_printf(out, "# HELP feedguard_redis_latency_seconds Time from a Redis command to its reply.\n"
	                         "# TYPE feedguard_redis_latency_seconds histogram\n");
	for (k = 0; k < FG_METRICS_NREDIS_BUCKETS; k++) {
		cum += sum_u(b, n, offsetof(struct fg_metrics, redis_latency_bucket) + (size_t)k * sizeof(uint64_t));
		if (k < FG_METRICS_NREDIS_BUCKETS - 1)
			evbuffer_add_printf(out, "feedguard_redis_latency_seconds_bucket{le=\"%g\"} %llu\n",
			                    (double)redis_le_us[k] / 1e6, (unsigned long long)cum);
		else
			evbuffer_add_printf(out, "feedguard_redis_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
			                    (unsigned long long)cum);
	}
	evbuffer_add_printf(out, "feedguard_redis_latency_seconds_sum %.6f\nfeedguard_redis_latency_seconds_count %llu\n",
	                    (double)sum_u(b, n, offsetof(struct fg_metrics, redis_latency_sum_us)) / 1e6,
	                    (unsigned long long)sum_u(b, n, offsetof(struct fg_metrics, redis_latency_count)));
}

static unsigned long long load(const uint64_t *v)
{
	return (unsigned long long)__atomic_load_n(v, __ATOMIC_RELAXED);
}

/* A counter with one label: <n> series, value <v>[i] under <label>=<names>[i]. */
static void labelled(struct evbuffer *out, const char *name, const char *help, const char *label,
                     const char *const *names, const uint64_t *v, size_t n)
{
	size_t i;

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (i = 0; i < n; i++)
		evbuffer_add_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, names[i], load(&v[i]));
}

static void render_capture(struct evbuffer *out, const struct fg_capture_counters *c)
{
	static const char *const drops[FG_CAPTURE_NDROPS] = { "queue_full", "write_error", "budget" };
	static const char *const omits[FG_CAPTURE_NOMITS] = { "record_size", "queue", "user_id" };
	static const char *const files[FG_CAPTURE_NFILE_EVENTS] = { "opened", "rotated", "deleted", "failed" };

	evbuffer_add_printf(out, "# HELP feedguard_capture_records_total Capture call records written.\n"
	                         "# TYPE feedguard_capture_records_total counter\nfeedguard_capture_records_total %llu\n",
	                    load(&c->records));
	evbuffer_add_printf(out, "# HELP feedguard_capture_bytes_total Capture bytes written, frames included.\n"
	                         "# TYPE feedguard_capture_bytes_total counter\nfeedguard_capture_bytes_total %llu\n",
	                    load(&c->bytes));
	labelled(out, "feedguard_capture_dropped_total", "Capture records lost, by reason.", "reason", drops,
	         c->dropped, FG_CAPTURE_NDROPS);
	labelled(out, "feedguard_capture_omitted_messages_total", "Messages left out of capture records, by reason.",
	         "reason", omits, c->omitted, FG_CAPTURE_NOMITS);
	labelled(out, "feedguard_capture_files_total", "Capture files, by event.", "event", files, c->files,
	         FG_CAPTURE_NFILE_EVENTS);
	evbuffer_add_printf(out, "# HELP feedguard_capture_queue_bytes Capture bytes held: records being built "
	                         "and records waiting for the writer.\n# TYPE feedguard_capture_queue_bytes gauge\n"
	                         "feedguard_capture_queue_bytes %llu\n", load(&c->held));
}

int fg_metrics_render(struct evbuffer *out, const struct fg_config *cfg, struct fg_metrics *const *blocks,
                      int n, const struct fg_metrics_process *proc)
{
	size_t i;

	evbuffer_add_printf(out, "# HELP feedguard_build_info Build of the running daemon.\n"
	                         "# TYPE feedguard_build_info gauge\n"
	                         "feedguard_build_info{version=\"%s\",nghttp2=\"%s\",libevent=\"%s\"} 1\n",
	                    PACKAGE_VERSION, nghttp2_version(0)->version_str, event_get_version());
	evbuffer_add_printf(out, "# HELP feedguard_start_time_seconds Unix time the daemon started.\n"
	                         "# TYPE feedguard_start_time_seconds gauge\nfeedguard_start_time_seconds %.3f\n",
	                    proc->start_time);
	evbuffer_add_printf(out, "# HELP feedguard_reloads_total Configuration reloads that took effect.\n"
	                         "# TYPE feedguard_reloads_total counter\nfeedguard_reloads_total %llu\n",
	                    (unsigned long long)proc->reloads);
	evbuffer_add_printf(out, "# HELP feedguard_reload_failures_total Reloads rejected; the running configuration stayed.\n"
	                         "# TYPE feedguard_reload_failures_total counter\nfeedguard_reload_failures_total %llu\n",
	                    (unsigned long long)proc->reload_failures);
	evbuffer_add_printf(out, "# HELP feedguard_last_reload_success_timestamp_seconds Unix time of the last good configuration load.\n"
	                         "# TYPE feedguard_last_reload_success_timestamp_seconds gauge\n"
	                         "feedguard_last_reload_success_timestamp_seconds %.3f\n",
	                    proc->last_reload_success);
	evbuffer_add_printf(out, "# HELP feedguard_admin_accept_paused_total Times the admin endpoint stopped accepting "
	                         "for a short pause because accept(2) ran out of file descriptors or memory.\n"
	                         "# TYPE feedguard_admin_accept_paused_total counter\n"
	                         "feedguard_admin_accept_paused_total %llu\n",
	                    (unsigned long long)proc->admin_accept_paused);
	if (proc->capture)
		render_capture(out, proc->capture);
	for (i = 0; i < sizeof(simple_metrics) / sizeof(simple_metrics[0]); i++) {
		const struct simple_metric *s = &simple_metrics[i];
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help, s->name, s->type);
		if (s->is_signed)
			evbuffer_add_printf(out, "%s %lld\n", s->name, (long long)sum_i(blocks, n, s->off));
		else
			evbuffer_add_printf(out, "%s %llu\n", s->name, (unsigned long long)sum_u(blocks, n, s->off));
	}
	evbuffer_add_printf(out, "# HELP feedguard_intercept_refused_total Intercepted calls refused (UNAVAILABLE) "
	                         "because a buffer budget was reached, by limit.\n"
	                         "# TYPE feedguard_intercept_refused_total counter\n"
	                         "feedguard_intercept_refused_total{limit=\"worker_buffer\"} %llu\n",
	                    (unsigned long long)sum_u(blocks, n, offsetof(struct fg_metrics, buffer_refused_worker)));
	render_calls(out, cfg, blocks, n);
	render_durations(out, cfg, blocks, n);
	if (cfg->policy) {
		render_policy(out, cfg->policy);
		render_filter(out, cfg->policy);
		render_screen(out, cfg->policy);
	}
	if (cfg->state.enabled)
		render_redis(out, blocks, n);
	return 0;
}
