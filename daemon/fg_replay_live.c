/*
 * fg_replay_live.c - recorded calls to a live target over h2c (nghttp2's
 * client session on a non-blocking socket, driven by poll(2)), paced and
 * bounded, with a load tester's report.  See fg_replay_live.h.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>

#include "fg_bufq.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_grpcframe.h"
#include "fg_pbwire.h"
#include "fg_policy-t.h"
#include "fg_policy_eval.h"
#include "fg_replay_live.h"
#include "fg_stage.h"

#define DEFAULT_CONCURRENCY 16
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_RESPONSE (64u << 20)        /* bytes of one response kept to compare */
#define NBUCKETS 24                     /* latency histogram: 2^k * 100us */
#define NSTATUS 17                      /* gRPC codes 0..16 */
#define STATUS_OTHER NSTATUS            /* a code out of range */

struct stream {
	struct live *lv;
	struct stream *prev, *next;     /* the calls in flight */
	Feedguard__Capture__V1__Record *rec;
	struct fg_bufq body;            /* request frames to send */
	struct fg_bufq resp;            /* response body received */
	uint64_t sent_us;
	int status;                     /* grpc-status, -1: none yet */
	unsigned too_big;
};

struct live {
	const struct fg_replay_live_opts *o;
	nghttp2_session *h2;
	int fd;
	unsigned inflight;
	struct stream *streams;         /* in flight: freed at the end if the connection dies */
	uint64_t sent, done, status_same, body_same;
	uint64_t raised_asked, raised_kept; /* calls recorded over-fetched: sent with the size asked, as recorded */
	uint64_t status_count[NSTATUS + 1];
	uint64_t *lat_us;               /* every call's latency */
	size_t nlat, caplat;
	uint64_t hist[NBUCKETS + 1];
};

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* --- connecting --------------------------------------------------------------- */

static int dial(const char *target)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV }, *ai;
	char host[128], *port;
	int fd, one = 1;

	if (strlen(target) >= sizeof(host))
		return FG_EINVAL;
	strcpy(host, target);
	if (!(port = strrchr(host, ':')))
		return FG_EINVAL;
	*port++ = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return FG_EINVAL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return FG_EIO;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* connected blocking (a tool may wait for its target); non-blocking after */
	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		close(fd);
		return FG_EIO;
	}
	return fd;
}

/* --- nghttp2 callbacks ---------------------------------------------------------- */

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
	struct live *lv = arg;
	ssize_t n = send(lv->fd, data, len, MSG_NOSIGNAL);

	(void)s;
	(void)flags;
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
	return n;
}

static ssize_t recv_cb(nghttp2_session *s, uint8_t *buf, size_t len, int flags, void *arg)
{
	struct live *lv = arg;
	ssize_t n = recv(lv->fd, buf, len, 0);

	(void)s;
	(void)flags;
	if (n == 0)
		return NGHTTP2_ERR_EOF;
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
	return n;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *arg)
{
	struct stream *st = src->ptr;
	size_t n = fg_bufq_take(&st->body, buf, len);

	(void)s;
	(void)id;
	(void)arg;
	if (fg_bufq_len(&st->body) == 0)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
	struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	char v[8];

	(void)flags;
	(void)arg;
	if (st && namelen == 11 && memcmp(name, "grpc-status", 11) == 0 && valuelen > 0 && valuelen < sizeof(v)) {
		memcpy(v, value, valuelen);
		v[valuelen] = '\0';
		st->status = atoi(v);
	}
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *arg)
{
	struct stream *st = nghttp2_session_get_stream_user_data(s, id);

	(void)flags;
	(void)arg;
	if (!st || st->too_big)
		return 0;
	if (fg_bufq_len(&st->resp) + len > MAX_RESPONSE || fg_bufq_append(&st->resp, data, len) < 0) {
		st->too_big = 1;
		fg_bufq_free(&st->resp);
	}
	return 0;
}

/* The delivered messages as received, against the recorded ones. */
static int same_body(const struct stream *st)
{
	const Feedguard__Capture__V1__Call *c = st->rec->call;
	const uint8_t *p = fg_bufq_head(&st->resp);
	size_t left = fg_bufq_len(&st->resp), i = 0;

	if (st->too_big)
		return 0;
	while (left >= FG_GRPC_PREFIX_LEN) {
		uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
		if (p[0] != 0 || left - FG_GRPC_PREFIX_LEN < len || i >= c->n_delivered_response ||
		    c->delivered_response[i].len != len || memcmp(c->delivered_response[i].data, p + 5, len) != 0)
			return 0;
		p += FG_GRPC_PREFIX_LEN + len;
		left -= FG_GRPC_PREFIX_LEN + len;
		i++;
	}
	return left == 0 && i == c->n_delivered_response;
}

static void stream_free(struct live *lv, struct stream *st);

static void record_latency(struct live *lv, uint64_t us)
{
	unsigned b = 0;

	while (b < NBUCKETS && us > (100ULL << b))
		b++;
	lv->hist[b]++;
	if (lv->nlat == lv->caplat) {
		size_t cap = lv->caplat ? lv->caplat * 2 : 1024;
		uint64_t *v = realloc(lv->lat_us, cap * sizeof(*v));
		if (!v)
			return;
		lv->lat_us = v;
		lv->caplat = cap;
	}
	lv->lat_us[lv->nlat++] = us;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error, void *arg)
{
	struct live *lv = arg;
	struct stream *st = nghttp2_session_get_stream_user_data(s, id);
	int status;

	if (!st)
		return 0;
	/* no grpc-status: the stream was reset (RFC 9113 codes as gRPC maps them) */
	status = st->status >= 0 ? st->status : error == NGHTTP2_REFUSED_STREAM ? FG_GRPC_UNAVAILABLE
	       : error == NGHTTP2_CANCEL ? FG_GRPC_CANCELLED : FG_GRPC_INTERNAL;
	lv->status_count[status >= 0 && status < NSTATUS ? status : STATUS_OTHER]++;
	record_latency(lv, mono_us() - st->sent_us);
	lv->status_same += status == st->rec->call->status;
	lv->body_same += status == 0 && same_body(st);
	lv->done++;
	stream_free(lv, st);
	return 0;
}

static void stream_free(struct live *lv, struct stream *st)
{
	lv->inflight--;
	if (st->prev)
		st->prev->next = st->next;
	else
		lv->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	fg_bufq_free(&st->body);
	fg_bufq_free(&st->resp);
	feedguard__capture__v1__record__free_unpacked(st->rec, NULL);
	free(st);
}

/* --- sending ----------------------------------------------------------------------- */

#define NV(n, v, vl) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), NGHTTP2_NV_FLAG_NONE }

/* 1 for metadata the tool sets itself, or HTTP/2 forbids a client to send. */
static int reserved(const char *name)
{
	static const char *const names[] = { "content-type", "te", "grpc-timeout", "content-length", "host",
		                             "connection", "grpc-encoding", "grpc-accept-encoding", NULL };
	size_t i;

	if (name[0] == ':')
		return 1;
	for (i = 0; names[i]; i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	return 0;
}

int fg_replay_live_header_ok(const char *name)
{
	size_t i;

	if (!name[0] || strncmp(name, "grpc-", 5) == 0 || strcmp(name, FG_STAGE_TEST_NOW_HEADER) == 0 || reserved(name))
		return 0;
	for (i = 0; name[i]; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '-' ||
		      name[i] == '_' || name[i] == '.'))
			return 0;
	return 1;
}

/*
 * The request messages of <c>, framed, into <body>.  A call whose filter
 * over-fetched was recorded with the raised page size (the request as
 * forwarded); with a policy that knows the method's page_size field, its
 * first message goes with the size the client asked for, appended at that
 * field (the last value wins), so a feedguardd target raises it once, as
 * the recording daemon did.  Returns 0 or FG_ENOMEM.
 */
static int frame_request(struct live *lv, const Feedguard__Capture__V1__Call *c, struct fg_bufq *body)
{
	const struct fg_policy_method *m;
	uint64_t asked = c->decisions ? c->decisions->page_size_asked : 0;
	struct fg_bufq first;
	size_t i = 0;
	int rc;

	if (asked && c->n_request) {
		m = lv->o->policy ? fg_policy_find_method(lv->o->policy, c->method, strlen(c->method)) : NULL;
		if (!m || !m->feed || !m->feed->page_size_depth) {
			lv->raised_kept++;
		} else {
			fg_bufq_init(&first);
			rc = fg_bufq_append(&first, c->request[0].data, c->request[0].len);
			if (rc == 0)
				rc = fg_pbwire_append_varint_at(&first, m->feed->page_size_path, m->feed->page_size_depth,
				                                asked);
			if (rc == 0)
				rc = fg_grpcframe_append(body, FG_GRPCFRAME_UNCOMPRESSED, fg_bufq_head(&first),
				                         fg_bufq_len(&first));
			fg_bufq_free(&first);
			if (rc < 0)
				return FG_ENOMEM;
			lv->raised_asked++;
			i = 1;
		}
	}
	for (; i < c->n_request; i++)
		if (fg_grpcframe_append(body, FG_GRPCFRAME_UNCOMPRESSED, c->request[i].data, c->request[i].len) < 0)
			return FG_ENOMEM;
	return 0;
}

static int submit(struct live *lv, Feedguard__Capture__V1__Record *rec)
{
	const Feedguard__Capture__V1__Call *c = rec->call;
	struct stream *st = calloc(1, sizeof(*st));
	nghttp2_nv *nv = NULL;
	nghttp2_data_provider dp;
	char timeout[32], now[32];
	size_t i, n = 0;
	int32_t id;

	if (!st || !(nv = calloc(9 + c->n_request_metadata, sizeof(*nv))))
		goto fail;
	st->lv = lv;
	st->rec = rec;
	st->status = -1;
	if (frame_request(lv, c, &st->body) < 0)
		goto fail;
	fg_grpc_format_timeout(lv->o->timeout_ms * 1000, timeout, sizeof(timeout));
	nv[n++] = (nghttp2_nv)NV(":method", "POST", 4);
	nv[n++] = (nghttp2_nv)NV(":scheme", "http", 4);
	nv[n++] = (nghttp2_nv)NV(":path", c->method, strlen(c->method));
	nv[n++] = (nghttp2_nv)NV(":authority", lv->o->target, strlen(lv->o->target));
	nv[n++] = (nghttp2_nv)NV("content-type", "application/grpc", 16);
	nv[n++] = (nghttp2_nv)NV("te", "trailers", 8);
	nv[n++] = (nghttp2_nv)NV("grpc-timeout", timeout, strlen(timeout));
	/* the options' own names win over recorded metadata of the same name */
	if (lv->o->user_header && c->user_key && c->user_key[0])
		nv[n++] = (nghttp2_nv)NV(lv->o->user_header, c->user_key, strlen(c->user_key));
	if (lv->o->recorded_time) {
		snprintf(now, sizeof(now), "%" PRId64, c->start_unix_ms);
		nv[n++] = (nghttp2_nv)NV(FG_STAGE_TEST_NOW_HEADER, now, strlen(now));
	}
	for (i = 0; i < c->n_request_metadata; i++) {
		const Feedguard__Capture__V1__Metadata *m = c->request_metadata[i];
		if (lv->o->user_header && strcmp(m->name, lv->o->user_header) == 0)
			continue;
		if (lv->o->recorded_time && strcmp(m->name, FG_STAGE_TEST_NOW_HEADER) == 0)
			continue;
		if (!reserved(m->name))
			nv[n++] = (nghttp2_nv){ (uint8_t *)m->name, m->value.data, strlen(m->name), m->value.len,
				                NGHTTP2_NV_FLAG_NONE };
	}
	dp.source.ptr = st;
	dp.read_callback = body_read;
	st->sent_us = mono_us();
	id = nghttp2_submit_request(lv->h2, NULL, nv, n, &dp, st);
	free(nv);
	if (id < 0)
		goto fail_st;
	lv->inflight++;
	lv->sent++;
	st->next = lv->streams;
	if (lv->streams)
		lv->streams->prev = st;
	lv->streams = st;
	return 0;

fail:
	free(nv);
fail_st:
	if (st) {
		fg_bufq_free(&st->body);
		free(st);
	}
	feedguard__capture__v1__record__free_unpacked(rec, NULL);
	return FG_ENOMEM;
}

/* --- the loop ------------------------------------------------------------------------ */

/* When call <c> is due, on the run's clock (us from its start). */
static uint64_t due_us(const struct fg_replay_live_opts *o, int64_t first_ms, int64_t start_ms, uint64_t sent)
{
	uint64_t by_pace = 0, by_rate = 0;

	if (o->speed > 0 && start_ms > first_ms)
		by_pace = (uint64_t)((double)(start_ms - first_ms) * 1000.0 / o->speed);
	if (o->rate > 0)
		by_rate = (uint64_t)((double)sent * 1e6 / o->rate);
	return by_pace > by_rate ? by_pace : by_rate;
}

static int pump(struct live *lv, int timeout_ms)
{
	struct pollfd p = { .fd = lv->fd, .events = POLLIN };

	if (nghttp2_session_want_write(lv->h2))
		p.events |= POLLOUT;
	if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR)
		return FG_EIO;
	if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && nghttp2_session_recv(lv->h2) != 0)
		return FG_EIO;
	if (nghttp2_session_send(lv->h2) != 0)
		return FG_EIO;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
	size_t r = (size_t)ceil(p / 100.0 * (double)n);

	return n ? (double)v[r ? r - 1 : 0] / 1000.0 : 0;
}

static void report(struct live *lv, uint64_t elapsed_us, FILE *out)
{
	double secs = (double)elapsed_us / 1e6;
	unsigned b, k;

	qsort(lv->lat_us, lv->nlat, sizeof(*lv->lat_us), cmp_u64);
	fprintf(out, "target: %s, concurrency %u, speed %g, rate %g/s\n", lv->o->target, lv->o->concurrency,
	        lv->o->speed, lv->o->rate);
	fprintf(out, "calls: %llu sent, %llu answered in %.3f s, %.1f req/s\n", (unsigned long long)lv->sent,
	        (unsigned long long)lv->done, secs, secs > 0 ? (double)lv->done / secs : 0);
	fprintf(out, "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", pct_ms(lv->lat_us, lv->nlat, 50),
	        pct_ms(lv->lat_us, lv->nlat, 90), pct_ms(lv->lat_us, lv->nlat, 99), pct_ms(lv->lat_us, lv->nlat, 99.9),
	        lv->nlat ? (double)lv->lat_us[lv->nlat - 1] / 1000.0 : 0);
	fputs("latency histogram:\n", out);
	for (b = 0; b <= NBUCKETS; b++)
		if (lv->hist[b])
			fprintf(out, "  %s %9.1f ms  %llu\n", b < NBUCKETS ? "<=" : "> ",
			        (double)(100ULL << (b < NBUCKETS ? b : NBUCKETS - 1)) / 1000.0, (unsigned long long)lv->hist[b]);
	fputs("status:", out);
	for (k = 0; k <= NSTATUS; k++)
		if (lv->status_count[k])
			fprintf(out, " %s %llu", k < NSTATUS ? fg_grpc_status_name((int)k) : "other",
			        (unsigned long long)lv->status_count[k]);
	fprintf(out, "\nagainst the capture: status as recorded %llu/%llu, response as recorded (byte for byte) "
	        "%llu/%llu\n", (unsigned long long)lv->status_same, (unsigned long long)lv->done,
	        (unsigned long long)lv->body_same, (unsigned long long)lv->done);
	if (lv->raised_asked || lv->raised_kept)
		fprintf(out, "over-fetched when recorded: %llu calls sent with the page size the client asked, "
		        "%llu with the raised one%s\n", (unsigned long long)lv->raised_asked,
		        (unsigned long long)lv->raised_kept,
		        lv->raised_kept ? (lv->o->policy ? " (the policy has no page_size for their method)"
		                                         : " (no --policy: a feedguardd target raises it again)") : "");
}

static int session_new(struct live *lv)
{
	nghttp2_session_callbacks *cb;
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		                        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20 } };
	int rc;

	if (nghttp2_session_callbacks_new(&cb) != 0)
		return FG_ENOMEM;
	nghttp2_session_callbacks_set_send_callback(cb, send_cb);
	nghttp2_session_callbacks_set_recv_callback(cb, recv_cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	rc = nghttp2_session_client_new(&lv->h2, cb, lv);
	nghttp2_session_callbacks_del(cb);
	if (rc != 0)
		return FG_ENOMEM;
	nghttp2_submit_settings(lv->h2, NGHTTP2_FLAG_NONE, iv, 2);
	nghttp2_session_set_local_window_size(lv->h2, NGHTTP2_FLAG_NONE, 0, 64 << 20);
	return 0;
}

/*
 * 1 when a call of <c>'s user is in flight that had ended, as recorded,
 * before <c> began: <c> waits for it, so the target's state sees the
 * user's calls in their order (at --concurrency 64 a README-only trial's
 * 963 calls came back 960 as recorded, one user's calls overtaking each
 * other).  Calls that overlapped when recorded may overlap again.
 */
static int user_busy(const struct live *lv, const Feedguard__Capture__V1__Call *c)
{
	const struct stream *st;

	if (!c->user_key || !c->user_key[0])
		return 0;
	for (st = lv->streams; st; st = st->next) {
		const Feedguard__Capture__V1__Call *o = st->rec->call;
		int64_t end;
		/* a crafted duration must not overflow: such a call never ended */
		if (o->user_key && strcmp(o->user_key, c->user_key) == 0 &&
		    !__builtin_add_overflow(o->start_unix_ms, o->duration_us / 1000, &end) && end <= c->start_unix_ms)
			return 1;
	}
	return 0;
}

int fg_replay_live_run(const struct fg_replay_live_opts *opts, fg_replay_live_next_cb next, void *arg, FILE *out)
{
	struct fg_replay_live_opts o = *opts;
	struct live lv = { .o = &o, .fd = -1 };
	Feedguard__Capture__V1__Record *pending = NULL;
	uint64_t t0;
	int64_t first_ms = 0;
	int rc = 0, more = 1, have_first = 0;

	if (!o.concurrency)
		o.concurrency = DEFAULT_CONCURRENCY;
	if (!o.timeout_ms)
		o.timeout_ms = DEFAULT_TIMEOUT_MS;
	if ((lv.fd = dial(o.target)) < 0)
		return lv.fd;
	if ((rc = session_new(&lv)) < 0)
		goto out;
	t0 = mono_us();
	while (rc == 0 && (more || pending || lv.inflight)) {
		int wait = 100;
		if (!pending && more && (more = next(arg, &pending)) < 0) {
			rc = FG_EIO;
			break;
		}
		if (pending && !have_first) {
			first_ms = pending->call->start_unix_ms;
			have_first = 1;
		}
		while (pending && lv.inflight < o.concurrency) {
			uint64_t due = due_us(&o, first_ms, pending->call->start_unix_ms, lv.sent), now = mono_us() - t0;
			if (due > now) {
				wait = (int)((due - now + 999) / 1000);
				break;
			}
			if (user_busy(&lv, pending->call))
				break;
			if ((rc = submit(&lv, pending)) < 0)
				break;
			pending = NULL;
			if (more && (more = next(arg, &pending)) < 0)
				rc = FG_EIO;
		}
		if (rc == 0 && nghttp2_session_send(lv.h2) != 0)
			rc = FG_EIO;
		if (rc == 0 && (lv.inflight || pending))
			rc = pump(&lv, lv.inflight ? (wait < 100 ? wait : 100) : wait);
	}
	report(&lv, mono_us() - t0, out);
out:
	if (pending)
		feedguard__capture__v1__record__free_unpacked(pending, NULL);
	if (lv.h2)
		nghttp2_session_del(lv.h2);
	while (lv.streams)              /* a connection lost with calls in flight */
		stream_free(&lv, lv.streams);
	close(lv.fd);
	free(lv.lat_us);
	return rc;
}
