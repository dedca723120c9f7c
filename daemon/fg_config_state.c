/*
 * fg_config_state.c - config section "state": the Redis that holds the
 * screen-time state (struct fg_config's <state>), and the timeouts and
 * bounds of each worker's link to it (fg_redis.h).  Reloadable: each
 * worker opens a new link with the new settings.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_config-internal.h"
#include "fg_file.h"
#include "fg_state.h"
#include "fg_state_redis.h"
#include "fg_units.h"

#define DURATION_TEXT_LEN 24

enum { ST_REDIS, ST_PASSWORD_FILE, ST_DB, ST_KEY_PREFIX, ST_TIMEOUT, ST_CONNECT_TIMEOUT, ST_STALL_TIMEOUT,
       ST_MAX_PENDING, ST_BACKOFF_INITIAL, ST_BACKOFF_MAX, ST_NKEYS };

/* An IP address and port, or an absolute socket path: hiredis resolves
 * host names with a blocking call, which has no place on a worker loop. */
static int parse_redis(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *key,
                       const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	struct fg_config_addr addr;
	int rc;

	(void)k;
	(void)key;
	if ((rc = fg_config_value_want(l, val, "an ip:port or an absolute unix socket path")))
		return rc;
	/* a relative socket path would depend on the daemon's working directory */
	if (val->text[0] != '/' && !strchr(val->text, ':'))
		return fg_config_fail(l, val, "state.redis: '%s' is neither ip:port nor a unix socket path, which must "
		                      "be absolute (start with /)", fg_yaml_show(val, buf, sizeof(buf)));
	if (val->text[0] != '/' && (rc = fg_config_addr_read(l, val, 0, &addr)))
		return rc;
	if (val->text[0] == '/' && strlen(val->text) >= 108)
		return fg_config_fail(l, val, "state.redis: a unix socket path is at most 107 bytes");
	free(l->cfg->state.redis);
	if (!(l->cfg->state.redis = strdup(val->text)))
		return fg_config_fail_nomem(l);
	l->cfg->state.enabled = 1;
	return 0;
}

static int parse_password_file(struct fg_config_loader *l, const struct fg_config_key *k,
                               const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	int rc, fd;

	(void)k;
	(void)key;
	if ((rc = fg_config_value_want(l, val, "the path of a file holding the password")))
		return rc;
	free(l->cfg->state.password_file);
	l->cfg->state.password_file = fg_yaml_path_resolve(l->basedir, val->text);
	if (!l->cfg->state.password_file)
		return fg_config_fail_nomem(l);
	/* Said now, at the key, rather than by every worker at its connect;
	 * opened as the workers open it (a FIFO is refused, not waited on). */
	if ((fd = fg_file_open_read(l->cfg->state.password_file)) < 0)
		return fg_config_fail(l, val, "state.password_file: cannot read '%s': %s",
		                      fg_yaml_show(val, buf, sizeof(buf)), fg_file_why(errno));
	close(fd);
	return 0;
}

static int parse_key_prefix(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *key,
                            const struct fg_yaml_node *val)
{
	size_t n;
	int rc;

	(void)k;
	(void)key;
	if ((rc = fg_config_value_want(l, val, "a key prefix")))
		return rc;
	n = strlen(val->text);
	if (n > FG_STATE_PREFIX_MAX ||
	    strspn(val->text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.-") != n)
		return fg_config_fail(l, val, "state.key_prefix must be 1 to %d of A-Z a-z 0-9 : _ . -",
		                      FG_STATE_PREFIX_MAX);
	free(l->cfg->state.key_prefix);
	if (!(l->cfg->state.key_prefix = strdup(val->text)))
		return fg_config_fail_nomem(l);
	return 0;
}

static const struct fg_config_key state_keys[] = {
	[ST_REDIS] = { "redis", parse_redis, 0, 0, 0, NULL },
	[ST_PASSWORD_FILE] = { "password_file", parse_password_file, 0, 0, 0, NULL },
	[ST_DB] = { "db", fg_config_value_int, FG_CONFIG_OFF(state.db), 0, 1000000, NULL },
	[ST_KEY_PREFIX] = { "key_prefix", parse_key_prefix, 0, 0, 0, NULL },
	[ST_TIMEOUT] = { "timeout", fg_config_value_duration, FG_CONFIG_OFF(state.timeout_us), FG_CONFIG_USEC_PER_MS,
		10 * FG_CONFIG_USEC_PER_SEC, "a feed call waits this long for its state" },
	[ST_CONNECT_TIMEOUT] = { "connect_timeout", fg_config_value_duration, FG_CONFIG_OFF(state.connect_timeout_us),
		FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	[ST_STALL_TIMEOUT] = { "stall_timeout", fg_config_value_duration, FG_CONFIG_OFF(state.stall_timeout_us),
		FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	[ST_MAX_PENDING] = { "max_pending", fg_config_value_int, FG_CONFIG_OFF(state.max_pending), 1, 1000000, NULL },
	[ST_BACKOFF_INITIAL] = { "backoff_initial", fg_config_value_duration, FG_CONFIG_OFF(state.backoff_initial_us),
		FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	[ST_BACKOFF_MAX] = { "backoff_max", fg_config_value_duration, FG_CONFIG_OFF(state.backoff_max_us),
		FG_CONFIG_USEC_PER_MS, 24 * FG_CONFIG_USEC_PER_HOUR, NULL },
};

_Static_assert(FG_CONFIG_NELEM(state_keys) == ST_NKEYS && ST_NKEYS <= FG_CONFIG_SECTION_MAX_KEYS, "state table");

static int state_check(struct fg_config_loader *l, const struct fg_yaml_node *where,
                       const struct fg_yaml_node *const *seen)
{
	const struct fg_config *cfg = l->cfg;
	char a[DURATION_TEXT_LEN], b[DURATION_TEXT_LEN];

	if (!seen[ST_REDIS])
		return fg_config_fail(l, where, "state.redis is required: the Redis (ip:port or socket path) that holds "
		                                "the screen-time state");
	if (cfg->state.backoff_max_us < cfg->state.backoff_initial_us)
		return fg_config_fail(l, seen[ST_BACKOFF_MAX] ? seen[ST_BACKOFF_MAX] : seen[ST_BACKOFF_INITIAL],
		                      "state.backoff_max (%s) is below state.backoff_initial (%s)",
		                      fg_units_format_duration(cfg->state.backoff_max_us, a, sizeof(a)),
		                      fg_units_format_duration(cfg->state.backoff_initial_us, b, sizeof(b)));
	/* A link is dropped only for a command older than any caller waits. */
	if (cfg->state.stall_timeout_us < cfg->state.timeout_us)
		return fg_config_fail(l, seen[ST_STALL_TIMEOUT] ? seen[ST_STALL_TIMEOUT] : seen[ST_TIMEOUT],
		                      "state.stall_timeout (%s) is below state.timeout (%s)",
		                      fg_units_format_duration(cfg->state.stall_timeout_us, a, sizeof(a)),
		                      fg_units_format_duration(cfg->state.timeout_us, b, sizeof(b)));
	return 0;
}

static void state_defaults(struct fg_config *cfg)
{
	cfg->state.timeout_us = 20 * FG_CONFIG_USEC_PER_MS;
	cfg->state.connect_timeout_us = 500 * FG_CONFIG_USEC_PER_MS;
	cfg->state.stall_timeout_us = 500 * FG_CONFIG_USEC_PER_MS;
	cfg->state.max_pending = 1024;
	cfg->state.backoff_initial_us = 100 * FG_CONFIG_USEC_PER_MS;
	cfg->state.backoff_max_us = 5 * FG_CONFIG_USEC_PER_SEC;
}

static void state_release(struct fg_config *cfg)
{
	free(cfg->state.redis);
	cfg->state.redis = NULL;
	free(cfg->state.password_file);
	cfg->state.password_file = NULL;
	free(cfg->state.key_prefix);
	cfg->state.key_prefix = NULL;
}

const struct fg_config_section fg_config_state_section = {
	.name = "state",
	.keys = state_keys,
	.nkeys = ST_NKEYS,
	.check = state_check,
	.defaults = state_defaults,
	.release = state_release,
};

void fg_config_state_redis(const struct fg_config *cfg, struct fg_state_redis_config *out)
{
	memset(out, 0, sizeof(*out));
	out->link.address = cfg->state.redis;
	out->link.password_file = cfg->state.password_file;
	out->link.db = cfg->state.db;
	out->link.connect_timeout_us = cfg->state.connect_timeout_us;
	out->link.stall_timeout_us = cfg->state.stall_timeout_us;
	out->link.backoff_initial_us = cfg->state.backoff_initial_us;
	out->link.backoff_max_us = cfg->state.backoff_max_us;
	out->link.max_inflight = (unsigned)cfg->state.max_pending;
	out->prefix = cfg->state.key_prefix ? cfg->state.key_prefix : FG_STATE_DEFAULT_PREFIX;
	out->timeout_us = cfg->state.timeout_us;
}
