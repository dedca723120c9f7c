/* fg_state.c - argument checks and dispatch to a state backend; see fg_state.h. */
#include "config.h"

#include <string.h>

#include "fg_error.h"
#include "fg_state.h"

/*
 * Which bytes a name may hold, per kind.  A table, because every call
 * checks its names twice (read and update).
 */
enum name_kind {
	NAME_KEY = 1,           /* fg_keyring's id alphabet, the ':' after the id, and hex digits */
	NAME_CLASS = 2,         /* becomes a Redis hash field "x:<class>" and a metric label */
};

static const unsigned char name_bytes[256] = {
	['-'] = NAME_KEY, ['.'] = NAME_KEY, ['0'] = NAME_KEY | NAME_CLASS, ['1'] = NAME_KEY | NAME_CLASS,
	['2'] = NAME_KEY | NAME_CLASS, ['3'] = NAME_KEY | NAME_CLASS, ['4'] = NAME_KEY | NAME_CLASS,
	['5'] = NAME_KEY | NAME_CLASS, ['6'] = NAME_KEY | NAME_CLASS, ['7'] = NAME_KEY | NAME_CLASS,
	['8'] = NAME_KEY | NAME_CLASS, ['9'] = NAME_KEY | NAME_CLASS, [':'] = NAME_KEY, ['A'] = NAME_KEY,
	['B'] = NAME_KEY, ['C'] = NAME_KEY, ['D'] = NAME_KEY, ['E'] = NAME_KEY, ['F'] = NAME_KEY, ['G'] = NAME_KEY,
	['H'] = NAME_KEY, ['I'] = NAME_KEY, ['J'] = NAME_KEY, ['K'] = NAME_KEY, ['L'] = NAME_KEY, ['M'] = NAME_KEY,
	['N'] = NAME_KEY, ['O'] = NAME_KEY, ['P'] = NAME_KEY, ['Q'] = NAME_KEY, ['R'] = NAME_KEY, ['S'] = NAME_KEY,
	['T'] = NAME_KEY, ['U'] = NAME_KEY, ['V'] = NAME_KEY, ['W'] = NAME_KEY, ['X'] = NAME_KEY, ['Y'] = NAME_KEY,
	['Z'] = NAME_KEY, ['_'] = NAME_KEY | NAME_CLASS, ['a'] = NAME_KEY | NAME_CLASS, ['b'] = NAME_KEY | NAME_CLASS,
	['c'] = NAME_KEY | NAME_CLASS, ['d'] = NAME_KEY | NAME_CLASS, ['e'] = NAME_KEY | NAME_CLASS,
	['f'] = NAME_KEY | NAME_CLASS, ['g'] = NAME_KEY | NAME_CLASS, ['h'] = NAME_KEY | NAME_CLASS,
	['i'] = NAME_KEY | NAME_CLASS, ['j'] = NAME_KEY | NAME_CLASS, ['k'] = NAME_KEY | NAME_CLASS,
	['l'] = NAME_KEY | NAME_CLASS, ['m'] = NAME_KEY | NAME_CLASS, ['n'] = NAME_KEY | NAME_CLASS,
	['o'] = NAME_KEY | NAME_CLASS, ['p'] = NAME_KEY | NAME_CLASS, ['q'] = NAME_KEY | NAME_CLASS,
	['r'] = NAME_KEY | NAME_CLASS, ['s'] = NAME_KEY | NAME_CLASS, ['t'] = NAME_KEY | NAME_CLASS,
	['u'] = NAME_KEY | NAME_CLASS, ['v'] = NAME_KEY | NAME_CLASS, ['w'] = NAME_KEY | NAME_CLASS,
	['x'] = NAME_KEY | NAME_CLASS, ['y'] = NAME_KEY | NAME_CLASS, ['z'] = NAME_KEY | NAME_CLASS,
};

/* 1 when <s> is 1..<max> bytes, each allowed in a name of <kind>. */
static int name_ok(const char *s, size_t max, enum name_kind kind)
{
	size_t i;

	if (!s)
		return 0;
	for (i = 0; s[i]; i++)
		if (i >= max || !(name_bytes[(unsigned char)s[i]] & kind))
			return 0;
	return i > 0;
}

int fg_state_check_who(const struct fg_state_who *who)
{
	if (!who || who->nkeys < 1 || who->nkeys > FG_STATE_MAX_KEYS || !who->keys ||
	    who->nclasses > FG_STATE_MAX_CLASSES || (who->nclasses && !who->classes))
		return FG_EINVAL;
	for (size_t i = 0; i < who->nkeys; i++)
		if (!name_ok(who->keys[i], FG_KEYRING_PSEUDONYM_MAX - 1, NAME_KEY))
			return FG_EINVAL;
	for (size_t i = 0; i < who->nclasses; i++)
		if (!name_ok(who->classes[i], FG_STATE_CLASS_MAX, NAME_CLASS))
			return FG_EINVAL;
	return 0;
}

static int time_ok(int64_t v)
{
	return v >= 0 && v <= FG_STATE_VALUE_MAX;
}

static int number_ok(int64_t v)
{
	return v >= -FG_STATE_VALUE_MAX && v <= FG_STATE_VALUE_MAX;
}

/* A feed call checks its user's keys once, at its read: the update
 * carries the same ones (70 bytes a key, looked up byte by byte). */
static int who_ok(const struct fg_state_who *who)
{
	return who && (who->checked || fg_state_check_who(who) == 0);
}

static int check_update(const struct fg_state_update *u)
{
	if (!u || !who_ok(&u->who) || (u->who.nclasses && !u->counts))
		return FG_EINVAL;
	if (u->ttl_ms <= 0 || !time_ok(u->ttl_ms) || !time_ok(u->idle_gap_ms) || !time_ok(u->start_ms) ||
	    !time_ok(u->end_ms) || !time_ok(u->day_start_ms) || !time_ok(u->quiet_from_ms) ||
	    !time_ok(u->quiet_to_ms) || !number_ok(u->day) || !number_ok(u->night) || u->cap_ms < 0 ||
	    !time_ok(u->cap_ms) || (u->cap_ms && u->quiet_only))
		return FG_EINVAL;
	return 0;
}

int fg_state_read(struct fg_state *s, const struct fg_state_who *who, fg_state_read_cb *cb, void *arg)
{
	if (!s || !cb || !who_ok(who))
		return FG_EINVAL;
	return s->ops->read(s, who, cb, arg);
}

int fg_state_update(struct fg_state *s, const struct fg_state_update *u, fg_state_done_cb *cb, void *arg)
{
	if (!s || !cb || check_update(u) < 0)
		return FG_EINVAL;
	return s->ops->update(s, u, cb, arg);
}

int fg_state_erase(struct fg_state *s, const struct fg_state_who *who, fg_state_done_cb *cb, void *arg)
{
	if (!s || !cb || fg_state_check_who(who) < 0)
		return FG_EINVAL;
	return s->ops->erase(s, who, cb, arg);
}

void fg_state_free(struct fg_state *s)
{
	if (s)
		s->ops->free(s);
}
