/*
 * fg_grpc.h - gRPC-over-HTTP/2 facts that are pure functions of bytes:
 * status codes, the grpc-timeout header, grpc-message percent-encoding.
 *
 * Stateless: no libevent, no nghttp2, no allocation.  Reference:
 * grpc/grpc doc/PROTOCOL-HTTP2.md and doc/statuscodes.md.
 */
#ifndef FG_GRPC_H
#define FG_GRPC_H

#include <stddef.h>
#include <stdint.h>

enum fg_grpc_status {
	FG_GRPC_OK = 0,
	FG_GRPC_CANCELLED = 1,
	FG_GRPC_UNKNOWN = 2,
	FG_GRPC_INVALID_ARGUMENT = 3,
	FG_GRPC_DEADLINE_EXCEEDED = 4,
	FG_GRPC_NOT_FOUND = 5,
	FG_GRPC_ALREADY_EXISTS = 6,
	FG_GRPC_PERMISSION_DENIED = 7,
	FG_GRPC_RESOURCE_EXHAUSTED = 8,
	FG_GRPC_FAILED_PRECONDITION = 9,
	FG_GRPC_ABORTED = 10,
	FG_GRPC_OUT_OF_RANGE = 11,
	FG_GRPC_UNIMPLEMENTED = 12,
	FG_GRPC_INTERNAL = 13,
	FG_GRPC_UNAVAILABLE = 14,
	FG_GRPC_DATA_LOSS = 15,
	FG_GRPC_UNAUTHENTICATED = 16,
};

/* The 5-byte prefix of every message: 1 byte compressed flag, 4 bytes
 * big-endian length (PROTOCOL-HTTP2.md, "Length-Prefixed-Message"). */
#define FG_GRPC_PREFIX_LEN 5

/* grpc-timeout is "TimeoutValue TimeoutUnit" with at most 8 digits. */
#define FG_GRPC_TIMEOUT_MAX_DIGITS 8

/*
 * fg_grpc_parse_timeout - parse a grpc-timeout value (<len> bytes at <v>,
 * not NUL-terminated) into microseconds in <*usec>, rounding nanoseconds
 * up so a deadline never becomes zero.  Units: H M S m u n.  Returns 0, or
 * FG_EINVAL when the value is empty, has more than 8 digits, a non-digit or
 * an unknown unit.
 */
int fg_grpc_parse_timeout(const char *v, size_t len, int64_t *usec);

/*
 * fg_grpc_format_timeout - the grpc-timeout value for <usec> (> 0) into
 * <buf> (at least 16 bytes), choosing the finest unit that fits 8 digits.
 * Returns the length written.
 */
size_t fg_grpc_format_timeout(int64_t usec, char *buf, size_t len);

/*
 * fg_grpc_percent_encode - <msg> encoded for grpc-message: bytes outside
 * 0x20..0x7E and '%' become %XX (the spec's "Percent-Encoded").  Writes at
 * most <len>-1 bytes into <buf> and NUL-terminates; never splits an escape.
 * Returns the length written.
 */
size_t fg_grpc_percent_encode(const char *msg, char *buf, size_t len);

/* fg_grpc_status_name - "UNAVAILABLE" for 14; "UNKNOWN" outside 0..16. */
const char *fg_grpc_status_name(int status);

#endif /* FG_GRPC_H */
