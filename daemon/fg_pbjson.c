/* fg_pbjson.c - protobuf wire bytes to one line of JSON; see fg_pbjson.h. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_pbjson.h"

/*
 * A message view's chain (struct iter) has one level per merged message
 * around it, and a view at nesting depth d is at most d + 1 levels deep
 * (each level is the view of the enclosing message); put_message() refuses
 * depths beyond FG_PBJSON_MAX_DEPTH before it makes an iterator.
 */
#define MAX_CHAIN (FG_PBJSON_MAX_DEPTH + 1)

/*
 * The first pass over a message sets bit (number % SEEN_BITS) for each
 * declared field it holds, so the fields it lacks cost no pass of their
 * own; a bit shared by two numbers only costs a pass that finds nothing.
 */
#define SEEN_BITS 256

/* Python's repr() (and so json_format) writes 1e-05 but 0.0001, and
 * 1e+16 but 1000000000000000.0: the decimal exponents written positional. */
#define REPR_EXP_MIN (-4)
#define REPR_EXP_MAX 15

/* Significant digits tried: json_format's ToShortestFloat starts a float at
 * 6 (every float has 6 to 9); a double reads back from 17, and any decimal
 * of 15 digits or fewer reads back from the double nearest to it (IEEE 754
 * binary64 holds 15.95 decimal digits). */
#define FLOAT_DIGITS_MIN 6
#define FLOAT_DIGITS_MAX 9
#define DOUBLE_DIGITS_SURE 15
#define DOUBLE_DIGITS_MAX 17

/* A double at or above this rounds to infinity as a float (IEEE 754
 * round to nearest: FLT_MAX plus half its ulp). */
#define FLOAT_OVERFLOW 0x1.ffffffp127

/* google/protobuf/timestamp.proto: 0001-01-01T00:00:00Z to
 * 9999-12-31T23:59:59Z.  duration.proto: +-10000 years of 365.25 days. */
#define TIMESTAMP_MIN INT64_C(-62135596800)
#define TIMESTAMP_MAX INT64_C(253402300799)
#define DURATION_MAX INT64_C(315576000000)
#define NANOS 1000000000
#define DAY 86400
/* Days from 0001-01-01 to 1970-01-01 in the proleptic Gregorian calendar. */
#define DAYS_TO_EPOCH 719162
/* The Gregorian calendar repeats every 400 years of 146097 days; 100 years
 * (not the 400th) have 36524, 4 years (not the 100th) 1461. */
#define DAYS_400Y 146097
#define DAYS_100Y 36524
#define DAYS_4Y 1461
#define DAYS_1Y 365

#define WKT_PREFIX "google.protobuf."
#define WKT_PREFIX_LEN (sizeof(WKT_PREFIX) - 1)

/*
 * A message as the renderer reads it.  Either bytes, or (<up> set) the
 * merge of every occurrence of a non-repeated message field of an
 * enclosing view: protobuf merges the occurrences, which on the wire is
 * their concatenation (encoding.md, "Last One Wins"), so the view walks
 * them in turn without copying them.  Every record of every view lies in
 * the caller's one input buffer, at increasing addresses in walking order.
 */
struct view {
	const struct view *up;          /* NULL: the message is [p, end) */
	const uint8_t *p, *end;         /* <up> NULL: the message's bytes (both NULL: empty) */
	uint32_t number;                /* <up> set: the field of <up> whose occurrences are merged */
	const uint8_t *after;           /* <up> set: NULL, or only occurrences from here on (the
	                                   field is in a oneof and another member came before) */
};

/* One pass over a view: level 0 is the view, each next level its <up>; a
 * level's cursor runs over one occurrence and takes the next from the
 * level above when it runs out. */
struct iter {
	size_t n;
	const struct view *v[MAX_CHAIN];
	const uint8_t *p[MAX_CHAIN];
	const uint8_t *end[MAX_CHAIN];
};

/* State of one fg_pbjson_write() call, shared by every nesting level. */
struct render {
	struct fg_bufq *out;
	const struct fg_schema *schema;         /* for enum names; NULL: numbers */
	const char *why;                        /* static reason of the error being returned */
	uint32_t unknown[FG_PBJSON_MAX_UNKNOWN]; /* put_unknown()'s scratch (it never nests) */
};

/* What the first pass over a message found. */
struct scan {
	uint64_t seen[SEEN_BITS / 64];  /* bit number % SEEN_BITS: a declared field may be there */
	size_t nunknown;                /* records of numbers the message does not declare */
};

/* The occurrences of one field in a message view. */
struct occ {
	size_t count;                   /* occurrences from <after> on */
	struct fg_pbwire_field last;    /* the last of them */
	const uint8_t *after;           /* NULL, or the end of the last record of another member
	                                   of the field's oneof: what came before is cleared */
};

/* The last key and value records of a map entry. */
struct entry {
	struct fg_pbwire_field key, value;
	size_t nkey, nvalue;
};

static int put_message(struct render *r, const struct fg_schema_message *type, const struct view *v,
                       unsigned depth);

static int fail(struct render *r, int rc, const char *why)
{
	r->why = why;
	return rc;
}

/* ---- output ---- */

static int put(struct render *r, const void *p, size_t n)
{
	if (fg_bufq_append(r->out, p, n) < 0)
		return fail(r, FG_ENOMEM, "out of memory");
	return 0;
}

static int put_lit(struct render *r, const char *s)
{
	return put(r, s, strlen(s));
}

static int put_char(struct render *r, char c)
{
	return put(r, &c, 1);
}

/* A comma before every element of an object or array but the first. */
static int put_sep(struct render *r, int *first)
{
	if (*first) {
		*first = 0;
		return 0;
	}
	return put_char(r, ',');
}

static int put_string(struct render *r, const void *s, size_t len)
{
	if (fg_pbjson_write_string(r->out, s, len) < 0)
		return fail(r, FG_ENOMEM, "out of memory");
	return 0;
}

/* ---- strings ---- */

/* The length of the valid UTF-8 sequence of a non-ASCII character at <s>
 * (before <end>), or 0.  RFC 3629 section 4: the second byte's range
 * excludes overlong forms (E0, F0), surrogates (ED) and code points above
 * U+10FFFF (F4); C0, C1 and F5..FF never start one. */
static size_t utf8_len(const uint8_t *s, const uint8_t *end)
{
	uint8_t lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	n = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if ((size_t)(end - s) < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* What stands for byte <c> in a JSON string when it cannot stand for
 * itself, into <buf> (8 bytes); returns its length.  The escapes are
 * those of RFC 8259 section 7 that Python's json module writes. */
static size_t escape(uint8_t c, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	static const char *const named[0x20] = {
		['\b'] = "\\b", ['\f'] = "\\f", ['\n'] = "\\n", ['\r'] = "\\r", ['\t'] = "\\t",
	};

	if (c >= 0x80) {
		memcpy(buf, "\xef\xbf\xbd", 3);         /* U+FFFD for a byte outside valid UTF-8 */
		return 3;
	}
	if (c == '"' || c == '\\') {
		buf[0] = '\\';
		buf[1] = (char)c;
		return 2;
	}
	if (named[c]) {
		memcpy(buf, named[c], 2);
		return 2;
	}
	memcpy(buf, "\\u00", 4);
	buf[4] = hex[c >> 4];
	buf[5] = hex[c & 15];
	return 6;
}

/* The string's bytes, escaped, without the quotes: runs that stand for
 * themselves are copied in one append each. */
static int string_body(struct fg_bufq *out, const uint8_t *s, size_t len)
{
	const uint8_t *p = s, *end = s + len, *run = s;
	char esc[8];
	size_t n;

	while (p < end) {
		if (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
			p++;
			continue;
		}
		if (*p >= 0x80 && (n = utf8_len(p, end)) > 0) {
			p += n;
			continue;
		}
		n = escape(*p, esc);
		if (fg_bufq_append(out, run, (size_t)(p - run)) < 0 || fg_bufq_append(out, esc, n) < 0)
			return FG_ENOMEM;
		run = ++p;
	}
	return fg_bufq_append(out, run, (size_t)(p - run));
}

int fg_pbjson_write_string(struct fg_bufq *out, const uint8_t *s, size_t len)
{
	size_t start = fg_bufq_len(out);

	if (fg_bufq_append(out, "\"", 1) < 0 || (len > 0 && string_body(out, s, len) < 0) ||
	    fg_bufq_append(out, "\"", 1) < 0) {
		fg_bufq_truncate(out, start);
		return FG_ENOMEM;
	}
	return 0;
}

int fg_pbjson_write_base64(struct fg_bufq *out, const uint8_t *p, size_t len)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n, i, j = 1;
	uint32_t w;
	uint8_t *t;

	/* 4 characters per 3 bytes or part of 3, and the quotes */
	if (len / 3 >= (SIZE_MAX - 8) / 4)
		return FG_ENOMEM;
	n = (len + 2) / 3 * 4 + 2;
	if (fg_bufq_reserve(out, n) < 0)
		return FG_ENOMEM;
	t = fg_bufq_tail(out);
	t[0] = '"';
	for (i = 0; i + 3 <= len; i += 3, j += 4) {
		w = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		t[j] = (uint8_t)b64[w >> 18];
		t[j + 1] = (uint8_t)b64[w >> 12 & 63];
		t[j + 2] = (uint8_t)b64[w >> 6 & 63];
		t[j + 3] = (uint8_t)b64[w & 63];
	}
	if (i < len) {
		w = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
		t[j] = (uint8_t)b64[w >> 18];
		t[j + 1] = (uint8_t)b64[w >> 12 & 63];
		t[j + 2] = i + 1 < len ? (uint8_t)b64[w >> 6 & 63] : '=';
		t[j + 3] = '=';
		j += 4;
	}
	t[j] = '"';
	fg_bufq_commit(out, n);
	return 0;
}

/* ---- numbers ---- */

/* <u> in decimal into <buf> (20 bytes); returns the length. */
static size_t u64_text(char *buf, uint64_t u)
{
	char tmp[20];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

static int is_64bit(enum fg_schema_type type)
{
	return type == FG_SCHEMA_INT64 || type == FG_SCHEMA_UINT64 || type == FG_SCHEMA_SINT64 ||
	       type == FG_SCHEMA_FIXED64 || type == FG_SCHEMA_SFIXED64;
}

/*
 * The integer of <type> whose raw wire bits are <raw>, in decimal into
 * <buf> (21 bytes); returns the length.  32-bit types keep the low 32 bits
 * of a varint, as protobuf's parsers do (a negative int32 comes as a
 * 10-byte sign-extended varint); sint types are zigzag (encoding.md).
 */
static size_t int_text(char *buf, enum fg_schema_type type, uint64_t raw)
{
	uint32_t u32 = (uint32_t)raw;
	int64_t v;

	switch (type) {
	case FG_SCHEMA_UINT32:
	case FG_SCHEMA_FIXED32:
		return u64_text(buf, u32);
	case FG_SCHEMA_UINT64:
	case FG_SCHEMA_FIXED64:
		return u64_text(buf, raw);
	case FG_SCHEMA_SINT32:
		v = (int32_t)(u32 >> 1 ^ (0u - (u32 & 1)));
		break;
	case FG_SCHEMA_SINT64:
		v = (int64_t)(raw >> 1 ^ (0 - (raw & 1)));
		break;
	case FG_SCHEMA_INT64:
	case FG_SCHEMA_SFIXED64:
		v = (int64_t)raw;
		break;
	default:                /* int32, sfixed32, enum */
		v = (int32_t)u32;
		break;
	}
	if (v >= 0)
		return u64_text(buf, (uint64_t)v);
	buf[0] = '-';
	return 1 + u64_text(buf + 1, 0 - (uint64_t)v);
}

/* Whether <d> written with <p> significant digits (into <buf>) reads back
 * as <d>, or as the same float when <kind> is FG_SCHEMA_FLOAT. */
static int reads_back(char *buf, size_t size, double d, int p, enum fg_schema_type kind)
{
	double x;

	snprintf(buf, size, "%.*e", p - 1, d);
	x = strtod(buf, NULL);
	if (kind != FG_SCHEMA_FLOAT)
		return x == d;
	return fabs(x) < FLOAT_OVERFLOW && (float)x == (float)d;
}

/*
 * Whether the decimal in <buf> ("d.ddde+XX", from reads_back()) one unit
 * up in its last digit reads back as double <d>; if so it is left in
 * <buf>.  Only for a power of two: the doubles below it are half as far
 * apart as those above, so the nearest decimal can miss the narrow lower
 * half of <d>'s rounding interval while the next one up is in the upper
 * half, and repr() takes the shorter.
 */
static int reads_back_up(char *buf, size_t size, double d)
{
	char up[40], *q;
	int ex;

	if (frexp(d, &ex) != 0.5)
		return 0;
	snprintf(up, sizeof(up), "%s", buf);
	for (q = strchr(up, 'e') - 1; q >= up; q--) {
		if (*q < '0' || *q > '9')
			continue;
		if (*q != '9')
			break;
		*q = '0';
	}
	if (q < up)
		return 0;               /* a carry out of the first digit is never the shorter */
	(*q)++;
	if (strtod(up, NULL) != d)
		return 0;
	snprintf(buf, size, "%s", up);
	return 1;
}

/*
 * The significant digits of finite <d> >= 0 that json_format writes, into
 * <dg> (DOUBLE_DIGITS_MAX + 1 bytes, no NUL) with the decimal exponent of
 * the first in <*exp10>; returns their count, trailing zeros dropped.
 *
 * A float gets the fewest digits from 6 up that read back to the same
 * float (ToShortestFloat, whose result repr() then writes unchanged).  A
 * double gets the fewest that read back, as repr() does, found in at most
 * three tries: when 15 digits read back, they are the shortest with their
 * trailing zeros dropped, since a shorter decimal that reads back lies
 * within half an ulp of <d> (2^-53 relative), closer than half a unit of
 * the 15th digit (5e-16 relative at least), so rounding <d> to 15 digits
 * gives that decimal padded with zeros.  Otherwise 16 digits, else 17.
 * That holds for normal doubles only: a subnormal one has fewer bits, so a
 * wider ulp, and is tried from 1 digit up (5e-324 is the smallest).
 */
static int shortest(double d, enum fg_schema_type kind, char *dg, int *exp10)
{
	int p = kind == FG_SCHEMA_FLOAT ? FLOAT_DIGITS_MIN : d >= DBL_MIN ? DOUBLE_DIGITS_SURE : 1;
	int max = kind == FG_SCHEMA_FLOAT ? FLOAT_DIGITS_MAX : DOUBLE_DIGITS_MAX, i, n = 0;
	char buf[40], *e;

	while (p < max && !reads_back(buf, sizeof(buf), d, p, kind) &&
	       !(kind != FG_SCHEMA_FLOAT && reads_back_up(buf, sizeof(buf), d)))
		p++;
	if (p == max)
		snprintf(buf, sizeof(buf), "%.*e", p - 1, d);
	/* "d.ddde+XX"; whatever radix character the locale uses is skipped */
	e = strchr(buf, 'e');
	for (i = 0; &buf[i] < e; i++)
		if (buf[i] >= '0' && buf[i] <= '9')
			dg[n++] = buf[i];
	while (n > 1 && dg[n - 1] == '0')
		n--;
	*exp10 = atoi(e + 1);
	return n;
}

/* Finite <d> as repr() writes it: positional with at least one fraction
 * digit ("1.0", "0.0001"), or d[.ddd]e+XX outside REPR_EXP_MIN..MAX. */
static int put_finite(struct render *r, double d, enum fg_schema_type kind)
{
	char dg[DOUBLE_DIGITS_MAX + 1], buf[64];
	size_t n = 0;
	int nd, e, i;

	if (signbit(d))
		buf[n++] = '-';
	nd = shortest(fabs(d), kind, dg, &e);
	if (e < REPR_EXP_MIN || e > REPR_EXP_MAX) {
		buf[n++] = dg[0];
		if (nd > 1)
			buf[n++] = '.';
		memcpy(buf + n, dg + 1, (size_t)nd - 1);
		n += (size_t)nd - 1;
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "e%c%02d", e < 0 ? '-' : '+', abs(e));
	} else if (e < 0) {
		memcpy(buf + n, "0.", 2);
		n += 2;
		for (i = e + 1; i < 0; i++)
			buf[n++] = '0';
		memcpy(buf + n, dg, (size_t)nd);
		n += (size_t)nd;
	} else {
		for (i = 0; i <= e; i++)
			buf[n++] = i < nd ? dg[i] : '0';
		buf[n++] = '.';
		for (i = e + 1; i < nd; i++)
			buf[n++] = dg[i];
		if (nd <= e + 1)
			buf[n++] = '0';
	}
	return put(r, buf, n);
}

static int put_float(struct render *r, double d, enum fg_schema_type kind)
{
	if (isnan(d))
		return put_lit(r, "\"NaN\"");
	if (isinf(d))
		return put_lit(r, d < 0 ? "\"-Infinity\"" : "\"Infinity\"");
	return put_finite(r, d, kind);
}

static int put_enum(struct render *r, const struct fg_schema_enum *e, uint64_t raw)
{
	int32_t number = (int32_t)(uint32_t)raw;
	size_t i, n = e ? fg_schema_enum_nvalues(e) : 0;
	const char *name;
	char buf[24];

	/* declaration order: an alias's first name, as protobuf writes it */
	for (i = 0; i < n; i++) {
		if (fg_schema_enum_value_number(e, i) != number)
			continue;
		name = fg_schema_enum_value_name(e, i);
		return put_string(r, name, strlen(name));
	}
	return put(r, buf, int_text(buf, FG_SCHEMA_ENUM, raw));
}

/* One value of a numeric, bool or enum field, from its raw wire bits (a
 * varint's value, or the little-endian 8 or 4 bytes). */
static int put_scalar(struct render *r, enum fg_schema_type type, const struct fg_schema_enum *e, uint64_t raw)
{
	uint32_t u32 = (uint32_t)raw;
	char buf[24];
	size_t n = 0;
	double d;
	float f;

	switch (type) {
	case FG_SCHEMA_DOUBLE:
		memcpy(&d, &raw, sizeof(d));
		return put_float(r, d, type);
	case FG_SCHEMA_FLOAT:
		memcpy(&f, &u32, sizeof(f));
		return put_float(r, f, type);
	case FG_SCHEMA_BOOL:
		return put_lit(r, raw ? "true" : "false");
	case FG_SCHEMA_ENUM:
		return put_enum(r, e, raw);
	default:
		break;
	}
	/* 64-bit integers as strings: JSON readers make numbers doubles */
	if (is_64bit(type))
		buf[n++] = '"';
	n += int_text(buf + n, type, raw);
	if (is_64bit(type))
		buf[n++] = '"';
	return put(r, buf, n);
}

/* ---- reading views ---- */

static void iter_init(struct iter *it, const struct view *v)
{
	size_t n = 0;

	for (; v && n < MAX_CHAIN; v = v->up, n++) {
		it->v[n] = v;
		it->p[n] = it->end[n] = NULL;
	}
	it->n = n;
	it->p[n - 1] = it->v[n - 1]->p;
	it->end[n - 1] = it->v[n - 1]->end;
}

/* The next record of level <i> into <*f>: 1, 0 at the level's end, or
 * FG_EINVAL. */
static int iter_level(struct render *r, struct iter *it, size_t i, struct fg_pbwire_field *f)
{
	const struct view *v = it->v[i];
	struct fg_pbwire_field up;
	int rc;

	while (it->p[i] == it->end[i]) {
		if (i + 1 == it->n)
			return 0;
		do {
			if ((rc = iter_level(r, it, i + 1, &up)) <= 0)
				return rc;
		} while (up.number != v->number || (v->after && up.tag < v->after));
		/* the enclosing view's first pass checked the wire type: LEN or a group */
		it->p[i] = up.value;
		it->end[i] = up.value + up.vlen;
	}
	if (fg_pbwire_next_field(&it->p[i], it->end[i], f) < 0)
		return fail(r, FG_EINVAL, "bad field: tag, varint, length or group");
	return 1;
}

static int iter_next(struct render *r, struct iter *it, struct fg_pbwire_field *f)
{
	return iter_level(r, it, 0, f);
}

/* Whether wire type <wt> is how field <fd> is written: its type's, or LEN
 * for a packed repeated scalar (encoding.md: parsers accept both). */
static int wire_ok(const struct fg_schema_field *fd, uint8_t wt)
{
	int want = fg_schema_type_wire(fg_schema_field_type(fd));

	if (wt == want)
		return 1;
	return wt == FG_PBWIRE_LEN && (fg_schema_field_flags(fd) & FG_SCHEMA_F_REPEATED) &&
	       want != FG_PBWIRE_LEN && want != FG_PBWIRE_SGROUP;
}

static uint64_t le_bytes(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | p[n];
	return v;
}

/* The raw bits of one unpacked scalar record. */
static uint64_t raw_of(const struct fg_pbwire_field *f)
{
	if (f->wire_type == FG_PBWIRE_I64)
		return le_bytes(f->value, 8);
	if (f->wire_type == FG_PBWIRE_I32)
		return le_bytes(f->value, 4);
	return f->varint;
}

/* The first pass: every record read (so the whole view is checked), the
 * declared fields present noted, the unknown ones counted. */
static int scan(struct render *r, const struct fg_schema_message *type, const struct view *v, struct scan *s)
{
	const struct fg_schema_field *fd;
	struct fg_pbwire_field f;
	struct iter it;
	int rc;

	memset(s, 0, sizeof(*s));
	iter_init(&it, v);
	while ((rc = iter_next(r, &it, &f)) > 0) {
		fd = fg_schema_find_field_number(type, f.number);
		if (!fd) {
			s->nunknown++;
			continue;
		}
		if (!wire_ok(fd, f.wire_type))
			return fail(r, FG_EINVAL, "wire type does not match the field's declared type");
		s->seen[f.number % SEEN_BITS / 64] |= UINT64_C(1) << (f.number % 64);
	}
	return rc;
}

static int maybe_seen(const struct scan *s, uint32_t number)
{
	return (s->seen[number % SEEN_BITS / 64] >> (number % 64)) & 1;
}

/* The occurrences of <fd> in <v> that a parser would keep. */
static int occurrences(struct render *r, const struct fg_schema_field *fd, const struct view *v, struct occ *o)
{
	const struct fg_schema_oneof *oneof = fg_schema_field_oneof(fd);
	const struct fg_schema_message *type = fg_schema_field_parent(fd);
	uint32_t number = fg_schema_field_number(fd);
	const struct fg_schema_field *g;
	struct fg_pbwire_field f;
	struct iter it;
	int rc;

	memset(o, 0, sizeof(*o));
	iter_init(&it, v);
	while ((rc = iter_next(r, &it, &f)) > 0) {
		if (f.number == number) {
			o->count++;
			o->last = f;
			continue;
		}
		if (!oneof)
			continue;
		/* setting a member clears the others (protobuf language guide, "Oneof") */
		g = fg_schema_find_field_number(type, f.number);
		if (g && fg_schema_field_oneof(g) == oneof) {
			o->count = 0;
			o->after = f.end;
		}
	}
	return rc;
}

/* ---- fields ---- */

static const struct fg_schema_enum *enum_of(struct render *r, const struct fg_schema_field *fd)
{
	if (!r->schema || fg_schema_field_type(fd) != FG_SCHEMA_ENUM)
		return NULL;
	return fg_schema_find_enum(r->schema, fg_schema_field_type_name(fd));
}

/* One unpacked value of <fd> from its record <f>. */
static int put_value(struct render *r, const struct fg_schema_field *fd, const struct fg_schema_enum *e,
                     const struct fg_pbwire_field *f, unsigned depth)
{
	enum fg_schema_type type = fg_schema_field_type(fd);
	struct view sub = { .p = f->value, .end = f->value + f->vlen };

	switch (type) {
	case FG_SCHEMA_MESSAGE:
	case FG_SCHEMA_GROUP:
		return put_message(r, fg_schema_field_message(fd), &sub, depth + 1);
	case FG_SCHEMA_STRING:
		return put_string(r, f->value, f->vlen);
	case FG_SCHEMA_BYTES:
		if (fg_pbjson_write_base64(r->out, f->value, f->vlen) < 0)
			return fail(r, FG_ENOMEM, "out of memory");
		return 0;
	default:
		return put_scalar(r, type, e, raw_of(f));
	}
}

/* The elements of packed record <f> of a repeated scalar of <type>. */
static int put_packed(struct render *r, enum fg_schema_type type, const struct fg_schema_enum *e,
                      const struct fg_pbwire_field *f, int *first)
{
	const uint8_t *p = f->value, *end = f->value + f->vlen;
	int wire = fg_schema_type_wire(type), rc;
	size_t size = wire == FG_PBWIRE_I64 ? 8 : 4;
	uint64_t raw;

	if (wire != FG_PBWIRE_VARINT && f->vlen % size != 0)
		return fail(r, FG_EINVAL, "packed field is not a whole number of elements");
	while (p < end) {
		if (wire != FG_PBWIRE_VARINT) {
			raw = le_bytes(p, size);
			p += size;
		} else if (fg_pbwire_read_varint(&p, end, &raw) < 0) {
			return fail(r, FG_EINVAL, "bad varint in a packed field");
		}
		if ((rc = put_sep(r, first)) < 0 || (rc = put_scalar(r, type, e, raw)) < 0)
			return rc;
	}
	return 0;
}

static int put_repeated(struct render *r, const struct fg_schema_field *fd, const struct view *v, unsigned depth)
{
	enum fg_schema_type type = fg_schema_field_type(fd);
	const struct fg_schema_enum *e = enum_of(r, fd);
	uint32_t number = fg_schema_field_number(fd);
	int want = fg_schema_type_wire(type), first = 1, rc;
	struct fg_pbwire_field f;
	struct iter it;

	if ((rc = put_char(r, '[')) < 0)
		return rc;
	iter_init(&it, v);
	while ((rc = iter_next(r, &it, &f)) > 0) {
		if (f.number != number)
			continue;
		if (f.wire_type == FG_PBWIRE_LEN && want != FG_PBWIRE_LEN)
			rc = put_packed(r, type, e, &f, &first);
		else if ((rc = put_sep(r, &first)) == 0)
			rc = put_value(r, fd, e, &f, depth);
		if (rc < 0)
			return rc;
	}
	return rc < 0 ? rc : put_char(r, ']');
}

/* A map key as a JSON object key: strings as they are, integers and bools
 * as their text (proto3 JSON mapping); an absent key is the default. */
static int put_key(struct render *r, const struct fg_schema_field *kf, const struct fg_pbwire_field *k)
{
	enum fg_schema_type type = fg_schema_field_type(kf);
	uint64_t raw = k ? raw_of(k) : 0;
	char buf[24];
	size_t n = 0;

	if (type == FG_SCHEMA_STRING)
		return k ? put_string(r, k->value, k->vlen) : put_lit(r, "\"\"");
	if (type == FG_SCHEMA_BOOL)
		return put_lit(r, raw ? "\"true\"" : "\"false\"");
	buf[n++] = '"';
	n += int_text(buf + n, type, raw);
	buf[n++] = '"';
	return put(r, buf, n);
}

/* The last key and value of entry <ev>, wire types checked.  Other fields
 * are skipped: parsers drop them from map entries. */
static int read_entry(struct render *r, const struct fg_schema_field *kf, const struct fg_schema_field *vf,
                      const struct view *ev, struct entry *en)
{
	struct fg_pbwire_field f;
	struct iter it;
	int rc;

	memset(en, 0, sizeof(*en));
	iter_init(&it, ev);
	while ((rc = iter_next(r, &it, &f)) > 0) {
		if (f.number != 1 && f.number != 2)
			continue;
		if (!wire_ok(f.number == 1 ? kf : vf, f.wire_type))
			return fail(r, FG_EINVAL, "wire type does not match the map entry's declared type");
		if (f.number == 1) {
			en->key = f;
			en->nkey++;
		} else {
			en->value = f;
			en->nvalue++;
		}
	}
	return rc;
}

/* A map entry's value: absent, the default; a message, the merge of its
 * occurrences. */
static int put_entry_value(struct render *r, const struct fg_schema_field *vf, const struct view *ev,
                           const struct entry *en, unsigned depth)
{
	enum fg_schema_type type = fg_schema_field_type(vf);
	struct view sub = { 0 };

	if (type == FG_SCHEMA_MESSAGE || type == FG_SCHEMA_GROUP) {
		if (en->nvalue == 1) {
			sub.p = en->value.value;
			sub.end = en->value.value + en->value.vlen;
		} else if (en->nvalue > 1) {
			sub.up = ev;
			sub.number = 2;
		}
		return put_message(r, fg_schema_field_message(vf), &sub, depth + 1);
	}
	if (en->nvalue)
		return put_value(r, vf, enum_of(r, vf), &en->value, depth);
	if (type == FG_SCHEMA_STRING || type == FG_SCHEMA_BYTES)
		return put_lit(r, "\"\"");
	return put_scalar(r, type, enum_of(r, vf), 0);
}

/* Map field <fd>'s entry record <rec>, a message one level below <depth>. */
static int put_entry(struct render *r, const struct fg_schema_field *fd, const struct fg_pbwire_field *rec,
                     unsigned depth)
{
	const struct fg_schema_field *kf = fg_schema_field_map_key(fd);
	const struct fg_schema_field *vf = fg_schema_field_map_value(fd);
	struct view ev = { .p = rec->value, .end = rec->value + rec->vlen };
	struct entry en;
	int rc;

	if (depth + 1 > FG_PBJSON_MAX_DEPTH)
		return fail(r, FG_ETOOBIG, "messages nested deeper than FG_PBJSON_MAX_DEPTH");
	if ((rc = read_entry(r, kf, vf, &ev, &en)) < 0 || (rc = put_key(r, kf, en.nkey ? &en.key : NULL)) < 0 ||
	    (rc = put_char(r, ':')) < 0)
		return rc;
	return put_entry_value(r, vf, &ev, &en, depth + 1);
}

static int put_map(struct render *r, const struct fg_schema_field *fd, const struct view *v, unsigned depth)
{
	uint32_t number = fg_schema_field_number(fd);
	struct fg_pbwire_field f;
	struct iter it;
	int first = 1, rc;

	if ((rc = put_char(r, '{')) < 0)
		return rc;
	iter_init(&it, v);
	while ((rc = iter_next(r, &it, &f)) > 0) {
		if (f.number != number)
			continue;
		if ((rc = put_sep(r, &first)) < 0 || (rc = put_entry(r, fd, &f, depth)) < 0)
			return rc;
	}
	return rc < 0 ? rc : put_char(r, '}');
}

/* A non-repeated message field: its one occurrence, or the merge of all. */
static int put_sub(struct render *r, const struct fg_schema_field *fd, const struct view *v,
                   const struct occ *o, unsigned depth)
{
	struct view sub = { 0 };

	if (o->count == 1) {
		sub.p = o->last.value;
		sub.end = o->last.value + o->last.vlen;
	} else {
		sub.up = v;
		sub.number = fg_schema_field_number(fd);
		sub.after = o->after;
	}
	return put_message(r, fg_schema_field_message(fd), &sub, depth + 1);
}

/* "name":value for field <fd> of <v>, unless a parser would find nothing. */
static int put_field(struct render *r, const struct fg_schema_field *fd, const struct view *v, unsigned depth,
                     int *first)
{
	enum fg_schema_type type = fg_schema_field_type(fd);
	unsigned flags = fg_schema_field_flags(fd);
	const char *name = fg_schema_field_name(fd);
	struct occ o;
	int rc;

	if ((rc = occurrences(r, fd, v, &o)) < 0 || o.count == 0)
		return rc;
	if ((rc = put_sep(r, first)) < 0 || (rc = put_string(r, name, strlen(name))) < 0 ||
	    (rc = put_char(r, ':')) < 0)
		return rc;
	if (flags & FG_SCHEMA_F_MAP)
		return put_map(r, fd, v, depth);
	if (flags & FG_SCHEMA_F_REPEATED)
		return put_repeated(r, fd, v, depth);
	if (type == FG_SCHEMA_MESSAGE || type == FG_SCHEMA_GROUP)
		return put_sub(r, fd, v, &o, depth);
	return put_value(r, fd, enum_of(r, fd), &o.last, depth);
}

/* ---- unknown fields ---- */

/* Insert <number> into the ascending, unique <a>[0 .. <*n>), keeping the
 * FG_PBJSON_MAX_UNKNOWN smallest; <*more> is set when one is left out. */
static void add_unknown(uint32_t *a, size_t *n, uint32_t number, int *more)
{
	size_t lo = 0, hi = *n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (a[mid] < number)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < *n && a[lo] == number)
		return;
	if (*n == FG_PBJSON_MAX_UNKNOWN) {
		*more = 1;
		if (lo == *n)
			return;
		(*n)--;
	}
	memmove(a + lo + 1, a + lo, (*n - lo) * sizeof(*a));
	a[lo] = number;
	(*n)++;
}

/* "_unknown":[numbers] for the records of <v> that <type> does not declare. */
static int put_unknown(struct render *r, const struct fg_schema_message *type, const struct view *v, int *first)
{
	struct fg_pbwire_field f;
	struct iter it;
	size_t n = 0, i, k;
	int more = 0, rc;
	char buf[24];

	iter_init(&it, v);
	while ((rc = iter_next(r, &it, &f)) > 0)
		if (!fg_schema_find_field_number(type, f.number))
			add_unknown(r->unknown, &n, f.number, &more);
	if (rc < 0 || (rc = put_sep(r, first)) < 0 || (rc = put_lit(r, "\"_unknown\":[")) < 0)
		return rc;
	for (i = 0; i < n; i++) {
		k = 0;
		if (i > 0)
			buf[k++] = ',';
		k += u64_text(buf + k, r->unknown[i]);
		if ((rc = put(r, buf, k)) < 0)
			return rc;
	}
	if ((rc = put_char(r, ']')) < 0)
		return rc;
	return more ? put_lit(r, ",\"_unknown_truncated\":true") : 0;
}

/* ---- well-known types ---- */

/* Day <days> since 1970-01-01 (0001-01-01 or later) as a proleptic
 * Gregorian date, by whole 400-, 100-, 4- and 1-year cycles from year 1. */
static void civil(int64_t days, unsigned *y, unsigned *m, unsigned *d)
{
	static const uint16_t before[13] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365 };
	uint64_t n = (uint64_t)(days + DAYS_TO_EPOCH);
	unsigned c400, c100, c4, c1, leap, i;

	c400 = (unsigned)(n / DAYS_400Y);
	n %= DAYS_400Y;
	c100 = (unsigned)(n / DAYS_100Y);
	c100 -= c100 == 4;              /* the last day of a 400-year cycle: the leap year 400 */
	n -= (uint64_t)c100 * DAYS_100Y;
	c4 = (unsigned)(n / DAYS_4Y);
	n %= DAYS_4Y;
	c1 = (unsigned)(n / DAYS_1Y);
	c1 -= c1 == 4;                  /* December 31 of a leap year */
	n -= (uint64_t)c1 * DAYS_1Y;
	*y = c400 * 400 + c100 * 100 + c4 * 4 + c1 + 1;
	leap = *y % 4 == 0 && (*y % 100 != 0 || *y % 400 == 0);
	for (i = 1; i < 12 && n >= before[i] + (i >= 2 ? leap : 0); i++)
		;
	*m = i;
	*d = (unsigned)(n - before[i - 1] - (i > 2 ? leap : 0)) + 1;
}

/* ".fff", ".ffffff" or ".fffffffff" for <nanos> (0 < nanos < 1e9), as few
 * groups of three as exact (proto3 JSON mapping), or nothing for 0, into
 * <buf> (11 bytes); returns the length. */
static size_t fraction(char *buf, int64_t nanos)
{
	if (nanos == 0)
		return 0;
	if (nanos % 1000000 == 0)
		return (size_t)snprintf(buf, 11, ".%03d", (int)(nanos / 1000000));
	if (nanos % 1000 == 0)
		return (size_t)snprintf(buf, 11, ".%06d", (int)(nanos / 1000));
	return (size_t)snprintf(buf, 11, ".%09d", (int)nanos);
}

/* 1 after writing the Timestamp as RFC 3339, 0 when out of its range. */
static int put_timestamp(struct render *r, int64_t secs, int64_t nanos)
{
	unsigned y, m, d, sod;
	int64_t days;
	char buf[48];
	size_t n;
	int rc;

	if (secs < TIMESTAMP_MIN || secs > TIMESTAMP_MAX || nanos < 0 || nanos >= NANOS)
		return 0;
	days = (secs - (((secs % DAY) + DAY) % DAY)) / DAY;
	sod = (unsigned)(secs - days * DAY);
	civil(days, &y, &m, &d);
	n = (size_t)snprintf(buf, sizeof(buf), "\"%04u-%02u-%02uT%02u:%02u:%02u", y, m, d, sod / 3600,
	                     sod / 60 % 60, sod % 60);
	n += fraction(buf + n, nanos);
	memcpy(buf + n, "Z\"", 2);
	rc = put(r, buf, n + 2);
	return rc < 0 ? rc : 1;
}

/* 1 after writing the Duration as "[-]S[.fff]s", 0 when out of its range
 * or when seconds and nanos disagree in sign (duration.proto). */
static int put_duration(struct render *r, int64_t secs, int64_t nanos)
{
	char buf[48];
	size_t n = 0;
	int rc;

	if (secs < -DURATION_MAX || secs > DURATION_MAX || nanos <= -NANOS || nanos >= NANOS ||
	    (secs > 0 && nanos < 0) || (secs < 0 && nanos > 0))
		return 0;
	buf[n++] = '"';
	if (secs < 0 || nanos < 0) {
		buf[n++] = '-';
		secs = -secs;
		nanos = -nanos;
	}
	n += u64_text(buf + n, (uint64_t)secs);
	n += fraction(buf + n, nanos);
	memcpy(buf + n, "s\"", 2);
	rc = put(r, buf, n + 2);
	return rc < 0 ? rc : 1;
}

/* Whether <type> has exactly Timestamp's and Duration's fields: int64
 * seconds = 1, int32 nanos = 2 (a hand-made set could say otherwise). */
static int seconds_nanos(const struct fg_schema_message *type)
{
	const struct fg_schema_field *s = fg_schema_find_field_number(type, 1);
	const struct fg_schema_field *ns = fg_schema_find_field_number(type, 2);

	return fg_schema_message_nfields(type) == 2 && s && ns && fg_schema_field_type(s) == FG_SCHEMA_INT64 &&
	       fg_schema_field_type(ns) == FG_SCHEMA_INT32 && fg_schema_field_flags(s) == 0 &&
	       fg_schema_field_flags(ns) == 0;
}

/* 1 after writing <v> as the string of a Timestamp or Duration, 0 when
 * <type> is neither or the value cannot be one (a plain object then). */
static int put_wkt(struct render *r, const struct fg_schema_message *type, const struct view *v)
{
	const char *name = fg_schema_message_name(type);
	int64_t secs = 0, nanos = 0;
	struct fg_pbwire_field f;
	struct iter it;
	int timestamp, rc;

	if (strncmp(name, WKT_PREFIX, WKT_PREFIX_LEN) != 0)
		return 0;
	timestamp = strcmp(name + WKT_PREFIX_LEN, "Timestamp") == 0;
	if ((!timestamp && strcmp(name + WKT_PREFIX_LEN, "Duration") != 0) || !seconds_nanos(type))
		return 0;
	/* last one wins; the first pass checked both are varints */
	iter_init(&it, v);
	while ((rc = iter_next(r, &it, &f)) > 0) {
		if (f.number == 1)
			secs = (int64_t)f.varint;
		else
			nanos = (int32_t)(uint32_t)f.varint;
	}
	if (rc < 0)
		return rc;
	return timestamp ? put_timestamp(r, secs, nanos) : put_duration(r, secs, nanos);
}

/* ---- messages ---- */

static int put_message(struct render *r, const struct fg_schema_message *type, const struct view *v,
                       unsigned depth)
{
	const struct fg_schema_field *fd;
	size_t i, n = fg_schema_message_nfields(type);
	struct scan s;
	int first = 1, rc;

	if (depth > FG_PBJSON_MAX_DEPTH)
		return fail(r, FG_ETOOBIG, "messages nested deeper than FG_PBJSON_MAX_DEPTH");
	if ((rc = scan(r, type, v, &s)) < 0)
		return rc;
	if (s.nunknown == 0 && (rc = put_wkt(r, type, v)) != 0)
		return rc < 0 ? rc : 0;
	if ((rc = put_char(r, '{')) < 0)
		return rc;
	for (i = 0; i < n; i++) {
		fd = fg_schema_message_field_at(type, i);
		if (maybe_seen(&s, fg_schema_field_number(fd)) && (rc = put_field(r, fd, v, depth, &first)) < 0)
			return rc;
	}
	if (s.nunknown > 0 && (rc = put_unknown(r, type, v, &first)) < 0)
		return rc;
	return put_char(r, '}');
}

int fg_pbjson_write(struct fg_bufq *out, const struct fg_schema *schema,
                    const struct fg_schema_message *type, const uint8_t *msg, size_t len,
                    const char **why)
{
	struct view v = { .p = msg, .end = msg ? msg + len : NULL };
	size_t start = fg_bufq_len(out);
	struct render r;
	int rc;

	r.out = out;
	r.schema = schema;
	r.why = NULL;
	if (!type || (!msg && len > 0))
		rc = fail(&r, FG_EINVAL, "no message type or no message");
	else
		rc = put_message(&r, type, &v, 0);
	if (rc < 0) {
		fg_bufq_truncate(out, start);
		if (why)
			*why = r.why;
	}
	return rc;
}
