/*
 * fg_units.c - durations and sizes written with units.
 *
 * Both parsers first split the text into digits, fraction and unit, and
 * only then compute, so that a syntax error is reported as such even when
 * the digits would also overflow.
 */
#include "config.h"

#include "fg_units.h"

#include <stdio.h>
#include <string.h>

#include "fg_error.h"

struct unit {
	const char *name;
	uint64_t scale;         /* how many base units (us or bytes) one is worth */
};

static const struct unit duration_units[] = {
	{ "us", 1 },
	{ "ms", 1000 },
	{ "s", 1000000 },
	{ "m", 60000000 },
	{ "h", 3600000000ULL },
	{ "d", 86400000000ULL },
};

static const struct unit size_units[] = {
	{ "B", 1 },
	{ "KiB", 1ULL << 10 },
	{ "MiB", 1ULL << 20 },
	{ "GiB", 1ULL << 30 },
};

#define NUNITS(a) (sizeof(a) / sizeof((a)[0]))

/* The pieces of "<digits>[.<digits>]<unit>", as spans of the input. */
struct number {
	const char *digits;
	size_t ndigits;
	const char *frac;       /* NULL when there is no '.' */
	size_t nfrac;
	const char *unit;       /* rest of the text */
};

static int set_why(const char **why, const char *msg, int rc)
{
	if (why)
		*why = msg;
	return rc;
}

static size_t count_digits(const char *p)
{
	size_t n = 0;

	while (p[n] >= '0' && p[n] <= '9')
		n++;
	return n;
}

static int split_number(const char *text, struct number *num, const char **why)
{
	const char *p = text;

	memset(num, 0, sizeof(*num));
	num->digits = p;
	num->ndigits = count_digits(p);
	if (num->ndigits == 0)
		return set_why(why, "expected digits", FG_EINVAL);
	p += num->ndigits;
	if (*p == '.') {
		num->frac = p + 1;
		num->nfrac = count_digits(num->frac);
		if (num->nfrac == 0)
			return set_why(why, "expected digits after '.'", FG_EINVAL);
		p = num->frac + num->nfrac;
	}
	num->unit = p;
	return 0;
}

static const struct unit *find_unit(const struct unit *units, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(units[i].name, name) == 0)
			return &units[i];
	return NULL;
}

/* <digits> times <scale>, or FG_ETOOBIG past <max>. */
static int scale_digits(const char *digits, size_t n, uint64_t scale, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(digits[i] - '0'), &v))
			return FG_ETOOBIG;
	}
	if (__builtin_mul_overflow(v, scale, &v) || v > max)
		return FG_ETOOBIG;
	*out = v;
	return 0;
}

/*
 * The fraction in base units.  Each digit is worth a tenth of the one
 * before; once the place value is no longer a whole number of base units,
 * only zeros may follow, because "1.0000001s" has no exact value in us.
 */
static int scale_fraction(const char *frac, size_t n, uint64_t scale, uint64_t *out)
{
	uint64_t place = scale, v = 0;

	for (size_t i = 0; i < n; i++) {
		int d = frac[i] - '0';

		if (place % 10 != 0) {
			if (d != 0)
				return FG_EINVAL;
			continue;
		}
		place /= 10;
		v += (uint64_t)d * place;   /* < scale, cannot overflow */
	}
	*out = v;
	return 0;
}

int fg_units_parse_duration(const char *text, int64_t *usec, const char **why)
{
	struct number num;
	const struct unit *u;
	uint64_t whole, part;
	int rc;

	rc = split_number(text, &num, why);
	if (rc)
		return rc;
	if (*num.unit == '\0')
		return set_why(why, "missing unit (use us, ms, s, m, h or d)", FG_EINVAL);
	u = find_unit(duration_units, NUNITS(duration_units), num.unit);
	if (!u)
		return set_why(why, "unknown unit (use us, ms, s, m, h or d)", FG_EINVAL);
	if (scale_fraction(num.frac, num.nfrac, u->scale, &part))
		return set_why(why, "finer than 1us", FG_EINVAL);
	if (scale_digits(num.digits, num.ndigits, u->scale, INT64_MAX, &whole) ||
	    whole + part > INT64_MAX)
		return set_why(why, "too large", FG_ETOOBIG);
	*usec = (int64_t)(whole + part);
	return 0;
}

int fg_units_parse_size(const char *text, uint64_t *bytes, const char **why)
{
	struct number num;
	const struct unit *u;
	int rc;

	rc = split_number(text, &num, why);
	if (rc)
		return rc;
	if (num.frac)
		return set_why(why, "sizes are whole numbers (write 1536KiB, not 1.5MiB)", FG_EINVAL);
	if (*num.unit == '\0')
		return set_why(why, "missing unit (use B, KiB, MiB or GiB)", FG_EINVAL);
	u = find_unit(size_units, NUNITS(size_units), num.unit);
	if (!u)
		return set_why(why, "unknown unit (use B, KiB, MiB or GiB)", FG_EINVAL);
	if (scale_digits(num.digits, num.ndigits, u->scale, UINT64_MAX, bytes))
		return set_why(why, "too large", FG_ETOOBIG);
	return 0;
}

char *fg_units_format_duration(int64_t usec, char *buf, unsigned len)
{
	/* magnitude as unsigned so INT64_MIN has one too */
	uint64_t mag = usec < 0 ? -(uint64_t)usec : (uint64_t)usec;
	const struct unit *u = &duration_units[0];

	if (len == 0)
		return buf;
	/* Up to hours: "24h" says a day's length plainer than "1d", and the
	 * messages of ranges were written that way before days were read. */
	for (size_t i = NUNITS(duration_units) - 1; i-- > 0;) {
		if (mag % duration_units[i].scale == 0) {
			u = &duration_units[i];
			break;
		}
	}
	if (mag == 0)
		u = &duration_units[2];     /* "0s" reads better than "0h" */
	snprintf(buf, len, "%s%llu%s", usec < 0 ? "-" : "",
	         (unsigned long long)(mag / u->scale), u->name);
	return buf;
}

char *fg_units_format_size(uint64_t bytes, char *buf, unsigned len)
{
	const struct unit *u = &size_units[0];

	if (len == 0)
		return buf;
	for (size_t i = NUNITS(size_units); i-- > 0;) {
		if (bytes % size_units[i].scale == 0) {
			u = &size_units[i];
			break;
		}
	}
	if (bytes == 0)
		u = &size_units[0];
	snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / u->scale), u->name);
	return buf;
}
