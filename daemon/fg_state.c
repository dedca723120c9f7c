/* fg_state.c - argument checks and dispatch to a state backend; see fg_state.h. */
#include "config.h"

#include <string.h>

#include "fg_error.h"
#include "fg_state.h"

/* fg_keyring's id alphabet, the ':' after the id, and hex digits. */
static inline int key_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-' || c == ':';
}

/* Class names become Redis hash fields "x:<class>" and metric labels. */
static inline int class_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

enum name_kind {
	NAME_KEY,
	NAME_CLASS,
};

/* 1 when <s> is 1..<max> bytes, each allowed in a name of <kind>.  No
 * function pointer per byte: every call checks its names twice (read and
 * update), and the checks are inlined for each kind. */
static inline int name_ok(const char *s, size_t max, enum name_kind kind)
{
	size_t i;

	if (!s)
		return 0;
	for (i = 0; s[i]; i++)
		if (i >= max || !(kind == NAME_KEY ? key_char_ok((unsigned char)s[i]) : class_char_ok((unsigned char)s[i])))
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
