/*
 * fg_policy_limits.c - the screen-time keys: the policy's time zones
 * ("time_zone", "time_zones"), per method where the user's zone is read
 * and whether its calls are heartbeats ("time_zone", "screen_time"), and
 * the bands' rules ("limits" blocks: daily cap, break, quiet hours,
 * exposure counters, fail mode) with the defaults the README states.
 *
 * Zones are loaded here, at policy load on the main thread, into the
 * snapshot (fg_tz): workers never touch TZ.  Exposure counters are handed
 * to the filter rules of each feed method, so the item editor counts them.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_policy_compile-internal.h"
#include "fg_tz.h"
#include "fg_units.h"

/* Defaults (README, "The rules"): the apps' own reminders. */
#define DEFAULT_IDLE_GAP_MS (5 * 60 * 1000)
#define DEFAULT_DAILY_CAP_MS (60 * 60 * 1000)
#define DEFAULT_DAILY_WARN_MS (10 * 60 * 1000)
#define DEFAULT_BREAK_AFTER_MS (60 * 60 * 1000)
#define DEFAULT_QUIET_FROM_S (22 * 3600)
#define DEFAULT_QUIET_TO_S (7 * 3600)
#define DEFAULT_QUIET_WARN_MS (30 * 60 * 1000)
#define MS_SECOND 1000
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MAX_PER_DAY 100000

static const char *const action_names[] = { "none", "notice", "empty", "deny" };
static const char *const fail_names[] = { "open", "empty", "deny" };

/* --- values -------------------------------------------------------------- */

static int read_ms(struct fg_policy_comp *c, const struct fg_yaml_node *n, int64_t lo, int64_t hi, int64_t *out,
                   const char *what)
{
	char a[32], b[32];
	const char *why = NULL;
	int64_t us;
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	if (fg_units_parse_duration(n->text, &us, &why) < 0 || us < lo * 1000 || us > hi * 1000)
		return fg_policy_compile_fail(c, n, "%s must be a duration from %s to %s (like 45m)%s%s", what,
		                              fg_units_format_duration(lo * 1000, a, sizeof(a)),
		                              fg_units_format_duration(hi * 1000, b, sizeof(b)), why ? ": " : "",
		                              why ? why : "");
	*out = us / 1000;
	return 0;
}

static int read_enum(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *const *names, int lo, int hi,
                     uint8_t *out, const char *what)
{
	int i, rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	for (i = lo; i <= hi; i++)
		if (strcmp(n->text, names[i]) == 0) {
			*out = (uint8_t)i;
			return 0;
		}
	if (names == action_names)
		return fg_policy_compile_fail(c, n, "%s must be notice, empty or deny", what);
	return fg_policy_compile_fail(c, n, "%s must be open, empty or deny", what);
}

static int read_action(struct fg_policy_comp *c, const struct fg_yaml_node *n, uint8_t *out)
{
	return n ? read_enum(c, n, action_names, FG_POLICY_ACT_NOTICE, FG_POLICY_ACT_DENY, out, "action") : 0;
}

/* "HH:MM", 00:00 to 23:59, into seconds after midnight. */
static int read_wall(struct fg_policy_comp *c, const struct fg_yaml_node *n, int32_t *out, const char *what)
{
	const char *t;
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	t = n->text;
	if (strlen(t) != 5 || t[2] != ':' || t[0] < '0' || t[0] > '2' || t[1] < '0' || t[1] > '9' || t[3] < '0' ||
	    t[3] > '5' || t[4] < '0' || t[4] > '9' || (t[0] == '2' && t[1] > '3'))
		return fg_policy_compile_fail(c, n, "%s must be a local time \"HH:MM\" from 00:00 to 23:59", what);
	*out = ((t[0] - '0') * 10 + (t[1] - '0')) * 3600 + ((t[3] - '0') * 10 + (t[4] - '0')) * 60;
	return 0;
}

/* A rule written as "off", or a mapping of <keys>: 1 in <*on> unless off. */
static int rule_shape(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *const *keys,
                      const char *what, int *on)
{
	*on = 1;
	if (!n)
		return 0;
	if (n->kind == FG_YAML_SCALAR && strcmp(n->text, "off") == 0) {
		*on = 0;
		return 0;
	}
	if (n->kind != FG_YAML_MAP)
		return fg_policy_compile_fail(c, n, "%s must be off or a mapping (%s...)", what, keys[0]);
	return fg_policy_compile_check_record(c, n, keys, what);
}

/* --- rules --------------------------------------------------------------- */

static const char *const daily_keys[] = { "cap", "warn_before", "action", NULL };
static const char *const break_keys[] = { "after", "action", NULL };
static const char *const quiet_keys[] = { "from", "to", "allowance", "warn_before", "action", NULL };
static const char *const counter_keys[] = { "classes", "per_day", "name", NULL };

static int read_daily(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_policy_limits *l)
{
	const struct fg_yaml_node *v;
	int on, rc;

	l->daily_cap_ms = DEFAULT_DAILY_CAP_MS;
	l->daily_warn_ms = DEFAULT_DAILY_WARN_MS;
	l->daily_action = FG_POLICY_ACT_NOTICE;
	if ((rc = rule_shape(c, n, daily_keys, "daily", &on)))
		return rc;
	if (!on) {
		l->daily_cap_ms = 0;
		return 0;
	}
	if (!n)
		return 0;
	if ((v = fg_yaml_map_get(n, "cap")) && (rc = read_ms(c, v, MS_MINUTE, 24 * MS_HOUR, &l->daily_cap_ms, "cap")))
		return rc;
	if ((v = fg_yaml_map_get(n, "warn_before")) &&
	    (rc = read_ms(c, v, 0, l->daily_cap_ms, &l->daily_warn_ms, "warn_before")))
		return rc;
	/* The default warning is 10 minutes, but at most half a short cap: a
	 * warning as long as the cap was given on every call but the first
	 * (a README-only trial's 1-minute cap). */
	if (!v && l->daily_warn_ms > l->daily_cap_ms / 2)
		l->daily_warn_ms = l->daily_cap_ms / 2;
	return read_action(c, fg_yaml_map_get(n, "action"), &l->daily_action);
}

static int read_break(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_policy_limits *l)
{
	const struct fg_yaml_node *v;
	int on, rc;

	l->break_after_ms = DEFAULT_BREAK_AFTER_MS;
	l->break_action = FG_POLICY_ACT_NOTICE;
	if ((rc = rule_shape(c, n, break_keys, "break", &on)))
		return rc;
	if (!on) {
		l->break_after_ms = 0;
		return 0;
	}
	if (!n)
		return 0;
	if ((v = fg_yaml_map_get(n, "after")) &&
	    (rc = read_ms(c, v, MS_MINUTE, 24 * MS_HOUR, &l->break_after_ms, "after")))
		return rc;
	return read_action(c, fg_yaml_map_get(n, "action"), &l->break_action);
}

static int read_quiet(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_policy_limits *l)
{
	const struct fg_yaml_node *v;
	int on, rc;

	l->quiet_from_s = DEFAULT_QUIET_FROM_S;
	l->quiet_to_s = DEFAULT_QUIET_TO_S;
	l->quiet_warn_ms = DEFAULT_QUIET_WARN_MS;
	l->quiet_action = FG_POLICY_ACT_NOTICE;
	if ((rc = rule_shape(c, n, quiet_keys, "quiet_hours", &on)))
		return rc;
	l->quiet_on = (unsigned)on;
	if (!on || !n)
		return 0;
	if ((v = fg_yaml_map_get(n, "from")) && (rc = read_wall(c, v, &l->quiet_from_s, "from")))
		return rc;
	if ((v = fg_yaml_map_get(n, "to")) && (rc = read_wall(c, v, &l->quiet_to_s, "to")))
		return rc;
	if (l->quiet_from_s == l->quiet_to_s)
		return fg_policy_compile_fail(c, v ? v : n, "quiet_hours: 'from' and 'to' are the same time: quiet hours "
		                                            "need a length (from after to spans midnight)");
	if ((v = fg_yaml_map_get(n, "allowance")) &&
	    (rc = read_ms(c, v, 0, 12 * MS_HOUR, &l->quiet_allowance_ms, "allowance")))
		return rc;
	if ((v = fg_yaml_map_get(n, "warn_before")) &&
	    (rc = read_ms(c, v, 0, 12 * MS_HOUR, &l->quiet_warn_ms, "warn_before")))
		return rc;
	return read_action(c, fg_yaml_map_get(n, "action"), &l->quiet_action);
}

/* A counter's name: what x:<name> in Redis is; [a-z0-9_], 1 to 64 bytes. */
static int check_counter_name(struct fg_policy_comp *c, const struct fg_yaml_node *at, const char *name)
{
	size_t i, n = strlen(name);

	for (i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
			break;
	if (n == 0 || n > 64 || i < n)
		return fg_policy_compile_fail(c, at, "a counter name is 1 to 64 of a-z, 0-9 and _");
	return 0;
}

static int read_counter(struct fg_policy_comp *c, const struct fg_yaml_node *e, struct fg_policy_limits *l)
{
	const struct fg_yaml_node *cl, *pd, *nm, *first;
	size_t k = l->ncounters, i;
	int64_t per;
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, e, FG_YAML_MAP, "an exposure counter")) ||
	    (rc = fg_policy_compile_check_record(c, e, counter_keys, "an exposure counter")))
		return rc;
	if (!(cl = fg_yaml_map_get(e, "classes")) || !(pd = fg_yaml_map_get(e, "per_day")))
		return fg_policy_compile_fail(c, e, "an exposure counter needs 'classes' and 'per_day'");
	if (cl->kind == FG_YAML_SEQ && cl->nkids == 0)
		return fg_policy_compile_fail(c, cl, "an exposure counter needs at least one class");
	if ((rc = fg_policy_filter_read_classes(c, cl, &l->counter_classes[k])))
		return rc;
	if ((rc = fg_policy_compile_want_scalar(c, pd, "per_day")))
		return rc;
	per = strtoll(pd->text, NULL, 10);
	if (strspn(pd->text, "0123456789") != strlen(pd->text) || strlen(pd->text) > 6 || per > MAX_PER_DAY)
		return fg_policy_compile_fail(c, pd, "per_day must be a whole number from 0 to %d", MAX_PER_DAY);
	l->per_day[k] = (uint32_t)per;
	first = cl->kind == FG_YAML_SEQ ? cl->kids[0] : cl;
	nm = fg_yaml_map_get(e, "name");
	if (nm && (rc = fg_policy_compile_want_scalar(c, nm, "name")))
		return rc;
	if ((rc = check_counter_name(c, nm ? nm : first, nm ? nm->text : first->text)))
		return rc;
	for (i = 0; i < k; i++)
		if (strcmp(l->counter_name[i], (nm ? nm : first)->text) == 0)
			return fg_policy_compile_fail(c, nm ? nm : first, "two exposure counters are named '%s' (give one "
			                                                  "a 'name')", l->counter_name[i]);
	if (!(l->counter_name[k] = fg_policy_compile_dup(c, nm ? nm : first)))
		return fg_policy_compile_nomem(c);
	l->ncounters++;
	return 0;
}

static int read_exposure(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_policy_limits *l)
{
	size_t i;
	int rc;

	if (!n)
		return 0;
	if ((rc = fg_policy_compile_want_kind(c, n, FG_YAML_SEQ, "exposure")))
		return rc;
	if (n->nkids > FG_POLICY_MAX_COUNTERS)
		return fg_policy_compile_fail(c, n->kids[FG_POLICY_MAX_COUNTERS], "at most %d exposure counters in a block",
		                              FG_POLICY_MAX_COUNTERS);
	for (i = 0; i < n->nkids; i++)
		if ((rc = read_counter(c, n->kids[i], l)))
			return rc;
	return 0;
}

/* --- blocks -------------------------------------------------------------- */

static const char *const limits_keys[] = {
	"bands", "idle_gap", "daily", "break", "quiet_hours", "exposure", "fail_mode", NULL,
};

/* Where list <bands> names band <name> (or "*"), for an error there. */
static const struct fg_yaml_node *band_node(const struct fg_yaml_node *bands, const char *name)
{
	size_t i;

	for (i = 0; bands->kind == FG_YAML_SEQ && i < bands->nkids; i++)
		if (bands->kids[i]->text && strcmp(bands->kids[i]->text, name) == 0)
			return bands->kids[i];
	return bands;
}

static int read_block(struct fg_policy_comp *c, const struct fg_yaml_node *b, unsigned char *claimed)
{
	struct fg_policy *p = c->pol;
	unsigned char sel[FG_POLICY_MAX_BANDS] = { 0 };
	struct fg_policy_limits l = { .active = 1, .idle_gap_ms = DEFAULT_IDLE_GAP_MS };
	const struct fg_yaml_node *v;
	size_t i;
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, b, FG_YAML_MAP, "a limits block")) ||
	    (rc = fg_policy_compile_check_record(c, b, limits_keys, "a limits block")) ||
	    (rc = fg_policy_blocks_read_bands(c, b, fg_yaml_map_get(b, "bands"), sel)))
		return rc;
	if ((v = fg_yaml_map_get(b, "idle_gap")) &&
	    (rc = read_ms(c, v, 10 * MS_SECOND, MS_HOUR, &l.idle_gap_ms, "idle_gap")))
		return rc;
	if ((rc = read_daily(c, fg_yaml_map_get(b, "daily"), &l)) ||
	    (rc = read_break(c, fg_yaml_map_get(b, "break"), &l)) ||
	    (rc = read_quiet(c, fg_yaml_map_get(b, "quiet_hours"), &l)) ||
	    (rc = read_exposure(c, fg_yaml_map_get(b, "exposure"), &l)))
		return rc;
	if ((v = fg_yaml_map_get(b, "fail_mode")) &&
	    (rc = read_enum(c, v, fail_names, FG_POLICY_FAIL_OPEN, FG_POLICY_FAIL_DENY, &l.fail_mode, "fail_mode")))
		return rc;
	for (i = 0; i < p->nbands; i++) {
		if (!sel[i])
			continue;
		if (claimed[i])
			return fg_policy_compile_fail(c, band_node(fg_yaml_map_get(b, "bands"), p->bands[i].name),
			                              "band '%s' already has a limits block", p->bands[i].name);
		claimed[i] = 1;
		p->limits[i] = l;
	}
	return 0;
}

/* The first block's "exposure" key, for an error there. */
static const struct fg_yaml_node *exposure_node(const struct fg_yaml_node *blocks)
{
	const struct fg_yaml_node *k;
	size_t i;

	for (i = 0; i < blocks->nkids; i++)
		if ((k = fg_yaml_map_key(blocks->kids[i], "exposure")))
			return k;
	return blocks;
}

/* Limited bands need the user (every heartbeat method's user_id), and
 * exposure counters need a feed whose items they count. */
static int check_methods(struct fg_policy_comp *c, const struct fg_yaml_node *val)
{
	const struct fg_policy *p = c->pol;
	size_t i, b, feeds = 0, counters = 0;

	for (i = 0; i < p->nmethods; i++) {
		const struct fg_policy_method *m = &p->methods[i];
		if (m->screen_time && m->user_id.kind == FG_POLICY_SRC_NONE)
			return fg_policy_compile_fail(c, val, "limits need to know the user: method %s has no user_id "
			                                      "(or give it screen_time: off)", m->path);
		feeds += m->screen_time && m->feed;
	}
	for (b = 0; b < p->nbands; b++)
		counters += p->limits[b].ncounters;
	if (!counters)
		return 0;
	/* Every heartbeat method of a band with exposure counters must have
	 * items to count, or its calls would deliver uncounted items. */
	for (i = 0; i < p->nmethods; i++)
		if (p->methods[i].screen_time && !p->methods[i].feed)
			return fg_policy_compile_fail(c, exposure_node(val), "exposure counters need the method's 'feed' "
			                              "to count its items: method %s has none (give it a feed, or "
			                              "screen_time: off)", p->methods[i].path);
	(void)feeds;
	return 0;
}

/* The filter of each heartbeat feed method counts the band's exposure. */
static void give_counters(struct fg_policy *p)
{
	size_t i, b, k;

	for (i = 0; i < p->nmethods; i++) {
		struct fg_policy_method *m = &p->methods[i];
		if (!m->feed || !m->screen_time)
			continue;
		for (b = 0; b < p->nbands; b++) {
			struct fg_policy_filter *f = &m->filter[b];
			const struct fg_policy_limits *l = &p->limits[b];
			if (!l->active || !l->ncounters)
				continue;
			if (!f->active)
				fg_policy_filter_pass_rules(p, &f->rules);
			f->limited = 1;
			f->rules.ncounters = (uint8_t)l->ncounters;
			for (k = 0; k < l->ncounters; k++)
				f->rules.counter[k] = l->counter_classes[k];
		}
	}
}

static int compile_limits(struct fg_policy_comp *c, const struct fg_policy_scope *s, const struct fg_yaml_node *val)
{
	unsigned char claimed[FG_POLICY_MAX_BANDS] = { 0 };
	const struct fg_yaml_node *key;
	char where[512];
	size_t i;
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_SEQ, "limits")))
		return rc;
	if (!(c->pol->limits = fg_policy_compile_alloc(c, c->pol->nbands * sizeof(*c->pol->limits))))
		return fg_policy_compile_nomem(c);
	for (i = 0; i < val->nkids; i++)
		if ((rc = read_block(c, val->kids[i], claimed)))
			return rc;
	if ((rc = check_methods(c, val)))
		return rc;
	give_counters(c->pol);
	/* At the key itself: the error is about the whole section (the
	 * config has no state for it). */
	key = fg_yaml_map_key(s->map, "limits");
	snprintf(where, sizeof(where), "%s:%u:%u", c->name, key ? key->line : val->line, key ? key->col : val->col);
	c->pol->need_state_at = fg_policy_compile_strndup(c, where, strlen(where));
	return c->pol->need_state_at ? 0 : fg_policy_compile_nomem(c);
}

/* --- zones ----------------------------------------------------------------- */

static int load_zone(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_tz **out)
{
	char err[256];
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, "a time zone")))
		return rc;
	rc = fg_tz_load(n->text, out, err, sizeof(err));
	if (rc == FG_ENOMEM)
		return fg_policy_compile_nomem(c);
	if (rc < 0)
		return fg_policy_compile_fail(c, n, "time zone: %s (an IANA name like Europe/London, from %s)", err,
		                              FG_TZ_DEFAULT_DIR);
	return 0;
}

/* The policy's zone; UTC when absent (from zoneinfo, or built in). */
static int compile_time_zone(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                             const struct fg_yaml_node *val)
{
	char err[64];

	(void)s;
	if (val)
		return load_zone(c, val, &c->pol->tz);
	if (fg_tz_load("UTC", &c->pol->tz, err, sizeof(err)) == 0)
		return 0;
	return fg_tz_parse_posix("UTC0", &c->pol->tz, err, sizeof(err)) == 0 ? 0 : fg_policy_compile_nomem(c);
}

/* A zone listed twice is a mistake in the list (and each entry costs a
 * comparison on every call that names a zone). */
static int check_listed_once(struct fg_policy_comp *c, const struct fg_yaml_node *val, size_t i)
{
	const struct fg_yaml_node *n = val->kids[i];
	size_t j;

	for (j = 0; j < i; j++)
		if (strcmp(val->kids[j]->text, n->text) == 0)
			return fg_policy_compile_fail(c, n, "time_zones: %s is listed twice (first at line %u)", n->text,
			                              val->kids[j]->line);
	return 0;
}

static int compile_time_zones(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                              const struct fg_yaml_node *val)
{
	struct fg_policy *p = c->pol;
	size_t i;
	int rc;

	(void)s;
	if ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_SEQ, "time_zones")))
		return rc;
	if (!(p->zones = fg_policy_compile_alloc(c, (val->nkids + 1) * sizeof(*p->zones))))
		return fg_policy_compile_nomem(c);
	for (i = 0; i < val->nkids; i++) {
		if ((rc = load_zone(c, val->kids[i], &p->zones[i])))
			return rc;
		p->nzones++;
		if ((rc = check_listed_once(c, val, i)))
			return rc;
	}
	return 0;
}

static int compile_method_zone(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                               const struct fg_yaml_node *val)
{
	struct fg_policy_source *src = &s->method->time_zone;
	int rc;

	if ((rc = fg_policy_sources_read(c, val, s->in, src, "time_zone")))
		return rc;
	if (src->kind == FG_POLICY_SRC_FIELD && src->value != FG_POLICY_V_STRING)
		return fg_policy_compile_fail(c, val, "time_zone: the field must be a string (an IANA zone name)");
	return 0;
}

/* Heartbeats: feed methods unless told otherwise. */
static int compile_screen_time(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                               const struct fg_yaml_node *val)
{
	int rc;

	s->method->screen_time = s->method->feed != NULL;
	if (!val)
		return 0;
	if ((rc = fg_policy_compile_want_scalar(c, val, "screen_time")))
		return rc;
	if (strcmp(val->text, "on") == 0 || strcmp(val->text, "true") == 0)
		s->method->screen_time = 1;
	else if (strcmp(val->text, "off") == 0 || strcmp(val->text, "false") == 0)
		s->method->screen_time = 0;
	else
		return fg_policy_compile_fail(c, val, "screen_time must be on or off");
	return 0;
}

const struct fg_policy_key fg_policy_limits_time_zone_key = { "time_zone", FG_POLICY_KEY_ALWAYS, compile_time_zone };
const struct fg_policy_key fg_policy_limits_time_zones_key = { "time_zones", 0, compile_time_zones };
const struct fg_policy_key fg_policy_limits_key = { "limits", 0, compile_limits };
const struct fg_policy_key fg_policy_limits_method_zone_key = { "time_zone", 0, compile_method_zone };
const struct fg_policy_key fg_policy_limits_screen_time_key = {
	"screen_time", FG_POLICY_KEY_ALWAYS, compile_screen_time,
};

const struct fg_policy_mount fg_policy_limits_mounts[] = {
	{ .path = "limits[]", .record = limits_keys },
	{ .path = "limits[].daily", .record = daily_keys },
	{ .path = "limits[].break", .record = break_keys },
	{ .path = "limits[].quiet_hours", .record = quiet_keys },
	{ .path = "limits[].exposure[]", .record = counter_keys },
	{ .path = NULL },
};
