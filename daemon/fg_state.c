/* fg_state.c - argument checks and dispatch to a state backend; see fg_state.h. */
#include "config.h"

#include <string.h>

#include "fg_error.h"
#include "fg_state.h"

/*
 * Which bytes a name may hold, per kind: K, a key (fg_keyring's id
 * alphabet, the ':' after the id, and hex digits); C, a class name (it
 * becomes a Redis hash field "x:<class>" and a metric label).  A table,
 * because every call checks its names twice (read and update).
 */
enum name_kind {
	K = 1,
	C = 2,
};

static const unsigned char name_bytes[256] = {
	['-'] = K, ['.'] = K, ['0'] = K|C, ['1'] = K|C, ['2'] = K|C, ['3'] = K|C, ['4'] = K|C, ['5'] = K|C,
	['6'] = K|C, ['7'] = K|C, ['8'] = K|C, ['9'] = K|C, [':'] = K, ['A'] = K, ['B'] = K, ['C'] = K, ['D'] = K,
	['E'] = K, ['F'] = K, ['G'] = K, ['H'] = K, ['I'] = K, ['J'] = K, ['K'] = K, ['L'] = K, ['M'] = K,
	['N'] = K, ['O'] = K, ['P'] = K, ['Q'] = K, ['R'] = K, ['S'] = K, ['T'] = K, ['U'] = K, ['V'] = K,
	['W'] = K, ['X'] = K, ['Y'] = K, ['Z'] = K, ['_'] = K|C, ['a'] = K|C, ['b'] = K|C, ['c'] = K|C, ['d'] = K|C,
	['e'] = K|C, ['f'] = K|C, ['g'] = K|C, ['h'] = K|C, ['i'] = K|C, ['j'] = K|C, ['k'] = K|C, ['l'] = K|C,
	['m'] = K|C, ['n'] = K|C, ['o'] = K|C, ['p'] = K|C, ['q'] = K|C, ['r'] = K|C, ['s'] = K|C, ['t'] = K|C,
	['u'] = K|C, ['v'] = K|C, ['w'] = K|C, ['x'] = K|C, ['y'] = K|C, ['z'] = K|C,
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
		if (!name_ok(who->keys[i], FG_KEYRING_PSEUDONYM_MAX - 1, K))
			return FG_EINVAL;
	for (size_t i = 0; i < who->nclasses; i++)
		if (!name_ok(who->classes[i], FG_STATE_CLASS_MAX, C))
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

static int check_update(const struct fg_state_update *u)
{
	if (!u || fg_state_check_who(&u->who) < 0 || (u->who.nclasses && !u->counts))
		return FG_EINVAL;
	if (u->ttl_ms <= 0 || !time_ok(u->ttl_ms) || !time_ok(u->idle_gap_ms) || !time_ok(u->start_ms) ||
	    !time_ok(u->end_ms) || !time_ok(u->day_start_ms) || !time_ok(u->quiet_from_ms) ||
	    !time_ok(u->quiet_to_ms) || !number_ok(u->day) || !number_ok(u->night))
		return FG_EINVAL;
	return 0;
}

int fg_state_read(struct fg_state *s, const struct fg_state_who *who, fg_state_read_cb *cb, void *arg)
{
	if (!s || !cb || fg_state_check_who(who) < 0)
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
