/*
 * bench-upstream.c - the fixed gRPC upstream of the feedguard benchmark.
 *
 * A single-threaded h2c server (nghttp2 + libevent) that answers every POST,
 * whatever its :path, the way a unary gRPC handler does: HEADERS (:status
 * 200, content-type application/grpc), DATA holding one gRPC message (a
 * 5-byte prefix and 4096 bytes of 'x', or the bytes of the file given with
 * -r), then trailers (grpc-status: 0).  The request body is read, counted
 * and thrown away; the reply is sent once the request has ended
 * (END_STREAM), as a unary server does, or with -d that many microseconds
 * later (a ranker that takes its time: a libevent timer per call, the loop
 * goes on serving other calls meanwhile).  Anything but POST gets :status
 * 405 and no body.
 *
 * It must cost as little CPU as possible, because it shares a core with the
 * proxy under test and every cycle it spends is taken from that proxy:
 *   - output is batched: all that nghttp2_session_mem_send() yields for one
 *     connection during one read event goes out in a single write();
 *   - closed streams are not kept (nghttp2_option_set_no_closed_streams),
 *     which otherwise grows memory and slows stream lookup;
 *   - windows are large, so WINDOW_UPDATE frames are rare.
 *
 * Usage: bench-upstream [-a ADDR] [-s MAX_STREAMS] [-r FILE] [-d USEC] [PORT]
 *   ADDR         IPv4 address to bind, default 127.0.0.1
 *   MAX_STREAMS  SETTINGS_MAX_CONCURRENT_STREAMS it advertises, default 100
 *   FILE         the reply message: the file's bytes, unframed (the server
 *                adds the 5-byte prefix, flag 0); default 4096 bytes of 'x'
 *   USEC         answer each call this long after its request ended
 *                (default 0: at once, in the same read event)
 *   PORT         default 0: the kernel picks
 * Once listening it prints the port and a newline on stdout.  On SIGUSR1 it
 * writes "stats requests=N request_bytes=M\n" to stderr: the requests
 * answered (POSTs that ended) and the request DATA bytes received since it
 * started, so a benchmark can see what a proxy passed on.  It runs until
 * killed.
 */
#define _GNU_SOURCE 1

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>
#include <nghttp2/nghttp2.h>

/* gRPC wire spec: a message is a 1-byte compressed flag, a 4-byte
 * big-endian length, then the bytes. */
#define GRPC_PREFIX_LEN 5
#define DEFAULT_REPLY_MSG_LEN 4096
/* gRPC's length prefix is 32 bits; keep well below any proxy's limit. */
#define MAX_REPLY_MSG_LEN (64u << 20)

#define DEFAULT_MAX_STREAMS 100
/* Large windows (RFC 9113 section 6.9.2 caps them at 2^31-1): the peer
 * rarely waits for us and we rarely send WINDOW_UPDATE. */
#define STREAM_WINDOW (16 << 20)
#define CONN_WINDOW (1 << 30)
#define LISTEN_BACKLOG 4096
#define READ_CHUNK (64 * 1024)
/* Reads per read event before we answer: bounds latency and the size of
 * one batch. */
#define MAX_READS_PER_EVENT 4
/* Stop pulling frames out of nghttp2 while this much output is unsent:
 * the peer is not reading, so let it push back. */
#define OUT_HIGH_WATER (1 << 20)

/* Marks a stream whose request is not a POST (stream user data).  Any other
 * value is the offset reached in <reply> while sending its DATA. */
#define STREAM_NOT_POST ((void *)~(uintptr_t)0)

struct delayed;

struct conn {
	int fd;
	nghttp2_session *session;
	struct event *rev;              /* readable */
	struct event *wev;              /* writable: armed only while <out> has unsent bytes */
	char *out;                      /* frames waiting for one write() */
	size_t out_len;                 /* bytes in <out> from <out_off> on are unsent */
	size_t out_off;
	size_t out_cap;
	struct delayed *delayed;        /* calls waiting for their -d timer, a list */
};

/* A call whose answer waits for -d: its timer.  Kept on a free list for
 * reuse (the event is made once), on its connection's list while armed. */
struct delayed {
	struct event *ev;
	struct conn *c;
	int32_t stream_id;
	struct delayed *next, *prev;
};

static struct event_base *base;
static nghttp2_session_callbacks *callbacks;
static nghttp2_option *option;
static uint32_t max_streams = DEFAULT_MAX_STREAMS;
static uint8_t *reply;                  /* prefix + message, built once in main */
static size_t reply_len;
static unsigned long long stat_requests;        /* POSTs answered */
static struct timeval delay_tv;         /* -d */
static const struct timeval *delay_common;      /* the base's common timeout for it */
static struct delayed *delayed_free;
static unsigned long long stat_request_bytes;   /* request DATA payload received */
static uint8_t rbuf[READ_CHUNK];        /* one thread: one read buffer serves every connection */

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, \
		   NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE }

static const nghttp2_nv reply_headers[] = {
	NV(":status", "200"),
	NV("content-type", "application/grpc"),
};
static const nghttp2_nv reply_trailers[] = {
	NV("grpc-status", "0"),
};
static const nghttp2_nv not_post_headers[] = {
	NV(":status", "405"),
};

static void delayed_put(struct delayed *d)
{
	struct conn *c = d->c;

	if (d->prev)
		d->prev->next = d->next;
	else
		c->delayed = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->c = NULL;
	d->prev = NULL;
	d->next = delayed_free;
	delayed_free = d;
}

static void conn_free(struct conn *c)
{
	while (c->delayed) {
		event_del(c->delayed->ev);
		delayed_put(c->delayed);
	}
	nghttp2_session_del(c->session);
	event_free(c->rev);
	event_free(c->wev);
	close(c->fd);
	free(c->out);
	free(c);
}

/* Appends <len> bytes to <c>'s output.  0, or -1 when out of memory. */
static int out_append(struct conn *c, const uint8_t *data, size_t len)
{
	size_t cap;
	char *p;

	if (c->out_len + len > c->out_cap) {
		cap = c->out_cap ? c->out_cap : 64 * 1024;
		while (cap < c->out_len + len)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p)
			return -1;
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

/* Writes what <c> has buffered.  0 when all of it went (or the socket is
 * full and the write event is armed), -1 when the connection is dead. */
static int out_write(struct conn *c)
{
	ssize_t n;

	while (c->out_off < c->out_len) {
		n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(c->wev, NULL);
			return 0;
		}
		if (n <= 0)
			return -1;
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

/* Pulls every pending frame out of nghttp2 into one buffer and writes it in
 * one go (in batches of OUT_HIGH_WATER), until nghttp2 has nothing more or
 * the socket is full.  A batch cut at the mark must not wait for the next
 * read event: that may never come, e.g. when nghttp2 interleaved the DATA of
 * many large replies and the peer waits for the end of one of them.  0, or
 * -1 when <c> must be closed. */
static int conn_flush(struct conn *c)
{
	const uint8_t *data;
	ssize_t n = 1;

	while (n > 0) {
		if (c->out_off < c->out_len)
			return 0;       /* a write is pending; on_write calls us again */
		while (c->out_len < OUT_HIGH_WATER) {
			n = nghttp2_session_mem_send(c->session, &data);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
			if (out_append(c, data, (size_t)n) < 0)
				return -1;
		}
		if (out_write(c) < 0)
			return -1;
	}
	if (c->out_len == 0 && !nghttp2_session_want_read(c->session) &&
	    !nghttp2_session_want_write(c->session))
		return -1;      /* GOAWAY exchanged and everything sent */
	return 0;
}

static int answer(nghttp2_session *session, int32_t stream_id);

/* -d: the time is up for one call.  A stream the client reset meanwhile is
 * gone (no closed streams are kept) and gets nothing. */
static void on_delay(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg;
	struct conn *c = d->c;
	int32_t stream_id = d->stream_id;

	delayed_put(d);
	if (nghttp2_session_find_stream(c->session, stream_id) &&
	    answer(c->session, stream_id) != 0)
		goto close_conn;
	if (conn_flush(c) < 0)
		goto close_conn;
	return;

close_conn:
	conn_free(c);
}

/* -d: arms the call's timer.  0, or -1 when out of memory. */
static int answer_later(struct conn *c, int32_t stream_id)
{
	struct delayed *d = delayed_free;

	if (d) {
		delayed_free = d->next;
	} else {
		if (!(d = calloc(1, sizeof(*d))))
			return -1;
		if (!(d->ev = evtimer_new(base, on_delay, d))) {
			free(d);
			return -1;
		}
	}
	d->c = c;
	d->stream_id = stream_id;
	d->prev = NULL;
	d->next = c->delayed;
	if (c->delayed)
		c->delayed->prev = d;
	c->delayed = d;
	if (evtimer_add(d->ev, delay_common) < 0) {
		delayed_put(d);
		return -1;
	}
	return 0;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	ssize_t n;
	int i;

	for (i = 0; i < MAX_READS_PER_EVENT; i++) {
		n = read(fd, rbuf, sizeof(rbuf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0)
			goto close_conn;
		if (nghttp2_session_mem_recv(c->session, rbuf, (size_t)n) < 0)
			goto close_conn;
		if ((size_t)n < sizeof(rbuf))
			break;
	}
	if (conn_flush(c) < 0)
		goto close_conn;
	return;

close_conn:
	conn_free(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (out_write(c) < 0 || conn_flush(c) < 0)
		conn_free(c);
}

/* Copies the reply into DATA frames; on its last byte queues the trailers
 * (allowed from inside this callback, see nghttp2.h). */
static ssize_t read_reply(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	size_t off = (uintptr_t)nghttp2_session_get_stream_user_data(session, stream_id);
	size_t n = reply_len - off;

	if (n > length)
		n = length;
	memcpy(buf, reply + off, n);
	off += n;
	nghttp2_session_set_stream_user_data(session, stream_id, (void *)(uintptr_t)off);
	if (off == reply_len) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(session, stream_id, reply_trailers, 1) != 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

static int answer(nghttp2_session *session, int32_t stream_id)
{
	nghttp2_data_provider prd = { .read_callback = read_reply };

	if (nghttp2_session_get_stream_user_data(session, stream_id) == STREAM_NOT_POST)
		return nghttp2_submit_response(session, stream_id, not_post_headers, 1, NULL);
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	stat_requests++;
	return nghttp2_submit_response(session, stream_id, reply_headers, 2, &prd);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (namelen == 7 && memcmp(name, ":method", 7) == 0 &&
	    !(valuelen == 4 && memcmp(value, "POST", 4) == 0))
		nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, STREAM_NOT_POST);
	return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data)
{
	stat_request_bytes += len;
	return 0;
}

/* A unary server answers once the request has ended (-d: that long after). */
static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	if (delay_common && nghttp2_session_get_stream_user_data(session, frame->hd.stream_id) != STREAM_NOT_POST) {
		if (answer_later(user_data, frame->hd.stream_id) != 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return 0;
	}
	if (answer(session, frame->hd.stream_id) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int conn_start_session(struct conn *c)
{
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
	};

	if (nghttp2_session_server_new2(&c->session, callbacks, c, option) != 0)
		return -1;
	if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
	    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
		return -1;
	return 0;
}

static void conn_accept(int fd)
{
	struct conn *c;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail_close_fd;
	c->fd = fd;
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->wev = event_new(base, fd, EV_WRITE, on_write, c);
	if (!c->rev || !c->wev || conn_start_session(c) < 0 || event_add(c->rev, NULL) < 0 ||
	    conn_flush(c) < 0)
		goto fail_free_conn;
	return;

fail_free_conn:
	conn_free(c);       /* closes <fd> */
	return;
fail_close_fd:
	close(fd);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	int fd;

	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				perror("bench-upstream: accept");   /* EMFILE: retried on the next event */
			return;
		}
		conn_accept(fd);
	}
}

/* Binds <addr>:<port>, prints the bound port.  The listening fd, or -1. */
static int listen_on(const char *addr, int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	socklen_t len = sizeof(sin);
	int fd, one = 1;

	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
		fprintf(stderr, "bench-upstream: bad IPv4 address %s\n", addr);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		goto fail_close_fd;
	printf("%u\n", ntohs(sin.sin_port));
	fflush(stdout);
	return fd;

fail_close_fd:
	close(fd);
fail:
	perror("bench-upstream: listen");
	return -1;
}

static int setup_nghttp2(void)
{
	if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&option) != 0)
		return -1;
	nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
	nghttp2_option_set_no_closed_streams(option, 1);
	return 0;
}

static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
	fprintf(stderr, "stats requests=%llu request_bytes=%llu\n", stat_requests, stat_request_bytes);
}

/* Builds <reply>: the gRPC prefix, then <file>'s bytes or the default
 * message.  0, or -1 with a message printed. */
static int load_reply(const char *file)
{
	size_t len = DEFAULT_REPLY_MSG_LEN, got = 0;
	struct stat st;
	FILE *f = NULL;
	size_t n;

	if (file) {
		f = fopen(file, "rb");
		if (!f || fstat(fileno(f), &st) < 0) {
			perror(file);
			goto fail;
		}
		if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_REPLY_MSG_LEN) {
			fprintf(stderr, "bench-upstream: %s: not a regular file of at most %u bytes\n", file,
			        MAX_REPLY_MSG_LEN);
			goto fail;
		}
		len = (size_t)st.st_size;
	}
	reply_len = GRPC_PREFIX_LEN + len;
	reply = malloc(reply_len);
	if (!reply) {
		fprintf(stderr, "bench-upstream: out of memory\n");
		goto fail;
	}
	reply[0] = 0;           /* not compressed */
	reply[1] = (len >> 24) & 0xff;
	reply[2] = (len >> 16) & 0xff;
	reply[3] = (len >> 8) & 0xff;
	reply[4] = len & 0xff;
	if (!f) {
		memset(reply + GRPC_PREFIX_LEN, 'x', len);
		return 0;
	}
	while (got < len && (n = fread(reply + GRPC_PREFIX_LEN + got, 1, len - got, f)) > 0)
		got += n;
	if (got != len) {
		fprintf(stderr, "bench-upstream: %s: short read\n", file);
		goto fail;
	}
	fclose(f);
	return 0;

fail:
	if (f)
		fclose(f);
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench-upstream [-a ADDR] [-s MAX_STREAMS] [-r FILE] [-d USEC] [PORT]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1", *reply_file = NULL;
	struct event_config *ecfg;
	struct event *lev, *sev;
	int opt, port = 0, lfd;
	long delay_us = 0;
	char *end;

	while ((opt = getopt(argc, argv, "a:s:r:d:")) != -1) {
		if (opt == 'a')
			addr = optarg;
		else if (opt == 'd') {
			errno = 0;
			delay_us = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || delay_us < 0 || delay_us > 60 * 1000000L)
				usage();
		}
		else if (opt == 'r')
			reply_file = optarg;
		else if (opt == 's' && atol(optarg) > 0)
			max_streams = (uint32_t)atol(optarg);
		else
			usage();
	}
	if (optind < argc)
		port = atoi(argv[optind++]);
	if (optind != argc || port < 0 || port > 65535)
		usage();

	signal(SIGPIPE, SIG_IGN);
	if (load_reply(reply_file) < 0)
		return 1;

	/* -d: timers to the microsecond (epoll's own timeout has whole
	 * milliseconds; the flag makes libevent use a timerfd).  Without -d
	 * the loop is as it always was. */
	ecfg = event_config_new();
	if (ecfg && delay_us > 0)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	base = ecfg ? event_base_new_with_config(ecfg) : NULL;
	if (ecfg)
		event_config_free(ecfg);
	if (!base || setup_nghttp2() < 0) {
		fprintf(stderr, "bench-upstream: out of memory\n");
		return 1;
	}
	if (delay_us > 0) {
		/* Every call waits as long: a common timeout is a queue, not a heap. */
		delay_tv.tv_sec = delay_us / 1000000;
		delay_tv.tv_usec = delay_us % 1000000;
		delay_common = event_base_init_common_timeout(base, &delay_tv);
		if (!delay_common)
			return 1;
	}
	/* Before the port is printed: SIGUSR1 kills a process that has not
	 * taken it over yet. */
	sev = evsignal_new(base, SIGUSR1, on_usr1, NULL);
	if (!sev || event_add(sev, NULL) < 0)
		return 1;
	lfd = listen_on(addr, port);
	if (lfd < 0)
		return 1;
	lev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
	if (!lev || event_add(lev, NULL) < 0)
		return 1;
	event_base_dispatch(base);
	return 0;
}
