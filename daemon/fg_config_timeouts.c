/*
 * fg_config_timeouts.c - config section "timeouts": how long a client
 * connection or stream may sit still, and how long a stop waits (struct
 * fg_config's <timeouts>).  Reloadable.
 */
#include "config.h"

#include "fg_config-internal.h"

static const struct fg_config_key timeouts_keys[] = {
	{ "idle", fg_config_value_duration, FG_CONFIG_OFF(timeouts.idle_us),
	  FG_CONFIG_USEC_PER_SEC, 24 * FG_CONFIG_USEC_PER_HOUR, NULL },
	{ "drain", fg_config_value_duration, FG_CONFIG_OFF(timeouts.drain_us),
	  0, FG_CONFIG_USEC_PER_HOUR, NULL },
	{ "readiness_delay", fg_config_value_duration, FG_CONFIG_OFF(timeouts.readiness_delay_us),
	  0, FG_CONFIG_USEC_PER_HOUR, NULL },
	{ "write", fg_config_value_duration, FG_CONFIG_OFF(timeouts.write_us),
	  10 * FG_CONFIG_USEC_PER_MS, FG_CONFIG_USEC_PER_HOUR, NULL },
	{ "stalled_stream", fg_config_value_duration, FG_CONFIG_OFF(timeouts.stalled_stream_us),
	  10 * FG_CONFIG_USEC_PER_MS, 24 * FG_CONFIG_USEC_PER_HOUR, NULL },
	{ "stalled_stream_overloaded", fg_config_value_duration, FG_CONFIG_OFF(timeouts.stalled_overloaded_us),
	  10 * FG_CONFIG_USEC_PER_MS, 24 * FG_CONFIG_USEC_PER_HOUR, NULL },
};

_Static_assert(FG_CONFIG_NELEM(timeouts_keys) <= FG_CONFIG_SECTION_MAX_KEYS, "timeouts table");

static void timeouts_defaults(struct fg_config *cfg)
{
	cfg->timeouts.idle_us = 5 * FG_CONFIG_USEC_PER_MIN;
	cfg->timeouts.drain_us = 30 * FG_CONFIG_USEC_PER_SEC;
	cfg->timeouts.readiness_delay_us = 0;
	cfg->timeouts.write_us = 30 * FG_CONFIG_USEC_PER_SEC;
	cfg->timeouts.stalled_stream_us = 5 * FG_CONFIG_USEC_PER_MIN;
	cfg->timeouts.stalled_overloaded_us = 5 * FG_CONFIG_USEC_PER_SEC;
}

const struct fg_config_section fg_config_timeouts_section = {
	.name = "timeouts",
	.keys = timeouts_keys,
	.nkeys = FG_CONFIG_NELEM(timeouts_keys),
	.defaults = timeouts_defaults,
};
