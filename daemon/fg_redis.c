/* fg_redis.c - one worker's Redis link on hiredis 0.14 async; see fg_redis.h. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>
#include <openssl/evp.h>

#include "fg_bufq.h"
#include "fg_clock.h"
#include "fg_error.h"
#include "fg_file.h"
#include "fg_log.h"
#include "fg_fmt.h"
#include "fg_redis.h"
#include "fg_redisreply.h"

#define WHY_LEN 256
#define PASSWORD_MAX 512        /* Redis has no limit; a longer file is surely not a password */
#define SHA1_HEX 40
#define OBUF_KEEP (64 * 1024)   /* a write buffer kept between batches; a larger one is freed */

/* Who a command is for: only CMD_USER has a caller waiting. */
enum cmd_kind {
	CMD_USER,
	CMD_HANDSHAKE,          /* AUTH, SELECT, SCRIPT LOAD, PING of a connect */
	CMD_RELOAD,             /* SCRIPT LOAD after a NOSCRIPT */
};

/*
 * One command held by hiredis.  hiredis calls its reply callback exactly
 * once per command (with the reply, or NULL when the context is freed), so
 * that callback is where a command ends and goes back to the free list,
 * whatever happened to its caller before: a timeout only forgets the
 * caller (<cb> = NULL).  Commands are kept for reuse.
 */
struct rcmd {
	struct fg_redis *link;
	enum cmd_kind kind;
	fg_redis_reply_cb *cb;          /* NULL once the caller got its result (or for internal ones) */
	void *arg;
	int script;                     /* script index of an EVALSHA, else -1 */
	unsigned retried;               /* the EVALSHA was already sent again after NOSCRIPT */
	const char *what;               /* handshake step, for messages */
	uint64_t sent_us;
	uint64_t deadline_us;           /* the caller's timeout, on fg_clock */
	struct fg_bufq wire;            /* the command as sent (RESP), kept for the NOSCRIPT retry */
	TAILQ_ENTRY(rcmd) q;            /* in link->free while unused, in link->inflight while a
	                                 * caller's command is unanswered */
};

struct script {
	char sha[SHA1_HEX + 1];
	char *body;
	size_t len;
};

struct fg_redis {
	struct event_base *base;
	redisAsyncContext *ac;          /* NULL while DOWN or once given up */
	enum fg_redis_state state;
	unsigned gen;                   /* bumped at each connect: a deferred drop names its context */
	unsigned drop_gen;              /* the generation a pending drop_ev is for */
	unsigned was_connected;         /* the current context reached CONNECTED */
	unsigned handshake_left;        /* handshake replies still awaited */
	unsigned handshake_failed;      /* a handshake step failed: the drop is on its way */
	struct fg_redisreply_arena replies; /* the reply being read is built here */

	/* settings */
	char address[128];
	char host[64];                  /* IP for TCP, or "" for a unix socket */
	int port;
	char *password;                 /* NUL-terminated; wiped at free */
	int db;
	int64_t connect_timeout_us;
	int64_t stall_timeout_us;
	int64_t backoff_initial_us;
	int64_t backoff_max_us;
	unsigned max_inflight;
	fg_redis_state_cb *on_state;
	void *state_arg;
	fg_redis_latency_cb *on_latency;
	void *latency_arg;

	struct script scripts[FG_REDIS_MAX_SCRIPTS];
	unsigned nscripts;

	struct event *connect_ev;       /* connect + handshake deadline */
	struct event *retry_ev;         /* next connect */
	struct event *drop_ev;          /* a drop decided inside a hiredis callback */
	struct event *deadline_ev;      /* the next timeout or stall deadline of <inflight> */
	uint64_t deadline_at_us;        /* when deadline_ev fires, on fg_clock; 0 when it is not armed */
	unsigned inflight_gen;          /* bumped when a command leaves <inflight> */
	unsigned inflight_unordered;    /* a command in <inflight> has an earlier deadline than one before it */
	uint64_t inflight_last_deadline_us;     /* the latest deadline in <inflight> */
	int64_t backoff_us;             /* 0 after a good connect */
	uint64_t rng;                   /* xorshift state for jitter: no shared random() */
	char why[WHY_LEN];              /* last_error */
	char pending_why[WHY_LEN];      /* why of the drop drop_ev will do */
	char drop_why[WHY_LEN + 160];   /* what DOWN results say while we free a context: address and why */

	TAILQ_HEAD(, rcmd) free;
	TAILQ_HEAD(, rcmd) inflight;    /* callers' commands written and unanswered, oldest first */
	struct fg_redis_stats stats;
};

static void link_connect(struct fg_redis *r);

static struct timeval us_to_tv(int64_t us)
{
	struct timeval tv = { .tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000) };
	return tv;
}

/* A uniform 64-bit random number (xorshift64*): jitter only, not secrets. */
static uint64_t rng_next(struct fg_redis *r)
{
	r->rng ^= r->rng >> 12;
	r->rng ^= r->rng << 25;
	r->rng ^= r->rng >> 27;
	return r->rng * 0x2545F4914F6CDD1DULL;
}

static void set_state(struct fg_redis *r, enum fg_redis_state st, const char *why)
{
	if (r->state == st)
		return;
	r->state = st;
	if (r->on_state)
		r->on_state(r->state_arg, st, why);
}

/* --- commands ---------------------------------------------------------- */

static struct rcmd *cmd_get(struct fg_redis *r, enum cmd_kind kind)
{
	struct rcmd *c = TAILQ_FIRST(&r->free);

	if (c) {
		TAILQ_REMOVE(&r->free, c, q);
	} else {
		c = calloc(1, sizeof(*c));
		if (!c)
			return NULL;
		c->link = r;
	}
	c->kind = kind;
	c->cb = NULL;
	c->arg = NULL;
	c->script = -1;
	c->retried = 0;
	c->what = NULL;
	fg_bufq_clear(&c->wire);
	return c;
}

static void cmd_put(struct rcmd *c)
{
	TAILQ_INSERT_HEAD(&c->link->free, c, q);
}

/* A caller's command was answered or its context is gone: out of
 * <inflight>.  The deadline timer is left as it is: when it fires it finds
 * what is still due (one timer for the link, where a timer per command
 * cost two event_add and an event_del per call). */
static void inflight_remove(struct fg_redis *r, struct rcmd *c)
{
	TAILQ_REMOVE(&r->inflight, c, q);
	r->inflight_gen++;
	r->stats.inflight--;
	if (TAILQ_EMPTY(&r->inflight)) {
		r->inflight_unordered = 0;
		r->inflight_last_deadline_us = 0;
	}
}

/*
 * Into <inflight>, last.  The list is usually ordered by deadline too
 * (every caller of a link gives the same timeout): then the commands whose
 * caller timed out are a prefix, and the firing looks no further than the
 * first one still waiting.  A shorter timeout after a longer one makes the
 * firings walk the whole list until it empties.
 */
static void inflight_add(struct fg_redis *r, struct rcmd *c)
{
	if (c->deadline_us < r->inflight_last_deadline_us)
		r->inflight_unordered = 1;
	else
		r->inflight_last_deadline_us = c->deadline_us;
	TAILQ_INSERT_TAIL(&r->inflight, c, q);
	r->stats.inflight++;
}

/* The RESP bytes of one bulk string of <n> bytes: "$<n>\r\n<bytes>\r\n". */
static size_t wire_arg_size(size_t n)
{
	return 1 + fg_fmt_u64_len(n) + 2 + n + 2;
}

/* "<c><n>\r\n" at <w>: an array's or a bulk string's header; its length. */
static size_t wire_put_header(uint8_t *w, char c, size_t n)
{
	size_t len;

	w[0] = (uint8_t)c;
	len = 1 + fg_fmt_u64((char *)w + 1, n);
	w[len++] = '\r';
	w[len++] = '\n';
	return len;
}

/* One bulk string at <w>, which has wire_arg_size(<n>) bytes; their number. */
static size_t wire_put_arg(uint8_t *w, const char *p, size_t n)
{
	size_t len = wire_put_header(w, '$', n);

	memcpy(w + len, p, n);
	len += n;
	w[len++] = '\r';
	w[len++] = '\n';
	return len;
}

/*
 * A whole command into <q> in one reservation: the array's header, the
 * <npre> arguments at <pre> (lengths <prelen>), then the caller's <argc>
 * at <argv> (lengths <argvlen>, or NULL: C strings).  A feed call sends
 * two commands of 4 to 53 arguments: one reservation and one pass of
 * writes each, not a reservation per argument.
 */
static int wire_command(struct fg_bufq *q, int npre, const char *const *pre, const size_t *prelen, int argc,
                        const char *const *argv, const size_t *argvlen)
{
	size_t lens[FG_REDIS_MAX_ARGS], need = 1 + FG_FMT_I64_MAX + 2, at;
	uint8_t *w;
	int i;

	if (argc > FG_REDIS_MAX_ARGS)
		return FG_EINVAL;
	for (i = 0; i < npre; i++)
		need += wire_arg_size(prelen[i]);
	for (i = 0; i < argc; i++) {
		lens[i] = argvlen ? argvlen[i] : strlen(argv[i]);
		need += wire_arg_size(lens[i]);
	}
	if (fg_bufq_reserve(q, need) < 0)
		return FG_ENOMEM;
	w = fg_bufq_tail(q);
	at = wire_put_header(w, '*', (size_t)(npre + argc));
	for (i = 0; i < npre; i++)
		at += wire_put_arg(w + at, pre[i], prelen[i]);
	for (i = 0; i < argc; i++)
		at += wire_put_arg(w + at, argv[i], lens[i]);
	fg_bufq_commit(q, at);
	return 0;
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata);

/* Hand <c>'s wire to hiredis.  0, FG_ENOMEM, or FG_EUNAVAIL when hiredis
 * refuses (the context is going down). */
static int cmd_send(struct fg_redis *r, struct rcmd *c)
{
	/* hiredis peeks at the command as a C string (to spot SUBSCRIBE) and
	 * reads a byte past its end: terminate it, outside its length. */
	if (fg_bufq_reserve(&c->wire, 1) < 0)
		return FG_ENOMEM;
	*fg_bufq_tail(&c->wire) = '\0';
	if (!r->ac || redisAsyncFormattedCommand(r->ac, reply_cb, c, (const char *)fg_bufq_head(&c->wire),
	                                         fg_bufq_len(&c->wire)) != REDIS_OK)
		return FG_EUNAVAIL;
	return 0;
}

static void result_from_reply(struct fg_redis_result *res, const redisReply *rep)
{
	memset(res, 0, sizeof(*res));
	res->reply = rep;
	switch (rep->type) {
	case REDIS_REPLY_INTEGER:
		res->kind = FG_REDIS_R_INT;
		res->integer = rep->integer;
		break;
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
		res->kind = FG_REDIS_R_STR;
		res->str = rep->str;
		res->len = rep->len;
		break;
	case REDIS_REPLY_ARRAY:
		res->kind = FG_REDIS_R_ARRAY;
		res->nelem = rep->elements;
		break;
	case REDIS_REPLY_ERROR:
		res->kind = FG_REDIS_R_ERROR;
		res->str = rep->str;
		res->len = rep->len;
		break;
	default:
		res->kind = FG_REDIS_R_NIL;
		break;
	}
}

/* Give the caller of <c> its one result: no reply (<kind>, <why>) or <rep>. */
static void cmd_deliver(struct rcmd *c, enum fg_redis_kind kind, const char *why, const redisReply *rep)
{
	struct fg_redis_result res;
	fg_redis_reply_cb *cb = c->cb;

	if (!cb)
		return;
	c->cb = NULL;
	if (rep) {
		result_from_reply(&res, rep);
		if (res.kind == FG_REDIS_R_ERROR)
			c->link->stats.errors++;
	} else {
		memset(&res, 0, sizeof(res));
		res.kind = kind;
		res.str = why;
		res.len = strlen(why);
		if (kind == FG_REDIS_R_TIMEOUT)
			c->link->stats.timeouts++;
		else
			c->link->stats.down++;
	}
	cb(c->arg, &res);
}

/* --- dropping and reconnecting ----------------------------------------- */

static void schedule_connect(struct fg_redis *r)
{
	int64_t delay;
	struct timeval tv;

	if (r->was_connected) {
		/* A link that worked: come back soon, but not in step with the
		 * rest of the fleet that lost Redis at the same moment. */
		r->backoff_us = 0;
		delay = (int64_t)(rng_next(r) % (uint64_t)(r->backoff_initial_us + 1));
	} else {
		r->backoff_us = r->backoff_us ? r->backoff_us * 2 : r->backoff_initial_us;
		if (r->backoff_us > r->backoff_max_us)
			r->backoff_us = r->backoff_max_us;
		delay = r->backoff_us / 2 + (int64_t)(rng_next(r) % (uint64_t)(r->backoff_us / 2 + 1));
		r->stats.connect_failures++;
	}
	r->was_connected = 0;
	tv = us_to_tv(delay);
	evtimer_add(r->retry_ev, &tv);
}

/* The current context is gone or going: DOWN, remember why, plan the next
 * connect.  Does not touch the context. */
static void link_lost(struct fg_redis *r, const char *why)
{
	enum fg_log_level level = r->was_connected ? FG_LOG_WARN : FG_LOG_INFO;
	char q[WHY_LEN + 8];

	evtimer_del(r->connect_ev);
	snprintf(r->why, sizeof(r->why), "%s", why);
	fg_log(level, "redis_down", "redis=%s why=%s", r->address, fg_log_quote(q, sizeof(q), r->why));
	schedule_connect(r);
	set_state(r, FG_REDIS_DOWN, r->why);
}

/*
 * Give up the current context now: DOWN first (so callbacks cannot submit
 * to it), then every command on it gets its callback (DOWN for the callers
 * still waiting) from inside redisAsyncFree.  Never from inside a hiredis
 * callback of that context (drop_deferred is for that).
 */
static void link_drop(struct fg_redis *r, const char *why)
{
	redisAsyncContext *ac = r->ac;

	if (!ac)
		return;
	r->ac = NULL;
	snprintf(r->drop_why, sizeof(r->drop_why), "redis %s: %s", r->address, why);
	link_lost(r, why);
	redisAsyncFree(ac);
}

static void drop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_redis *r = arg;

	if (r->ac && r->gen == r->drop_gen)
		link_drop(r, r->pending_why);
}

/* Drop the current context from the loop, after the hiredis callback we
 * are in returns: freeing a context inside its own callback corrupts it. */
static void drop_deferred(struct fg_redis *r, const char *why)
{
	r->drop_gen = r->gen;
	snprintf(r->pending_why, sizeof(r->pending_why), "%s", why);
	event_active(r->drop_ev, EV_TIMEOUT, 0);
}

/* Arm the link's timer for <at_us> on fg_clock, <now_us> being now. */
static void deadline_arm(struct fg_redis *r, uint64_t at_us, uint64_t now_us)
{
	struct timeval tv = us_to_tv(at_us > now_us ? (int64_t)(at_us - now_us) : 0);

	r->deadline_at_us = at_us ? at_us : 1;
	evtimer_add(r->deadline_ev, &tv);
}

/* When an unanswered command means Redis stopped answering: its stall
 * timeout after it was sent, and never before its caller's timeout. */
static uint64_t stall_at(const struct fg_redis *r, const struct rcmd *c)
{
	uint64_t at = c->sent_us + (uint64_t)r->stall_timeout_us;

	return at > c->deadline_us ? at : c->deadline_us;
}

/* The earliest of the waiting callers' timeouts and the stall deadlines
 * of the others; 0 when nothing is in flight.  Once per firing: about once
 * per command timeout while Redis answers. */
static uint64_t deadline_next(const struct fg_redis *r)
{
	const struct rcmd *c;
	uint64_t at = 0, t;

	TAILQ_FOREACH(c, &r->inflight, q) {
		t = c->cb ? c->deadline_us : stall_at(r, c);
		if (at == 0 || t < at)
			at = t;
		if (c->cb && !r->inflight_unordered)
			break;          /* every later one is due later */
	}
	return at;
}

/* 1 when a command whose caller timed out has waited past its stall deadline. */
static int stalled(const struct fg_redis *r, uint64_t now)
{
	const struct rcmd *c;

	TAILQ_FOREACH(c, &r->inflight, q) {
		if (!c->cb && now >= stall_at(r, c))
			return 1;
		if (!r->inflight_unordered)
			break;          /* the first has the earliest stall deadline */
	}
	return 0;
}

/* Every caller whose timeout passed gets TIMEOUT.  A callback may submit
 * (appended, not yet due) but a command may also leave the list meanwhile
 * (a callback that ends up freeing a context): then walk again. */
static void deliver_timeouts(struct fg_redis *r, uint64_t now)
{
	struct rcmd *c;
	unsigned gen;

again:
	gen = r->inflight_gen;
	TAILQ_FOREACH(c, &r->inflight, q) {
		if (c->deadline_us > now && !r->inflight_unordered)
			break;
		if (!c->cb || c->deadline_us > now)
			continue;
		cmd_deliver(c, FG_REDIS_R_TIMEOUT, "redis: no reply within the command timeout", NULL);
		if (gen != r->inflight_gen)
			goto again;
	}
}

/*
 * The link's one timer.  libevent measures from the time it cached at the
 * top of the loop iteration, which may be before a submit: every deadline
 * is checked again on fg_clock, so a caller gets its whole timeout.  A
 * command still unanswered at its stall deadline means Redis stopped
 * answering: drop the link.
 */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_redis *r = arg;
	uint64_t now = fg_clock_now_us(), at;

	(void)fd;
	(void)what;
	r->deadline_at_us = 0;
	deliver_timeouts(r, now);
	if (stalled(r, now)) {
		r->stats.drops++;
		link_drop(r, "no reply within the stall timeout (Redis paused or overloaded?)");
		return;
	}
	/* Callbacks above may have armed it for a later deadline of their own. */
	if ((at = deadline_next(r)) != 0)
		deadline_arm(r, at, now);
}

/* --- replies ----------------------------------------------------------- */

static void handshake_reply(struct fg_redis *r, struct rcmd *c, const redisReply *rep)
{
	char why[WHY_LEN];

	if (r->handshake_failed)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		/* Redis's words only: the password is never part of them. */
		snprintf(why, sizeof(why), "%s failed: %s", c->what, rep->str);
		r->handshake_failed = 1;
		drop_deferred(r, why);
		return;
	}
	if (--r->handshake_left > 0)
		return;
	evtimer_del(r->connect_ev);
	r->was_connected = 1;
	r->backoff_us = 0;
	fg_log(FG_LOG_INFO, "redis_connected", "redis=%s", r->address);
	set_state(r, FG_REDIS_CONNECTED, NULL);
}

static int is_noscript(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* EVALSHA answered NOSCRIPT: SCRIPT LOAD, then the same EVALSHA again on
 * the same command (its timer keeps running).  0 if both were sent. */
static int script_reload(struct fg_redis *r, struct rcmd *c)
{
	struct script *s = &r->scripts[c->script];
	struct rcmd *load = cmd_get(r, CMD_RELOAD);
	const char *argv[3] = { "SCRIPT", "LOAD", s->body };
	const size_t argvlen[3] = { 6, 4, s->len };

	if (!load)
		return FG_ENOMEM;
	if (wire_command(&load->wire, 0, NULL, NULL, 3, argv, argvlen) < 0 || cmd_send(r, load) < 0) {
		cmd_put(load);
		return FG_EUNAVAIL;
	}
	c->retried = 1;
	return cmd_send(r, c);
}

static void user_reply(struct fg_redis *r, struct rcmd *c, const redisReply *rep)
{
	uint64_t us = fg_clock_now_us() - c->sent_us;

	if (c->script >= 0 && !c->retried && c->cb && is_noscript(rep)) {
		if (script_reload(r, c) == 0) {
			r->stats.noscript_reloads++;
			return;         /* <c> lives on: hiredis holds it again */
		}
	}
	r->stats.replies++;
	r->stats.latency_sum_us += us;
	if (r->on_latency)
		r->on_latency(r->latency_arg, us);
	inflight_remove(r, c);
	cmd_deliver(c, 0, NULL, rep);
	cmd_put(c);
}

/* A command's end in hiredis: <reply> is NULL when its context is being
 * freed (by us, or by hiredis after an error). */
static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rcmd *c = privdata;
	struct fg_redis *r = c->link;
	const redisReply *rep = reply;

	if (!rep) {
		/* The context is going.  When hiredis is the one freeing it (an
		 * error or EOF; on_disconnect comes after these callbacks), the
		 * link goes DOWN now so callbacks cannot submit to it. */
		if (r->ac == ac) {
			char why[WHY_LEN];
			snprintf(why, sizeof(why), "connection lost: %s", ac->err ? ac->errstr : "closed");
			snprintf(r->drop_why, sizeof(r->drop_why), "redis %s: %s", r->address, why);
			r->ac = NULL;
			link_lost(r, why);
		}
		if (c->kind == CMD_USER) {
			inflight_remove(r, c);
			cmd_deliver(c, FG_REDIS_R_DOWN, r->drop_why, NULL);
		}
		cmd_put(c);
		return;
	}
	switch (c->kind) {
	case CMD_USER:
		user_reply(r, c, rep);
		return;
	case CMD_HANDSHAKE:
		if (r->ac == ac)
			handshake_reply(r, c, rep);
		break;
	case CMD_RELOAD:
		if (rep->type == REDIS_REPLY_ERROR)
			fg_log(FG_LOG_WARN, "redis_script_load", "redis=%s error=\"%.100s\"", r->address, rep->str);
		break;
	}
	cmd_put(c);
}

/* --- the context's events ------------------------------------------------ */

/*
 * hiredis's own libevent adapter (adapters/libevent.h) registers a write
 * event for every batch of commands and re-adds a one-shot read event after
 * every read: two epoll_ctl calls and an extra loop wakeup per batch, which
 * at one call in flight cost more than the state work itself.  This one
 * keeps the read event persistent and, once connected, writes a batch from
 * a user event activated in the same loop iteration (no system call until
 * the write itself); only a write the socket could not take whole, and
 * the connect, wait for EV_WRITE.
 */
struct link_events {
	redisAsyncContext *ac;
	struct event *rev;              /* EV_READ | EV_PERSIST */
	struct event *wev;              /* EV_WRITE, one-shot: connect, or a partial write */
	struct event *flush;            /* activated to write what was just submitted */
	unsigned requeued;              /* <flush> went once to the back of the loop's active queue */
	unsigned writing;               /* inside redisAsyncHandleWrite: more to write waits for EV_WRITE */
	unsigned busy;                  /* inside a callback that may free the context */
	unsigned dead;                  /* cleanup ran while busy: the callback frees */
};

/*
 * A connected link's batch, written here rather than by hiredis 0.14's
 * redisBufferWrite, which frees the write buffer after every complete
 * write and grows a new one command by command (sdsMakeRoomFor: about a
 * realloc per command, 0.5 µs a call in a profile).  sdsclear keeps the
 * buffer for the next batch.  Returns 0, or -1 when hiredis must see the
 * socket's error itself (it writes again, fails and frees the context).
 */
static int events_write_kept(struct link_events *e)
{
	redisContext *c = &e->ac->c;
	size_t len = sdslen(c->obuf);
	ssize_t n;

	if (len == 0)
		return 0;
	n = write(c->fd, c->obuf, len);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
	if ((size_t)n < len) {
		sdsrange(c->obuf, (int)n, -1);
		return 0;
	}
	if (sdsavail(c->obuf) + len > OBUF_KEEP) {
		sds fresh = sdsempty();
		if (!fresh)
			return -1;
		sdsfree(c->obuf);
		c->obuf = fresh;
	} else {
		sdsclear(c->obuf);
	}
	return 0;
}

/* hiredis may free the context (and call cleanup) inside HandleWrite:
 * <e> outlives it until this returns. */
static void events_write(struct link_events *e)
{
	redisContext *c = &e->ac->c;

	if ((c->flags & REDIS_CONNECTED) && !c->err && events_write_kept(e) == 0) {
		if (sdslen(c->obuf) > 0)
			event_add(e->wev, NULL);
		return;
	}
	e->busy = 1;
	e->writing = 1;
	redisAsyncHandleWrite(e->ac);
	if (e->dead) {
		free(e);
		return;
	}
	e->writing = 0;
	e->busy = 0;
}

/*
 * The flush goes once to the back of the active queue before it writes.
 * A call's state check is submitted before the call's request is handed
 * to its upstream connection, so the link's flush was activated first:
 * written straight away, the ranker would get its request one write
 * system call later (seen with strace at one call in flight), on the
 * path of every call whose state check runs beside the ranker.  libevent
 * runs an event activated from a callback in the same pass, after what
 * is already queued, so the batch still goes out in this loop iteration.
 */
static void events_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct link_events *e = arg;

	if (!e->requeued) {
		e->requeued = 1;
		event_active(e->flush, EV_WRITE, 0);
		return;
	}
	e->requeued = 0;
	events_write(e);
}

/*
 * A reply still arriving is held whole in hiredis's reader (its bulk
 * strings are parsed only once complete), and hiredis 0.14 sets no bound:
 * a server that declares a 1 GB string and sends it took a worker to 944
 * MB before stall_timeout dropped the link.  Each read adds at most 16 KiB
 * (hiredis's read size), so checking before each read holds the reader
 * under MAX_READER_BYTES + 16 KiB.
 */
#define MAX_READER_BYTES ((size_t)FG_REDISREPLY_MAX_STRING + 64 * 1024)

static void events_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct link_events *e = arg;
	const redisReader *rd = e->ac->c.reader;
	struct fg_redis *r = e->ac->data;

	if (rd && rd->len - rd->pos > MAX_READER_BYTES && r && r->ac == e->ac) {
		link_drop(r, "a reply larger than any feedguard asks for");     /* frees <e> */
		return;
	}
	redisAsyncHandleRead(e->ac);    /* <e> may be gone after this */
}

static void events_write_cb(evutil_socket_t fd, short what, void *arg)
{
	events_write(arg);
}

static void events_add_read(void *p)
{
	struct link_events *e = p;

	event_add(e->rev, NULL);        /* a no-op while it is added */
}

static void events_del_read(void *p)
{
	struct link_events *e = p;

	event_del(e->rev);
}

static void events_add_write(void *p)
{
	struct link_events *e = p;

	if (e->writing || !(e->ac->c.flags & REDIS_CONNECTED))
		event_add(e->wev, NULL);
	else
		event_active(e->flush, EV_WRITE, 0);    /* once per iteration: an active event stays one */
}

static void events_del_write(void *p)
{
	struct link_events *e = p;

	event_del(e->wev);
}

static void events_cleanup(void *p)
{
	struct link_events *e = p;

	event_free(e->rev);
	event_free(e->wev);
	event_free(e->flush);
	if (e->busy)
		e->dead = 1;
	else
		free(e);
}

static int attach_events(redisAsyncContext *ac, struct event_base *base)
{
	struct link_events *e;

	if (ac->ev.data || !(e = calloc(1, sizeof(*e))))
		return REDIS_ERR;
	e->ac = ac;
	e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, events_read_cb, e);
	e->wev = event_new(base, ac->c.fd, EV_WRITE, events_write_cb, e);
	e->flush = event_new(base, -1, 0, events_flush_cb, e);
	if (!e->rev || !e->wev || !e->flush) {
		if (e->rev)
			event_free(e->rev);
		if (e->wev)
			event_free(e->wev);
		if (e->flush)
			event_free(e->flush);
		free(e);
		return REDIS_ERR;
	}
	ac->ev.addRead = events_add_read;
	ac->ev.delRead = events_del_read;
	ac->ev.addWrite = events_add_write;
	ac->ev.delWrite = events_del_write;
	ac->ev.cleanup = events_cleanup;
	ac->ev.data = e;
	event_add(e->rev, NULL);
	event_add(e->wev, NULL);        /* the connect completes when the socket is writable */
	return REDIS_OK;
}

/* --- connecting -------------------------------------------------------- */

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_redis *r = arg;

	link_drop(r, "connect and handshake timed out");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct fg_redis *r = ac->data;
	char why[WHY_LEN];

	if (status == REDIS_OK || r->ac != ac)
		return;
	/* hiredis frees this context when we return, after calling the
	 * handshake commands back with NULL. */
	snprintf(why, sizeof(why), "connect: %s", ac->errstr);
	snprintf(r->drop_why, sizeof(r->drop_why), "redis %s: %s", r->address, why);
	r->ac = NULL;
	link_lost(r, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct fg_redis *r = ac->data;
	char why[WHY_LEN];

	/* Our own redisAsyncFree also ends here: r->ac was cleared first. */
	if (r->ac != ac)
		return;
	/* hiredis frees the context when we return: never free it here. */
	snprintf(why, sizeof(why), "connection lost: %s", ac->err ? ac->errstr : "closed");
	r->ac = NULL;
	link_lost(r, why);
}

static int handshake_add(struct fg_redis *r, const char *what, int argc, const char *const *argv,
                         const size_t *argvlen)
{
	struct rcmd *c = cmd_get(r, CMD_HANDSHAKE);

	if (!c)
		return FG_ENOMEM;
	c->what = what;
	if (wire_command(&c->wire, 0, NULL, NULL, argc, argv, argvlen) < 0 || cmd_send(r, c) < 0) {
		cmd_put(c);
		return FG_ENOMEM;
	}
	r->handshake_left++;
	return 0;
}

/*
 * Queue the handshake before the socket is even connected: hiredis writes
 * it as soon as the connect completes, and 0.14 does not support sending
 * from the connect callback.
 */
static int handshake_start(struct fg_redis *r)
{
	char db[16];
	const char *auth[] = { "AUTH", r->password };
	const char *sel[] = { "SELECT", db };
	const char *ping[] = { "PING" };

	r->handshake_left = 0;
	r->handshake_failed = 0;
	if (r->password && handshake_add(r, "AUTH", 2, auth, NULL) < 0)
		return FG_ENOMEM;
	snprintf(db, sizeof(db), "%d", r->db);
	if (r->db > 0 && handshake_add(r, "SELECT", 2, sel, NULL) < 0)
		return FG_ENOMEM;
	for (unsigned i = 0; i < r->nscripts; i++) {
		const char *load[] = { "SCRIPT", "LOAD", r->scripts[i].body };
		size_t lens[] = { 6, 4, r->scripts[i].len };
		if (handshake_add(r, "SCRIPT LOAD", 3, load, lens) < 0)
			return FG_ENOMEM;
	}
	return handshake_add(r, "PING", 1, ping, NULL);
}

static redisAsyncContext *open_context(struct fg_redis *r)
{
	if (r->host[0])
		return redisAsyncConnect(r->host, r->port);
	return redisAsyncConnectUnix(r->address);
}

static void link_connect(struct fg_redis *r)
{
	redisAsyncContext *ac;
	struct timeval tv = us_to_tv(r->connect_timeout_us);
	char why[WHY_LEN];

	r->gen++;
	if (r->stats.connects++)
		r->stats.reconnects++;
	r->was_connected = 0;
	set_state(r, FG_REDIS_CONNECTING, NULL);
	ac = open_context(r);
	if (!ac || ac->err) {
		snprintf(why, sizeof(why), "connect: %s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);     /* nothing attached, nothing pending */
		link_lost(r, why);
		return;
	}
	ac->data = r;
	r->ac = ac;
	/* Contexts follow one another (the last is freed before the next
	 * connect), so one arena serves them all. */
	fg_redisreply_attach(ac->c.reader, &r->replies);
	if (attach_events(ac, r->base) != REDIS_OK ||
	    redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK ||
	    redisAsyncSetDisconnectCallback(ac, on_disconnect) != REDIS_OK || handshake_start(r) < 0) {
		link_drop(r, "connect: cannot set up the context");
		return;
	}
	evtimer_add(r->connect_ev, &tv);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	link_connect(arg);
}

/* --- setup ------------------------------------------------------------- */

/* Split "ip:port", "[ipv6]:port" or "/path" into <r>.  0 or FG_EINVAL. */
static int parse_address(struct fg_redis *r, const char *addr, const char **why)
{
	const char *colon, *host = addr;
	size_t hlen;
	char *end;
	long port;
	unsigned char buf[sizeof(struct in6_addr)];

	if (!addr || strlen(addr) >= sizeof(r->address)) {
		*why = "redis address missing or too long";
		return FG_EINVAL;
	}
	snprintf(r->address, sizeof(r->address), "%s", addr);
	if (addr[0] == '/')
		return 0;
	colon = strrchr(addr, ':');
	if (!colon) {
		*why = "redis address must be ip:port, [ipv6]:port or an absolute socket path";
		return FG_EINVAL;
	}
	hlen = (size_t)(colon - addr);
	if (addr[0] == '[' && hlen >= 2 && colon[-1] == ']') {
		host++;
		hlen -= 2;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (hlen == 0 || hlen >= sizeof(r->host) || *end || end == colon + 1 || port < 1 || port > 65535) {
		*why = "redis address must be ip:port, [ipv6]:port or an absolute socket path";
		return FG_EINVAL;
	}
	memcpy(r->host, host, hlen);
	r->host[hlen] = '\0';
	/* hiredis would resolve a name with a blocking getaddrinfo on the loop. */
	if (inet_pton(AF_INET, r->host, buf) != 1 && inet_pton(AF_INET6, r->host, buf) != 1) {
		*why = "redis address must be a numeric IP (names would block the loop) or a socket path";
		return FG_EINVAL;
	}
	r->port = (int)port;
	return 0;
}

/* The password is the file's first line (README: state.password_file).
 * Read with read(2) into a buffer wiped after use: stdio would keep a copy
 * in its own buffer after fclose. */
static int read_password(struct fg_redis *r, const char *path)
{
	char buf[PASSWORD_MAX + 2];
	int fd = fg_file_open_read(path);      /* a FIFO would stop the worker's loop */
	ssize_t got;
	size_t n = 0;
	int err = 0;

	if (fd < 0)
		return FG_EIO;
	while (n < sizeof(buf) - 1 && (got = read(fd, buf + n, sizeof(buf) - 1 - n)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			err = errno;
			break;
		}
		n += (size_t)got;
	}
	close(fd);
	buf[n] = '\0';
	n = strcspn(buf, "\r\n");     /* the first line only */
	if (err || n > PASSWORD_MAX) {
		explicit_bzero(buf, sizeof(buf));
		errno = err ? err : EFBIG;
		return FG_EIO;
	}
	buf[n] = '\0';
	r->password = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return r->password ? 0 : FG_ENOMEM;
}

static int64_t or_default(int64_t v, int64_t def)
{
	return v > 0 ? v : def;
}

static void copy_settings(struct fg_redis *r, const struct fg_redis_config *cfg)
{
	r->db = cfg->db;
	r->connect_timeout_us = or_default(cfg->connect_timeout_us, FG_REDIS_DEFAULT_CONNECT_TIMEOUT_US);
	r->stall_timeout_us = or_default(cfg->stall_timeout_us, FG_REDIS_DEFAULT_STALL_TIMEOUT_US);
	r->backoff_initial_us = or_default(cfg->backoff_initial_us, FG_REDIS_DEFAULT_BACKOFF_INITIAL_US);
	r->backoff_max_us = or_default(cfg->backoff_max_us, FG_REDIS_DEFAULT_BACKOFF_MAX_US);
	if (r->backoff_max_us < r->backoff_initial_us)
		r->backoff_max_us = r->backoff_initial_us;
	r->max_inflight = cfg->max_inflight ? cfg->max_inflight : FG_REDIS_DEFAULT_MAX_INFLIGHT;
	r->on_state = cfg->on_state;
	r->state_arg = cfg->state_arg;
	r->on_latency = cfg->on_latency;
	r->latency_arg = cfg->latency_arg;
	/* Seeded per link and per process so workers and pods draw apart. */
	r->rng = fg_clock_now_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
	if (!r->rng)
		r->rng = 1;
}

int fg_redis_new(struct fg_redis **out, struct event_base *base, const struct fg_redis_config *cfg,
                 const char **why)
{
	struct fg_redis *r = calloc(1, sizeof(*r));
	struct timeval now = { 0, 0 };
	int rc;

	if (!r)
		return FG_ENOMEM;
	r->base = base;
	TAILQ_INIT(&r->free);
	TAILQ_INIT(&r->inflight);
	copy_settings(r, cfg);
	rc = parse_address(r, cfg->address, why);
	if (rc < 0)
		goto fail_free;
	if (cfg->password_file) {
		rc = read_password(r, cfg->password_file);
		if (rc < 0) {
			*why = rc == FG_EIO ? "redis password file cannot be read" : "out of memory";
			goto fail_free;
		}
	}
	rc = FG_ENOMEM;
	*why = "out of memory";
	r->connect_ev = evtimer_new(base, connect_timeout_cb, r);
	r->retry_ev = evtimer_new(base, retry_cb, r);
	r->drop_ev = evtimer_new(base, drop_cb, r);
	r->deadline_ev = evtimer_new(base, deadline_cb, r);
	if (!r->connect_ev || !r->retry_ev || !r->drop_ev || !r->deadline_ev)
		goto fail_free;
	/* The first connect runs from the loop, so scripts registered right
	 * after this call are in its handshake. */
	evtimer_add(r->retry_ev, &now);
	r->state = FG_REDIS_CONNECTING;
	*out = r;
	return 0;

fail_free:
	fg_redis_free(r);
	return rc;
}

void fg_redis_free(struct fg_redis *r)
{
	struct rcmd *c;

	if (!r)
		return;
	r->on_state = NULL;
	if (r->ac) {
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		snprintf(r->drop_why, sizeof(r->drop_why), "redis %s: link freed", r->address);
		r->state = FG_REDIS_DOWN;
		redisAsyncFree(ac);     /* every command's callback runs, callers get DOWN */
	}
	while ((c = TAILQ_FIRST(&r->free)) != NULL) {
		TAILQ_REMOVE(&r->free, c, q);
		fg_bufq_free(&c->wire);
		free(c);
	}
	if (r->connect_ev)
		event_free(r->connect_ev);
	if (r->retry_ev)
		event_free(r->retry_ev);
	if (r->drop_ev)
		event_free(r->drop_ev);
	if (r->deadline_ev)
		event_free(r->deadline_ev);
	for (unsigned i = 0; i < r->nscripts; i++)
		free(r->scripts[i].body);
	if (r->password) {
		explicit_bzero(r->password, strlen(r->password));
		free(r->password);
	}
	free(r);
}

/* --- scripts and submits ----------------------------------------------- */

int fg_redis_script_add(struct fg_redis *r, const char *body, size_t len, unsigned *id)
{
	struct script *s;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (r->nscripts >= FG_REDIS_MAX_SCRIPTS)
		return FG_ETOOBIG;
	s = &r->scripts[r->nscripts];
	if (EVP_Digest(body, len, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen * 2 != SHA1_HEX)
		return FG_ENOMEM;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
	s->body = malloc(len + 1);
	if (!s->body)
		return FG_ENOMEM;
	memcpy(s->body, body, len);
	s->body[len] = '\0';
	s->len = len;
	*id = r->nscripts++;
	return 0;
}

const char *fg_redis_script_sha(const struct fg_redis *r, unsigned id)
{
	return id < r->nscripts ? r->scripts[id].sha : NULL;
}

/* Take a command slot for a caller, or say why not. */
static int submit_begin(struct fg_redis *r, struct rcmd **out)
{
	if (r->state != FG_REDIS_CONNECTED || !r->ac) {
		r->stats.unavailable++;
		return FG_EUNAVAIL;
	}
	if (r->stats.inflight >= r->max_inflight) {
		r->stats.busy++;
		return FG_EBUSY;
	}
	*out = cmd_get(r, CMD_USER);
	return *out ? 0 : FG_ENOMEM;
}

static int submit_end(struct fg_redis *r, struct rcmd *c, int64_t timeout_us, fg_redis_reply_cb *cb, void *arg)
{
	int rc = cmd_send(r, c);

	if (rc < 0) {
		if (rc == FG_EUNAVAIL)
			r->stats.unavailable++;
		cmd_put(c);
		return rc;
	}
	c->cb = cb;
	c->arg = arg;
	if (timeout_us <= 0)
		timeout_us = 1;
	c->sent_us = fg_clock_now_us();
	c->deadline_us = c->sent_us + (uint64_t)timeout_us;
	inflight_add(r, c);
	/* Usually armed already for an earlier deadline: nothing to do. */
	if (r->deadline_at_us == 0 || c->deadline_us < r->deadline_at_us)
		deadline_arm(r, c->deadline_us, c->sent_us);
	r->stats.commands++;
	return 0;
}

int fg_redis_command(struct fg_redis *r, int64_t timeout_us, int argc, const char *const *argv,
                     const size_t *argvlen, fg_redis_reply_cb *cb, void *arg)
{
	struct rcmd *c;
	int rc;

	if (argc < 1 || argc > FG_REDIS_MAX_ARGS)
		return FG_EINVAL;
	rc = submit_begin(r, &c);
	if (rc < 0)
		return rc;
	if (wire_command(&c->wire, 0, NULL, NULL, argc, argv, argvlen) < 0) {
		cmd_put(c);
		return FG_ENOMEM;
	}
	return submit_end(r, c, timeout_us, cb, arg);
}

int fg_redis_script(struct fg_redis *r, int64_t timeout_us, unsigned id, int nkeys, int argc,
                    const char *const *argv, const size_t *argvlen, fg_redis_reply_cb *cb, void *arg)
{
	struct rcmd *c;
	char nk[FG_FMT_I64_MAX];
	const char *pre[3] = { "EVALSHA", NULL, nk };
	size_t prelen[3] = { 7, SHA1_HEX, 0 };
	int rc;

	if (id >= r->nscripts || nkeys < 0 || argc < 0 || nkeys > argc || argc > FG_REDIS_MAX_ARGS - 3)
		return FG_EINVAL;
	rc = submit_begin(r, &c);
	if (rc < 0)
		return rc;
	c->script = (int)id;
	pre[1] = r->scripts[id].sha;
	prelen[2] = fg_fmt_u64(nk, (uint64_t)nkeys);
	if (wire_command(&c->wire, 3, pre, prelen, argc, argv, argvlen) < 0) {
		cmd_put(c);
		return FG_ENOMEM;
	}
	return submit_end(r, c, timeout_us, cb, arg);
}

int fg_redis_result_elem(const struct fg_redis_result *res, size_t i, struct fg_redis_result *out)
{
	const redisReply *rep = res->reply;

	if (res->kind != FG_REDIS_R_ARRAY || !rep || i >= rep->elements)
		return FG_EINVAL;
	result_from_reply(out, rep->element[i]);
	return 0;
}

enum fg_redis_state fg_redis_get_state(const struct fg_redis *r)
{
	return r->state;
}

const char *fg_redis_last_error(const struct fg_redis *r)
{
	return r->why;
}

const struct fg_redis_stats *fg_redis_get_stats(const struct fg_redis *r)
{
	return &r->stats;
}

const char *fg_redis_address(const struct fg_redis *r)
{
	return r->address;
}
