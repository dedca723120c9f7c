/*
 * fg_fmt.h - integers to decimal text without printf, for the few paths
 * that format numbers on every call (Redis commands, screen-time
 * metadata): snprintf's format parsing costs more there than the number.
 * Pure; any thread.
 */
#ifndef FG_FMT_H
#define FG_FMT_H

#include <stddef.h>
#include <stdint.h>

/* Room for any int64_t in decimal: a sign, 19 digits and a NUL. */
#define FG_FMT_I64_MAX 21

/*
 * fg_fmt_u64 - <v> in decimal into <out> (at least FG_FMT_I64_MAX bytes),
 * NUL-terminated; returns the number of digits.
 */
static inline size_t fg_fmt_u64(char *out, uint64_t v)
{
	char tmp[FG_FMT_I64_MAX];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
	return n;
}

/* fg_fmt_i64 - as fg_fmt_u64 for a signed <v> (INT64_MIN included). */
static inline size_t fg_fmt_i64(char *out, int64_t v)
{
	if (v >= 0)
		return fg_fmt_u64(out, (uint64_t)v);
	out[0] = '-';
	return 1 + fg_fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

#endif /* FG_FMT_H */
