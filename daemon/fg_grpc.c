/* fg_grpc.c - stateless gRPC protocol helpers; see fg_grpc.h. */
#include "config.h"

#include <stdio.h>

#include "fg_error.h"
#include "fg_grpc.h"

static int64_t timeout_unit_usec(char unit, int *ns)
{
	*ns = 0;
	switch (unit) {
	case 'H': return INT64_C(3600000000);
	case 'M': return INT64_C(60000000);
	case 'S': return INT64_C(1000000);
	case 'm': return INT64_C(1000);
	case 'u': return 1;
	case 'n': *ns = 1; return 1;
	default: return 0;
	}
}

int fg_grpc_parse_timeout(const char *v, size_t len, int64_t *usec)
{
	int64_t value = 0, mult;
	size_t i;
	int ns;

	if (len < 2 || len - 1 > FG_GRPC_TIMEOUT_MAX_DIGITS)
		return FG_EINVAL;
	for (i = 0; i + 1 < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return FG_EINVAL;
		value = value * 10 + (v[i] - '0');
	}
	mult = timeout_unit_usec(v[len - 1], &ns);
	if (mult == 0)
		return FG_EINVAL;
	/* 8 digits of hours is 3.6e17 us: fits int64 with room. */
	*usec = ns ? (value + 999) / 1000 : value * mult;
	return 0;
}

size_t fg_grpc_format_timeout(int64_t usec, char *buf, size_t len)
{
	static const struct { int64_t div; char unit; } units[] = {
		{ 1, 'u' }, { 1000, 'm' }, { 1000000, 'S' }, { 60000000, 'M' }, { INT64_C(3600000000), 'H' },
	};
	size_t i;
	int n;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		/* round up: a proxy must never shorten nor lose the deadline */
		int64_t v = (usec + units[i].div - 1) / units[i].div;
		if (v < 100000000 || i + 1 == sizeof(units) / sizeof(units[0])) {
			n = snprintf(buf, len, "%lld%c", (long long)(v > 99999999 ? 99999999 : v), units[i].unit);
			return n < 0 ? 0 : (size_t)n;
		}
	}
	return 0;
}

size_t fg_grpc_percent_encode(const char *msg, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (len == 0)
		return 0;
	for (; *msg; msg++) {
		unsigned char c = (unsigned char)*msg;
		if (c >= 0x20 && c <= 0x7e && c != '%') {
			if (o + 1 >= len)
				break;
			buf[o++] = (char)c;
		} else {
			if (o + 3 >= len)
				break;
			buf[o++] = '%';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	buf[o] = '\0';
	return o;
}

const char *fg_grpc_status_name(int status)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED",
	};
	if (status < 0 || status > FG_GRPC_UNAUTHENTICATED)
		return "UNKNOWN";
	return names[status];
}
