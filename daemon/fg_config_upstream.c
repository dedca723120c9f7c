/*
 * fg_config_upstream.c - config section "upstream": the ranking service
 * feedguard forwards to (its address is required) and how each worker's
 * pool of connections to it behaves (struct fg_config's <upstream>).
 * Reloadable: new calls use the new values.
 */
#include "config.h"

#include "fg_config-internal.h"
#include "fg_units.h"

/* Room for any duration fg_units formats. */
#define DURATION_TEXT_LEN 24

enum { UP_ADDRESS, UP_CONNECT_TIMEOUT, UP_MAX_CONNECTIONS, UP_MAX_PENDING, UP_KEEPALIVE_TIME,
       UP_KEEPALIVE_TIMEOUT, UP_BACKOFF_INITIAL, UP_BACKOFF_MAX, UP_NKEYS };

/* Numeric hosts only, and a real port: the pool connects to it. */
static int parse_address(struct fg_config_loader *l, const struct fg_config_key *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	return fg_config_addr_read(l, val, 0, &l->cfg->upstream.addr);
}

static const struct fg_config_key upstream_keys[] = {
	[UP_ADDRESS] = { "address", parse_address, 0, 0, 0, NULL },
	[UP_CONNECT_TIMEOUT] = { "connect_timeout", fg_config_value_duration,
		FG_CONFIG_OFF(upstream.connect_timeout_us), FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	[UP_MAX_CONNECTIONS] = { "max_connections", fg_config_value_int,
		FG_CONFIG_OFF(upstream.max_connections), 1, 1024, NULL },
	[UP_MAX_PENDING] = { "max_pending", fg_config_value_int,
		FG_CONFIG_OFF(upstream.max_pending), 0, 1000000, NULL },
	[UP_KEEPALIVE_TIME] = { "keepalive_time", fg_config_value_duration,
		FG_CONFIG_OFF(upstream.keepalive_time_us), 10 * FG_CONFIG_USEC_PER_SEC, 24 * FG_CONFIG_USEC_PER_HOUR,
		"gRPC clients never ping more often than every 10s" },
	[UP_KEEPALIVE_TIMEOUT] = { "keepalive_timeout", fg_config_value_duration,
		FG_CONFIG_OFF(upstream.keepalive_timeout_us), FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	[UP_BACKOFF_INITIAL] = { "backoff_initial", fg_config_value_duration,
		FG_CONFIG_OFF(upstream.backoff_initial_us), FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	[UP_BACKOFF_MAX] = { "backoff_max", fg_config_value_duration,
		FG_CONFIG_OFF(upstream.backoff_max_us), FG_CONFIG_USEC_PER_MS, 24 * FG_CONFIG_USEC_PER_HOUR, NULL },
};

_Static_assert(FG_CONFIG_NELEM(upstream_keys) == UP_NKEYS && UP_NKEYS <= FG_CONFIG_SECTION_MAX_KEYS,
               "upstream table");

static int upstream_check(struct fg_config_loader *l, const struct fg_yaml_node *where,
                          const struct fg_yaml_node *const *seen)
{
	const struct fg_config *cfg = l->cfg;
	char lo[DURATION_TEXT_LEN], hi[DURATION_TEXT_LEN];

	if (!seen[UP_ADDRESS])
		return fg_config_fail(l, where, "upstream.address is required");
	if (cfg->upstream.backoff_max_us < cfg->upstream.backoff_initial_us)
		return fg_config_fail(l, seen[UP_BACKOFF_MAX] ? seen[UP_BACKOFF_MAX] : seen[UP_BACKOFF_INITIAL],
		                      "upstream.backoff_max (%s) is below upstream.backoff_initial (%s)",
		                      fg_units_format_duration(cfg->upstream.backoff_max_us, lo, sizeof(lo)),
		                      fg_units_format_duration(cfg->upstream.backoff_initial_us, hi, sizeof(hi)));
	return 0;
}

static void upstream_defaults(struct fg_config *cfg)
{
	cfg->upstream.connect_timeout_us = 2 * FG_CONFIG_USEC_PER_SEC;
	cfg->upstream.max_connections = 8;
	cfg->upstream.max_pending = 1024;
	cfg->upstream.keepalive_time_us = 5 * FG_CONFIG_USEC_PER_MIN;
	cfg->upstream.keepalive_timeout_us = 20 * FG_CONFIG_USEC_PER_SEC;
	cfg->upstream.backoff_initial_us = 100 * FG_CONFIG_USEC_PER_MS;
	cfg->upstream.backoff_max_us = 10 * FG_CONFIG_USEC_PER_SEC;
}

const struct fg_config_section fg_config_upstream_section = {
	.name = "upstream",
	.keys = upstream_keys,
	.nkeys = UP_NKEYS,
	.check = upstream_check,
	.required = "upstream.address is required",
	.defaults = upstream_defaults,
};
