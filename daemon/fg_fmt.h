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

/* The decimal digits of <v>: 1..20.  From its bit length (1233 / 4096 is
 * just above log10(2)), then one comparison: no division. */
static inline size_t fg_fmt_u64_len(uint64_t v)
{
	static const uint64_t pow10[20] = { 1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
	                                    10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
	                                    100000000000ULL, 1000000000000ULL, 10000000000000ULL,
	                                    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
	                                    100000000000000000ULL, 1000000000000000000ULL,
	                                    10000000000000000000ULL };
	unsigned t;

	if (v < 10)
		return 1;
	t = (unsigned)(64 - __builtin_clzll(v)) * 1233 >> 12;
	return t + (v >= pow10[t]);
}

/*
 * fg_fmt_u64 - <v> in decimal into <out> (at least FG_FMT_I64_MAX bytes),
 * NUL-terminated; returns the number of digits.  Two digits a division,
 * right to left into their places: a millisecond time has 13 digits, and
 * a Redis update carries ten such numbers on every call.
 */
static inline size_t fg_fmt_u64(char *out, uint64_t v)
{
	static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	                               "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	                               "8081828384858687888990919293949596979899";
	size_t n = fg_fmt_u64_len(v), i = n;

	out[n] = '\0';
	while (v >= 100) {
		unsigned d = (unsigned)(v % 100) * 2;
		v /= 100;
		out[--i] = pairs[d + 1];
		out[--i] = pairs[d];
	}
	if (v >= 10) {
		out[--i] = pairs[v * 2 + 1];
		out[--i] = pairs[v * 2];
	} else {
		out[--i] = (char)('0' + v);
	}
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
