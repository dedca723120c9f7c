/*
 * fg_config_limits.c - config section "limits": the bounds on what one
 * client, stream or message may make feedguardd hold (struct fg_config's
 * <limits>).  Reloadable.
 */
#include "config.h"

#include <limits.h>

#include "fg_config-internal.h"

/* RFC 9113 section 6.9.1: a flow-control window never exceeds 2^31-1, and
 * section 6.9.2: every window starts at 65535, so a smaller one is useless. */
#define H2_MAX_WINDOW 2147483647LL
#define H2_INITIAL_WINDOW 65535LL
/* gRPC's message prefix carries a 32-bit length. */
#define GRPC_MAX_MESSAGE 4294967295LL

/* The intercepted bytes one connection, and one worker, may hold; the
 * defaults follow Envoy's per_connection_buffer_limit_bytes (1MiB) and
 * leave a worker room for 64 such connections. */
#define CONNECTION_BUFFER_MIN (64 * FG_CONFIG_KIB)
#define CONNECTION_BUFFER_MAX 4294967295LL
#define WORKER_BUFFER_MIN FG_CONFIG_MIB

enum { LIM_MAX_CONCURRENT_STREAMS, LIM_MAX_HEADER_LIST_SIZE, LIM_MAX_MESSAGE_SIZE,
       LIM_STREAM_WINDOW, LIM_CONNECTION_WINDOW, LIM_MAX_CONNECTIONS, LIM_CONNECTION_BUFFER,
       LIM_WORKER_BUFFER, LIM_NKEYS };

static const struct fg_config_key limits_keys[] = {
	[LIM_MAX_CONCURRENT_STREAMS] = { "max_concurrent_streams", fg_config_value_u32,
		FG_CONFIG_OFF(limits.max_concurrent_streams), 1, INT32_MAX, NULL },
	[LIM_MAX_HEADER_LIST_SIZE] = { "max_header_list_size", fg_config_value_size32,
		FG_CONFIG_OFF(limits.max_header_list_size), FG_CONFIG_KIB, UINT32_MAX, NULL },
	[LIM_MAX_MESSAGE_SIZE] = { "max_message_size", fg_config_value_size64,
		FG_CONFIG_OFF(limits.max_message_size), 1, GRPC_MAX_MESSAGE,
		"the gRPC length prefix is 32 bits" },
	[LIM_STREAM_WINDOW] = { "stream_window", fg_config_value_size32,
		FG_CONFIG_OFF(limits.stream_window), H2_INITIAL_WINDOW, H2_MAX_WINDOW,
		"RFC 9113 section 6.9.1" },
	[LIM_CONNECTION_WINDOW] = { "connection_window", fg_config_value_size32,
		FG_CONFIG_OFF(limits.connection_window), H2_INITIAL_WINDOW, H2_MAX_WINDOW,
		"RFC 9113 section 6.9.1" },
	[LIM_MAX_CONNECTIONS] = { "max_connections", fg_config_value_int,
		FG_CONFIG_OFF(limits.max_connections), 1, INT_MAX, NULL },
	[LIM_CONNECTION_BUFFER] = { "connection_buffer", fg_config_value_size64,
		FG_CONFIG_OFF(limits.connection_buffer), CONNECTION_BUFFER_MIN, CONNECTION_BUFFER_MAX, NULL },
	[LIM_WORKER_BUFFER] = { "worker_buffer", fg_config_value_size64,
		FG_CONFIG_OFF(limits.worker_buffer), WORKER_BUFFER_MIN, INT64_MAX, NULL },
};

_Static_assert(FG_CONFIG_NELEM(limits_keys) == LIM_NKEYS && LIM_NKEYS <= FG_CONFIG_SECTION_MAX_KEYS,
               "limits table");

static void limits_defaults(struct fg_config *cfg)
{
	cfg->limits.max_concurrent_streams = 1000;
	cfg->limits.max_header_list_size = 64 * FG_CONFIG_KIB;
	cfg->limits.max_message_size = 4 * FG_CONFIG_MIB;
	cfg->limits.stream_window = 1 * FG_CONFIG_MIB;
	cfg->limits.connection_window = 16 * FG_CONFIG_MIB;
	cfg->limits.max_connections = 100000;
	cfg->limits.connection_buffer = 1 * FG_CONFIG_MIB;
	cfg->limits.worker_buffer = 64 * FG_CONFIG_MIB;
}

const struct fg_config_section fg_config_limits_section = {
	.name = "limits",
	.keys = limits_keys,
	.nkeys = LIM_NKEYS,
	.defaults = limits_defaults,
};
