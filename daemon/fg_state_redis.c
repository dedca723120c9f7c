/* fg_state_redis.c - the Redis state backend; see fg_state_redis.h. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_clock.h"
#include "fg_error.h"
#include "fg_log.h"
#include "fg_redis.h"
#include "fg_state.h"
#include "fg_fmt.h"
#include "fg_state_redis.h"

/* "<prefix>{<pseudonym>}" and its NUL */
#define KEY_MAX (FG_STATE_PREFIX_MAX + 2 + FG_KEYRING_PSEUDONYM_MAX)
#define NUM_MAX 24                      /* an int64 in decimal, its sign and NUL */
#define READ_FIELDS 6                   /* last sess day act night qact, then the x: fields */
#define UPDATE_NUMBERS 11               /* the update's ARGV before the class, count pairs */
#define ARGS_MAX (FG_STATE_MAX_KEYS + UPDATE_NUMBERS + 2 * FG_STATE_MAX_CLASSES)
_Static_assert(ARGS_MAX + 3 <= FG_REDIS_MAX_ARGS, "an update is one EVALSHA");
#define BAD_ANSWER_LOG_US 1000000ULL      /* state_redis_answer lines: at most one a second per worker */

/*
 * read: KEYS are the user's keys, newest first; ARGV the class names.
 * Returns nil when no key exists, else the integers of the first key's
 * fields (a missing field is 0).  A field that is not an integer within
 * FG_STATE_VALUE_MAX is an error: the record was not written by us.
 */
static const char read_lua[] =
	"local MAX = 9007199254740991\n"
	"local f = {'last', 'sess', 'day', 'act', 'night', 'qact'}\n"
	"for i = 1, #ARGV do f[#f + 1] = 'x:' .. ARGV[i] end\n"
	"for k = 1, #KEYS do\n"
	"  if redis.call('EXISTS', KEYS[k]) == 1 then\n"
	"    local v = redis.call('HMGET', KEYS[k], unpack(f))\n"
	"    for i = 1, #f do\n"
	"      local n = 0\n"
	"      if v[i] then n = tonumber(v[i]) end\n"
	"      if not n or n ~= math.floor(n) or math.abs(n) > MAX then\n"
	"        return redis.error_reply('FGCORRUPT ' .. KEYS[k] .. ' ' .. f[i])\n"
	"      end\n"
	"      v[i] = string.format('%.0f', n)\n"
	"    end\n"
	"    return table.concat(v, ' ')\n"
	"  end\n"
	"end\n"
	"return false\n";

/*
 * update: fg_state.h's steps 1-8.  KEYS are the user's keys, newest
 * first; ARGV start, end, idle_gap, day, day_start, night, quiet_from,
 * quiet_to, ttl, quiet_only (0 or 1), cap (0: none), then class, count
 * pairs.  Returns 1 (0: a quiet-only or cap update that had nothing to
 * add).
 *
 * Every check comes before the first write (Redis does not roll a failed
 * script back).  Numbers go to redis.call as Lua numbers, which Redis
 * formats with %.17g: exact integers below 2^53 (never concatenate them:
 * Lua's tostring keeps 14 digits).  A day change deletes the key and
 * writes it again, which drops every x: field of the old day, not only
 * the ones this call names; a record of a later day or night than the
 * call's keeps it (days never go back).  RENAME moves an older key's
 * record in O(1).
 */
static const char update_lua[] =
	"local MAX = 9007199254740991\n"
	"local a = {}\n"
	"for i = 1, 11 do a[i] = tonumber(ARGV[i]) end\n"
	"local st, en, gap, day, dstart, night, qf, qt, ttl, qonly, cap = unpack(a)\n"
	"local nx = (#ARGV - 11) / 2\n"
	"local f = {'last', 'sess', 'day', 'act', 'night', 'qact'}\n"
	"for i = 1, nx do f[6 + i] = 'x:' .. ARGV[10 + 2 * i] end\n"
	"local src\n"
	"for k = 1, #KEYS do\n"
	"  if redis.call('EXISTS', KEYS[k]) == 1 then src = KEYS[k] break end\n"
	"end\n"
	"local v = {}\n"
	"if src then\n"
	"  v = redis.call('HMGET', src, unpack(f))\n"
	"  for i = 1, #f do\n"
	"    if v[i] then\n"
	"      local n = tonumber(v[i])\n"
	"      if not n or n ~= math.floor(n) or math.abs(n) > MAX then\n"
	"        return redis.error_reply('FGCORRUPT ' .. src .. ' ' .. f[i])\n"
	"      end\n"
	"      v[i] = n\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local k = KEYS[1]\n"
	"if src and src ~= k then redis.call('RENAME', src, k) end\n"
	"local last, sess, act, qact = v[1], v[2] or 0, v[4] or 0, v[6] or 0\n"
	"local function span(b, e) if e > b then return e - b end return 0 end\n"
	"if qonly == 1 then\n"
	"  if (v[5] and v[5] > night) or not last or st - last > gap or qt <= qf then return 0 end\n"
	"  if v[5] ~= night then qact = 0 end\n"
	"  local add = span(math.max(last, qf), math.min(en, qt))\n"
	"  if add == 0 then return 0 end\n"
	"  redis.call('HSET', k, 'night', night, 'qact', math.min(MAX, qact + add))\n"
	"  redis.call('PEXPIRE', k, ttl)\n"
	"  return 1\n"
	"end\n"
	"if cap > 0 and (not last or st - last > gap) then return 0 end\n"
	"if v[3] and v[3] > day then day = v[3]\n"
	"elseif v[3] ~= day then\n"
	"  act = 0\n"
	"  for i = 7, #f do v[i] = false end\n"
	"  if src then redis.call('DEL', k) end\n"
	"end\n"
	"if v[5] and v[5] > night then night = v[5]\n"
	"elseif v[5] ~= night then qact = 0 end\n"
	"local from = last\n"
	"if not last or st - last > gap then from = st sess = st end\n"
	"if cap > 0 then\n"
	"  act = math.max(act, math.min(act + span(math.max(from, dstart), en), cap))\n"
	"else\n"
	"  act = math.min(MAX, act + span(math.max(from, dstart), en))\n"
	"  if qt > qf then qact = math.min(MAX, qact + span(math.max(from, qf), math.min(en, qt))) end\n"
	"  if not last or en > last then last = en end\n"
	"end\n"
	"local out = {'last', last, 'sess', sess, 'day', day, 'act', act, 'night', night, 'qact', qact}\n"
	"local x, order = {}, {}\n"
	"for i = 1, nx do\n"
	"  local name = f[6 + i]\n"
	"  if x[name] == nil then order[#order + 1] = name x[name] = v[6 + i] or 0 end\n"
	"  x[name] = math.min(MAX, x[name] + tonumber(ARGV[11 + 2 * i]))\n"
	"end\n"
	"for _, name in ipairs(order) do out[#out + 1] = name out[#out + 1] = x[name] end\n"
	"redis.call('HSET', k, unpack(out))\n"
	"redis.call('PEXPIRE', k, ttl)\n"
	"return 1\n";

enum op_kind {
	OP_READ,
	OP_UPDATE,
	OP_ERASE,
};

/* One operation Redis owes an answer to; kept for reuse afterwards. */
struct state_op {
	struct fg_state_redis *s;
	enum op_kind kind;
	size_t nclasses;                /* read: exposure counters the reply must carry */
	fg_state_read_cb *read_cb;      /* OP_READ */
	fg_state_done_cb *done_cb;      /* OP_UPDATE, OP_ERASE */
	void *arg;
	struct state_op *next_free;
};

struct fg_state_redis {
	struct fg_state base;           /* first: fg_state.c hands us this pointer */
	struct fg_redis *link;
	int64_t timeout_us;
	unsigned read_script, update_script;
	struct state_op *free_ops;      /* as many as were ever in flight at once */
	char prefix[FG_STATE_PREFIX_MAX + 1];
	struct fg_log_limit bad_log;    /* state_redis_answer lines */
};

/* One command's arguments, built on the stack; args_init sets only
 * <argc> and <nnums> (the rest is written before it is read: zeroing its
 * 2 KiB cost more than filling it). */
struct args {
	const char *argv[ARGS_MAX];
	size_t len[ARGS_MAX];
	int argc;
	char keys[FG_STATE_MAX_KEYS][KEY_MAX];
	char nums[UPDATE_NUMBERS + FG_STATE_MAX_CLASSES][NUM_MAX];
	size_t nnums;
};

static const struct fg_state_ops redis_ops;

static struct fg_state_redis *redis_of(struct fg_state *s)
{
	return (struct fg_state_redis *)s;
}

/* --- operations in flight ---------------------------------------------- */

static struct state_op *op_get(struct fg_state_redis *s, enum op_kind kind, void *arg)
{
	struct state_op *op = s->free_ops;

	if (op)
		s->free_ops = op->next_free;
	else if (!(op = calloc(1, sizeof(*op))))
		return NULL;
	op->s = s;
	op->kind = kind;
	op->nclasses = 0;
	op->read_cb = NULL;
	op->done_cb = NULL;
	op->arg = arg;
	return op;
}

static void op_put(struct state_op *op)
{
	op->next_free = op->s->free_ops;
	op->s->free_ops = op;
}

/* The one word at the start of a Redis error ("OOM command not allowed ..."). */
static int error_is(const char *msg, const char *word)
{
	size_t n = strlen(word);

	return strncmp(msg, word, n) == 0 && (msg[n] == ' ' || msg[n] == '\0');
}

static int error_rc(const char *msg)
{
	static const char *const unavailable[] = { "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN",
	                                           "CLUSTERDOWN" };

	if (error_is(msg, "OOM"))
		return FG_ETOOBIG;
	for (size_t i = 0; i < sizeof(unavailable) / sizeof(unavailable[0]); i++)
		if (error_is(msg, unavailable[i]))
			return FG_EUNAVAIL;
	return FG_EPROTO;
}

/* What a result that is not an answer means for the caller; 0 for an answer. */
static int result_rc(const struct fg_redis_result *res)
{
	switch (res->kind) {
	case FG_REDIS_R_TIMEOUT:
		return FG_ETIMEOUT;
	case FG_REDIS_R_DOWN:
		return FG_EUNAVAIL;
	case FG_REDIS_R_ERROR:
		return error_rc(res->str);
	default:
		return 0;
	}
}

/* --- replies ----------------------------------------------------------- */

/* The read script's answer into <u>: 0 or FG_EPROTO. */
/* The read script answers one string of decimal integers separated by
 * spaces (one reply object, where an array of integers costs hiredis an
 * allocation per field): the six fields, then one per class. */
static int parse_numbers(const char *p, size_t len, int64_t *v, size_t n)
{
	const char *end = p + len;
	size_t i;

	for (i = 0; i < n; i++) {
		int neg = 0;
		uint64_t x = 0;
		if (i > 0 && (p == end || *p++ != ' '))
			return FG_EPROTO;
		if (p < end && *p == '-') {
			neg = 1;
			p++;
		}
		if (p == end || *p < '0' || *p > '9')
			return FG_EPROTO;
		for (; p < end && *p >= '0' && *p <= '9'; p++)
			if ((x = x * 10 + (uint64_t)(*p - '0')) > FG_STATE_VALUE_MAX)
				return FG_EPROTO;
		v[i] = neg ? -(int64_t)x : (int64_t)x;
	}
	return p == end ? 0 : FG_EPROTO;
}

static int parse_read(const struct fg_redis_result *res, size_t nclasses, struct fg_state_user *u)
{
	int64_t v[READ_FIELDS + FG_STATE_MAX_CLASSES];

	memset(u, 0, sizeof(*u));
	if (res->kind == FG_REDIS_R_NIL)
		return 0;
	if (res->kind != FG_REDIS_R_STR || parse_numbers(res->str, res->len, v, READ_FIELDS + nclasses) < 0)
		return FG_EPROTO;
	if (v[3] < 0 || v[5] < 0)
		return FG_EPROTO;
	u->found = 1;
	u->last_ms = v[0];
	u->session_start_ms = v[1];
	u->day = v[2];
	u->active_ms = v[3];
	u->night = v[4];
	u->quiet_ms = v[5];
	for (size_t i = 0; i < nclasses; i++) {
		if (v[READ_FIELDS + i] < 0)
			return FG_EPROTO;
		u->exposure[i] = (uint64_t)v[READ_FIELDS + i];
	}
	return 0;
}

static const char *op_name(enum op_kind kind)
{
	return kind == OP_READ ? "read" : kind == OP_UPDATE ? "update" : "erase";
}

/*
 * An answer of the wrong shape or an error is a bug or a damaged record:
 * worth a line, unlike timeouts and outages, which fg_redis counts.  At
 * most one line per BAD_ANSWER_LOG_US per worker: a Redis that answers
 * every script with an error would otherwise write a line per feed call,
 * at the clients' rate.  The next line says how many were not logged.
 * Only the first word of Redis's error: the rest may name the key, whose
 * pseudonym has no place in a log.
 */
static void log_bad_answer(struct fg_state_redis *s, enum op_kind kind, const struct fg_redis_result *res)
{
	char q[160], word[64];
	const char *e = res->kind == FG_REDIS_R_ERROR && res->str ? res->str : "";
	uint64_t unlogged;

	if (!fg_log_limit_take(&s->bad_log, fg_clock_now_us(), BAD_ANSWER_LOG_US, &unlogged))
		return;
	snprintf(word, sizeof(word), "%.*s", (int)strcspn(e, " "), e);
	fg_log(FG_LOG_WARN, "state_redis_answer", "op=%s kind=%d error=%s unlogged=%" PRIu64, op_name(kind),
	       (int)res->kind, fg_log_quote(q, sizeof(q), word), unlogged);
}

static void reply_cb(void *arg, const struct fg_redis_result *res)
{
	struct state_op *op = arg, o = *op;
	struct fg_state_user u;
	int rc = result_rc(res);

	/* Back on the free list first: the callback may start another. */
	op_put(op);
	if (rc == 0 && o.kind == OP_READ)
		rc = parse_read(res, o.nclasses, &u);
	else if (rc == 0 && o.kind == OP_UPDATE)
		rc = res->kind == FG_REDIS_R_INT && (res->integer == 1 || res->integer == 0) ? 0 : FG_EPROTO;
	else if (rc == 0)
		rc = res->kind == FG_REDIS_R_INT ? 0 : FG_EPROTO;
	if (rc == FG_EPROTO)
		log_bad_answer(o.s, o.kind, res);
	if (o.kind == OP_READ)
		o.read_cb(o.arg, rc, rc == 0 ? &u : NULL);
	else
		o.done_cb(o.arg, rc);
}

/* --- submits ----------------------------------------------------------- */

static void args_init(struct args *a)
{
	a->argc = 0;
	a->nnums = 0;
}

static void args_add(struct args *a, const char *p, size_t n)
{
	a->argv[a->argc] = p;
	a->len[a->argc++] = n;
}

/* "<prefix>{<pseudonym>}": lengths checked by fg_state_check_who and
 * check_config, so the key fits KEY_MAX. */
static void args_keys(struct args *a, const struct fg_state_redis *s, const struct fg_state_who *who)
{
	size_t plen = strlen(s->prefix);

	for (size_t i = 0; i < who->nkeys; i++) {
		size_t klen = strlen(who->keys[i]);
		char *k = a->keys[i];
		memcpy(k, s->prefix, plen);
		k[plen] = '{';
		memcpy(k + plen + 1, who->keys[i], klen);
		k[plen + 1 + klen] = '}';
		k[plen + 2 + klen] = '\0';
		args_add(a, k, plen + 2 + klen);
	}
}

static void args_num(struct args *a, int64_t v)
{
	size_t n = fg_fmt_i64(a->nums[a->nnums], v);

	args_add(a, a->nums[a->nnums++], n);
}

/* Send what <a> holds: EVALSHA of <script> with <nkeys> keys, or (script
 * < 0) a plain command.  0 or the submit's failure, <op> then put back. */
static int submit(struct fg_state_redis *s, struct state_op *op, int script, int nkeys, const struct args *a)
{
	int rc;

	if (script >= 0)
		rc = fg_redis_script(s->link, s->timeout_us, (unsigned)script, nkeys, a->argc, a->argv, a->len,
		                     reply_cb, op);
	else
		rc = fg_redis_command(s->link, s->timeout_us, a->argc, a->argv, a->len, reply_cb, op);
	if (rc < 0)
		op_put(op);
	return rc;
}

static int redis_read(struct fg_state *base, const struct fg_state_who *who, fg_state_read_cb *cb, void *arg)
{
	struct fg_state_redis *s = redis_of(base);
	struct state_op *op = op_get(s, OP_READ, arg);
	struct args a;

	if (!op)
		return FG_ENOMEM;
	args_init(&a);
	op->read_cb = cb;
	op->nclasses = who->nclasses;
	args_keys(&a, s, who);
	for (size_t i = 0; i < who->nclasses; i++)
		args_add(&a, who->classes[i], strlen(who->classes[i]));
	return submit(s, op, (int)s->read_script, (int)who->nkeys, &a);
}

static int redis_update(struct fg_state *base, const struct fg_state_update *u, fg_state_done_cb *cb,
                        void *arg)
{
	struct fg_state_redis *s = redis_of(base);
	struct state_op *op = op_get(s, OP_UPDATE, arg);
	struct args a;
	const int64_t nums[UPDATE_NUMBERS] = { u->start_ms, u->end_ms, u->idle_gap_ms, u->day, u->day_start_ms,
	                                       u->night, u->quiet_from_ms, u->quiet_to_ms, u->ttl_ms,
	                                       u->quiet_only ? 1 : 0, u->cap_ms };

	if (!op)
		return FG_ENOMEM;
	args_init(&a);
	op->done_cb = cb;
	args_keys(&a, s, &u->who);
	for (size_t i = 0; i < UPDATE_NUMBERS; i++)
		args_num(&a, nums[i]);
	for (size_t i = 0; i < u->who.nclasses; i++) {
		args_add(&a, u->who.classes[i], strlen(u->who.classes[i]));
		args_num(&a, u->counts[i]);
	}
	return submit(s, op, (int)s->update_script, (int)u->who.nkeys, &a);
}

static int redis_erase(struct fg_state *base, const struct fg_state_who *who, fg_state_done_cb *cb, void *arg)
{
	struct fg_state_redis *s = redis_of(base);
	struct state_op *op = op_get(s, OP_ERASE, arg);
	struct args a;

	if (!op)
		return FG_ENOMEM;
	args_init(&a);
	op->done_cb = cb;
	args_add(&a, "DEL", 3);
	args_keys(&a, s, who);
	return submit(s, op, -1, 0, &a);
}

/* --- new, free --------------------------------------------------------- */

static void redis_free(struct fg_state *base)
{
	struct fg_state_redis *s = redis_of(base);
	struct state_op *op;

	/* Each operation still waiting gets its callback from in here, with
	 * DOWN, which its caller sees as FG_EUNAVAIL. */
	fg_redis_free(s->link);
	s->link = NULL;
	while ((op = s->free_ops) != NULL) {
		s->free_ops = op->next_free;
		free(op);
	}
	free(s);
}

static const struct fg_state_ops redis_ops = {
	.name = "redis",
	.read = redis_read,
	.update = redis_update,
	.erase = redis_erase,
	.free = redis_free,
};

static int check_config(const struct fg_state_redis_config *cfg, const char **prefix, const char **why)
{
	*prefix = cfg->prefix ? cfg->prefix : FG_STATE_DEFAULT_PREFIX;
	if (strlen(*prefix) > FG_STATE_PREFIX_MAX || strpbrk(*prefix, "{}")) {
		*why = "state key prefix is too long or holds a brace (the hash tag must be the pseudonym)";
		return FG_EINVAL;
	}
	if (cfg->timeout_us < 0) {
		*why = "state timeout is negative";
		return FG_EINVAL;
	}
	return 0;
}

int fg_state_redis_new(struct fg_state **out, struct event_base *base, const struct fg_state_redis_config *cfg,
                       const char **why)
{
	struct fg_state_redis *s;
	const char *prefix;
	int rc = check_config(cfg, &prefix, why);

	if (rc < 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s) {
		*why = "out of memory";
		return FG_ENOMEM;
	}
	s->base.ops = &redis_ops;
	s->timeout_us = cfg->timeout_us ? cfg->timeout_us : FG_STATE_REDIS_DEFAULT_TIMEOUT_US;
	snprintf(s->prefix, sizeof(s->prefix), "%s", prefix);
	rc = fg_redis_new(&s->link, base, &cfg->link, why);
	if (rc < 0)
		goto fail_free;
	/* Before the first connect (next loop turn): loaded by its handshake. */
	rc = fg_redis_script_add(s->link, read_lua, sizeof(read_lua) - 1, &s->read_script);
	if (rc == 0)
		rc = fg_redis_script_add(s->link, update_lua, sizeof(update_lua) - 1, &s->update_script);
	if (rc < 0) {
		*why = "out of memory";
		rc = FG_ENOMEM;
		goto fail_free_link;
	}
	*out = &s->base;
	return 0;

fail_free_link:
	fg_redis_free(s->link);
fail_free:
	free(s);
	return rc;
}

struct fg_redis *fg_state_redis_link(struct fg_state *s)
{
	return s && s->ops == &redis_ops ? redis_of(s)->link : NULL;
}
