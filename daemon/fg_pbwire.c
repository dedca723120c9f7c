/* fg_pbwire.c - wire-level protobuf reader and editor; see fg_pbwire.h. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_pbwire.h"

/*
 * Reserved up front beyond the input length: the output is rarely longer
 * than the input (only coarsened varints and the lengths around them can
 * grow), so one realloc per message is the usual cost.
 */
#define EDIT_SLACK 64

/*
 * A floating value is kept when |v / p| reaches these.  Below them the
 * quotient keeps enough fractional bits (53 - 48 for double, 24 - 21 for
 * float, after the result is rounded to the field's type) that coarsening
 * the result again finds the same multiple: the edit is idempotent.  Above
 * them the value is already coarser than <p> can express.
 */
#define DOUBLE_QUOTIENT_MAX 0x1p48
#define FLOAT_QUOTIENT_MAX 0x1p21

/* Doubles from here up round to infinity when stored as float. */
#define FLOAT_OVERFLOW 0x1.ffffffp127

/* A tag is number << 3 | wire type (encoding.md, "Message Structure"). */
#define TAG_TYPE_BITS 3
#define TAG_TYPE_MASK 7u

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* State of one fg_pbwire_edit() call, shared by every nesting level. */
struct edit {
	struct fg_bufq *out;    /* positions in it count from its head (fg_bufq.h) */
	uint64_t *stats;
	size_t nstats;
	const struct fg_pbwire_ctx *ctx;        /* REPLACE's values; NULL: none */
	const char *why;        /* static reason of the FG_EINVAL being returned */
};

/* How each COARSEN scalar kind sits on the wire and in its 64 raw bits. */
enum {
	K_VALID = 1,            /* a kind this file knows */
	K_FLOAT = 2,            /* IEEE double or float */
	K_SIGNED = 4,           /* two's complement (or zigzag) */
	K_32 = 8,               /* only the low 32 bits count, as protobuf parsers truncate */
	K_ZIGZAG = 16,          /* sint32/sint64 */
};

struct kind {
	uint8_t wire;           /* enum fg_pbwire_type of one unpacked value */
	uint8_t flags;          /* K_* */
};

static const struct kind kinds[] = {
	[FG_PBWIRE_S_DOUBLE] = { FG_PBWIRE_I64, K_VALID | K_FLOAT },
	[FG_PBWIRE_S_FLOAT] = { FG_PBWIRE_I32, K_VALID | K_FLOAT | K_32 },
	[FG_PBWIRE_S_INT32] = { FG_PBWIRE_VARINT, K_VALID | K_SIGNED | K_32 },
	[FG_PBWIRE_S_INT64] = { FG_PBWIRE_VARINT, K_VALID | K_SIGNED },
	[FG_PBWIRE_S_SINT32] = { FG_PBWIRE_VARINT, K_VALID | K_SIGNED | K_32 | K_ZIGZAG },
	[FG_PBWIRE_S_SINT64] = { FG_PBWIRE_VARINT, K_VALID | K_SIGNED | K_ZIGZAG },
	[FG_PBWIRE_S_UINT32] = { FG_PBWIRE_VARINT, K_VALID | K_32 },
	[FG_PBWIRE_S_UINT64] = { FG_PBWIRE_VARINT, K_VALID },
	[FG_PBWIRE_S_SFIXED32] = { FG_PBWIRE_I32, K_VALID | K_SIGNED | K_32 },
	[FG_PBWIRE_S_SFIXED64] = { FG_PBWIRE_I64, K_VALID | K_SIGNED },
	[FG_PBWIRE_S_FIXED32] = { FG_PBWIRE_I32, K_VALID | K_32 },
	[FG_PBWIRE_S_FIXED64] = { FG_PBWIRE_I64, K_VALID },
};

static const struct kind *kind_of(uint8_t scalar)
{
	if (scalar >= NELEM(kinds) || !(kinds[scalar].flags & K_VALID))
		return NULL;
	return &kinds[scalar];
}

/* ---- primitives ---- */

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v, const char **why)
{
	const uint8_t *s = *p;
	uint64_t x = 0;
	size_t i;

	for (i = 0; i < FG_PBWIRE_VARINT_MAX && i < (size_t)(end - s); i++) {
		x |= (uint64_t)(s[i] & 0x7f) << (7 * i);
		if (s[i] & 0x80)
			continue;
		/* the 10th byte carries bit 63 only; more is a value above 64 bits */
		if (i == FG_PBWIRE_VARINT_MAX - 1 && s[i] > 1)
			break;
		*p = s + i + 1;
		*v = x;
		return 0;
	}
	if (i < FG_PBWIRE_VARINT_MAX && i == (size_t)(end - s))
		*why = "truncated varint";
	else
		*why = "varint longer than 64 bits";
	return FG_EINVAL;
}

int fg_pbwire_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	const char *why;

	return get_varint(p, end, v, &why);
}

size_t fg_pbwire_write_varint(uint8_t *dst, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		dst[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	dst[n++] = (uint8_t)v;
	return n;
}

int fg_pbwire_append_varint(struct fg_bufq *out, uint32_t field, uint64_t v)
{
	uint8_t buf[2 * FG_PBWIRE_VARINT_MAX];
	size_t n = fg_pbwire_write_varint(buf, (uint64_t)field << 3 | FG_PBWIRE_VARINT);

	n += fg_pbwire_write_varint(buf + n, v);
	return fg_bufq_append(out, buf, n);
}

int fg_pbwire_append_len_head(struct fg_bufq *out, uint32_t field, size_t len)
{
	uint8_t buf[2 * FG_PBWIRE_VARINT_MAX];
	size_t n = fg_pbwire_write_varint(buf, (uint64_t)field << 3 | FG_PBWIRE_LEN);

	n += fg_pbwire_write_varint(buf + n, len);
	return fg_bufq_append(out, buf, n);
}

int fg_pbwire_append_len(struct fg_bufq *out, uint32_t field, const void *p, size_t len)
{
	size_t was = fg_bufq_len(out);

	if (fg_pbwire_append_len_head(out, field, len) < 0 || fg_bufq_append(out, p, len) < 0) {
		fg_bufq_truncate(out, was);
		return FG_ENOMEM;
	}
	return 0;
}

int fg_pbwire_append_varint_at(struct fg_bufq *out, const uint32_t *path, size_t depth, uint64_t v)
{
	size_t whole[FG_PBWIRE_MAX_DEPTH];  /* bytes of field path[i], its tag included */
	size_t was = fg_bufq_len(out), i;

	if (depth == 0 || depth > FG_PBWIRE_MAX_DEPTH)
		return FG_EINVAL;
	whole[depth - 1] = fg_pbwire_varint_size((uint64_t)path[depth - 1] << 3) + fg_pbwire_varint_size(v);
	for (i = depth - 1; i-- > 0;)
		whole[i] = fg_pbwire_varint_size((uint64_t)path[i] << 3) + fg_pbwire_varint_size(whole[i + 1]) +
		           whole[i + 1];
	for (i = 0; i + 1 < depth; i++)
		if (fg_pbwire_append_len_head(out, path[i], whole[i + 1]) < 0)
			goto fail;
	if (fg_pbwire_append_varint(out, path[depth - 1], v) < 0)
		goto fail;
	return 0;

fail:
	fg_bufq_truncate(out, was);
	return FG_ENOMEM;
}

size_t fg_pbwire_varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static int get_tag(const uint8_t **p, const uint8_t *end, uint32_t *number, uint8_t *wire_type,
                   const char **why)
{
	const uint8_t *s = *p;
	uint64_t t;

	if (get_varint(&s, end, &t, why) < 0)
		return FG_EINVAL;
	/* protobuf parsers read tags as uint32; a longer one is another parser's field */
	if (t > UINT32_MAX)
		*why = "tag above 32 bits";
	else if ((t & TAG_TYPE_MASK) > FG_PBWIRE_I32)
		*why = "wire type 6 or 7";
	else if ((t >> TAG_TYPE_BITS) == 0)
		*why = "field number 0";
	else {
		*number = (uint32_t)(t >> TAG_TYPE_BITS);
		*wire_type = (uint8_t)(t & TAG_TYPE_MASK);
		*p = s;
		return 0;
	}
	return FG_EINVAL;
}

int fg_pbwire_read_tag(const uint8_t **p, const uint8_t *end, uint32_t *number,
                       uint8_t *wire_type)
{
	const char *why;

	return get_tag(p, end, number, wire_type, &why);
}

/* Skip a value of any wire type but the group ones. */
static int skip_plain(const uint8_t **p, const uint8_t *end, uint8_t wire_type, const char **why)
{
	const uint8_t *s = *p;
	uint64_t n;

	switch (wire_type) {
	case FG_PBWIRE_VARINT:
		return get_varint(p, end, &n, why);
	case FG_PBWIRE_I64:
		n = 8;
		break;
	case FG_PBWIRE_I32:
		n = 4;
		break;
	case FG_PBWIRE_LEN:
		if (get_varint(&s, end, &n, why) < 0)
			return FG_EINVAL;
		break;
	case FG_PBWIRE_EGROUP:
		*why = "end-group tag without a start-group";
		return FG_EINVAL;
	default:
		*why = "wire type 6 or 7";
		return FG_EINVAL;
	}
	if (n > (uint64_t)(end - s)) {
		*why = wire_type == FG_PBWIRE_LEN ? "length past the end of the message"
		                                  : "truncated fixed-width value";
		return FG_EINVAL;
	}
	*p = s + n;
	return 0;
}

/*
 * Skip a group's body and end tag, <*p> being just after the start tag of
 * field <number>; <*body_end> gets where the end tag starts.  A fixed
 * stack of open field numbers instead of recursion: nesting is chosen by
 * the sender, the C stack is ours.
 */
static int skip_group(const uint8_t **p, const uint8_t *end, uint32_t number,
                      const uint8_t **body_end, const char **why)
{
	uint32_t open[FG_PBWIRE_MAX_DEPTH];
	const uint8_t *s = *p, *t = s;
	size_t depth = 0;
	uint32_t num;
	uint8_t wt;

	open[depth++] = number;
	while (depth > 0) {
		t = s;
		if (s == end) {
			*why = "group without its end tag";
			return FG_EINVAL;
		}
		if (get_tag(&s, end, &num, &wt, why) < 0)
			return FG_EINVAL;
		if (wt == FG_PBWIRE_SGROUP) {
			if (depth == FG_PBWIRE_MAX_DEPTH) {
				*why = "groups nested too deep";
				return FG_EINVAL;
			}
			open[depth++] = num;
		} else if (wt == FG_PBWIRE_EGROUP) {
			if (num != open[--depth]) {
				*why = "end-group tag of another field";
				return FG_EINVAL;
			}
		} else if (skip_plain(&s, end, wt, why) < 0)
			return FG_EINVAL;
	}
	*body_end = t;
	*p = s;
	return 0;
}

static int skip_value(const uint8_t **p, const uint8_t *end, uint32_t number,
                      uint8_t wire_type, const char **why)
{
	const uint8_t *body_end;

	if (wire_type == FG_PBWIRE_SGROUP)
		return skip_group(p, end, number, &body_end, why);
	return skip_plain(p, end, wire_type, why);
}

int fg_pbwire_skip_value(const uint8_t **p, const uint8_t *end, uint32_t number,
                         uint8_t wire_type)
{
	const char *why;

	return skip_value(p, end, number, wire_type, &why);
}

/* Read the value part of <f> (its tag is read), leaving <*p> after it. */
static int get_value(const uint8_t **p, const uint8_t *end, struct fg_pbwire_field *f,
                     const char **why)
{
	const uint8_t *s = *p, *body_end;

	f->varint = 0;
	switch (f->wire_type) {
	case FG_PBWIRE_VARINT:
		if (get_varint(&s, end, &f->varint, why) < 0)
			return FG_EINVAL;
		break;
	case FG_PBWIRE_LEN:
		if (get_varint(&s, end, &f->varint, why) < 0)
			return FG_EINVAL;
		if (f->varint > (uint64_t)(end - s)) {
			*why = "length past the end of the message";
			return FG_EINVAL;
		}
		f->value = s;
		s += f->varint;
		break;
	case FG_PBWIRE_SGROUP:
		if (skip_group(&s, end, f->number, &body_end, why) < 0)
			return FG_EINVAL;
		f->vlen = (size_t)(body_end - f->value);
		f->end = *p = s;
		return 0;
	default:
		if (skip_plain(&s, end, f->wire_type, why) < 0)
			return FG_EINVAL;
		break;
	}
	f->vlen = (size_t)(s - f->value);
	f->end = *p = s;
	return 0;
}

static int get_field(const uint8_t **p, const uint8_t *end, struct fg_pbwire_field *f,
                     const char **why)
{
	const uint8_t *s = *p;

	f->tag = s;
	if (get_tag(&s, end, &f->number, &f->wire_type, why) < 0)
		return FG_EINVAL;
	f->tag_len = (uint8_t)(s - f->tag);
	f->value = s;
	if (get_value(&s, end, f, why) < 0)
		return FG_EINVAL;
	*p = s;
	return 0;
}

/*
 * get_field() for the common case, inlined into the editor's loop: a
 * one-byte tag of a non-group wire type, a varint value of up to nine
 * bytes that ends in time, a fixed-width value or a length of one or two
 * bytes that stays inside <end>.  Anything else (long tags and lengths,
 * groups, every error) goes to get_field(), which validates it and names
 * what is wrong, so both paths accept and reject the same input.
 */
static inline __attribute__((always_inline))
int next_field(const uint8_t **p, const uint8_t *end, struct fg_pbwire_field *f, const char **why)
{
	const uint8_t *s = *p, *v;
	size_t room, n, i;
	uint8_t t;

	if (__builtin_expect(s >= end || (t = s[0]) >= 0x80 || t < (1u << TAG_TYPE_BITS), 0))
		return get_field(p, end, f, why);
	v = s + 1;
	room = (size_t)(end - v);
	f->tag = s;
	f->tag_len = 1;
	f->number = t >> TAG_TYPE_BITS;
	f->wire_type = t & TAG_TYPE_MASK;
	f->value = v;
	f->varint = 0;
	switch (f->wire_type) {
	case FG_PBWIRE_VARINT:
		for (i = 0; i < room && i < FG_PBWIRE_VARINT_MAX - 1; i++)
			if (v[i] < 0x80)
				break;
		if (i == room || i == FG_PBWIRE_VARINT_MAX - 1)
			return get_field(p, end, f, why);
		for (f->varint = v[i], n = i; n-- > 0;)
			f->varint = f->varint << 7 | (v[n] & 0x7f);
		f->vlen = i + 1;
		break;
	case FG_PBWIRE_I64:
	case FG_PBWIRE_I32:
		f->vlen = f->wire_type == FG_PBWIRE_I64 ? 8 : 4;
		if (f->vlen > room)
			return get_field(p, end, f, why);
		break;
	case FG_PBWIRE_LEN:
		if (room >= 1 && v[0] < 0x80) {
			n = v[0];
			f->value = v + 1;
		} else if (room >= 2 && v[1] < 0x80) {
			n = (size_t)(v[0] & 0x7f) | (size_t)v[1] << 7;
			f->value = v + 2;
		} else
			return get_field(p, end, f, why);
		if (n > (size_t)(end - f->value))
			return get_field(p, end, f, why);
		f->varint = n;
		f->vlen = n;
		break;
	default:
		return get_field(p, end, f, why);
	}
	f->end = *p = f->value + f->vlen;
	return 0;
}

int fg_pbwire_next_field(const uint8_t **p, const uint8_t *end, struct fg_pbwire_field *f)
{
	const char *why;

	return next_field(p, end, f, &why);
}

/* ---- output ---- */

/*
 * The editor's positions in <out> count from its head, not from its
 * memory: a reserve may slide the bytes to the front (the caller consumed
 * some) or move them to new memory, and neither changes a position.
 */
static inline uint8_t *out_at(struct fg_bufq *out, size_t pos)
{
	return fg_bufq_tail(out) - fg_bufq_len(out) + pos;
}

/* Make <out> <len> bytes long: longer only by bytes already written in
 * its room, shorter by dropping its tail. */
static inline void out_set_len(struct fg_bufq *out, size_t len)
{
	if (len >= fg_bufq_len(out))
		fg_bufq_commit(out, len - fg_bufq_len(out));
	else
		fg_bufq_truncate(out, len);
}

/* fg_bufq_reserve() with the room checked inline: the editor reserves a
 * few bytes per field it touches, and the call is rarely needed. */
static inline int out_reserve(struct fg_bufq *out, size_t n)
{
	return n <= fg_bufq_room(out) ? 0 : fg_bufq_reserve(out, n);
}

static inline int buf_append(struct fg_bufq *b, const uint8_t *src, size_t n)
{
	int rv;

	if ((rv = out_reserve(b, n)) < 0)
		return rv;
	if (n > 0)
		memcpy(fg_bufq_tail(b), src, n);
	fg_bufq_commit(b, n);
	return 0;
}

/*
 * Start a LEN field in <out> by copying its original tag and length bytes:
 * if the content comes out unchanged they are already right, non-minimal
 * or not.  <*at> gets the offset of the length, <*body> of the content.
 */
static int open_len(struct fg_bufq *out, const struct fg_pbwire_field *f, size_t *at,
                    size_t *body)
{
	int rv;

	if ((rv = buf_append(out, f->tag, (size_t)(f->value - f->tag))) < 0)
		return rv;
	*body = fg_bufq_len(out);
	*at = *body - (size_t)(f->value - f->tag - f->tag_len);
	return 0;
}

/* Rewrite the length at <at> for the content [<body>, len) of <out>, which
 * changed, as a minimal varint, moving the content if its size differs. */
static int close_len(struct fg_bufq *out, size_t at, size_t body)
{
	size_t n = fg_bufq_len(out) - body, need = fg_pbwire_varint_size(n), have = body - at;
	int rv;

	if (need > have && (rv = out_reserve(out, need - have)) < 0)
		return rv;
	if (need != have)
		memmove(out_at(out, at + need), out_at(out, body), n);
	fg_pbwire_write_varint(out_at(out, at), n);
	out_set_len(out, at + need + n);
	return 0;
}

/* ---- coarsening ---- */

static int64_t s64(uint64_t u)
{
	return u <= INT64_MAX ? (int64_t)u : -(int64_t)(UINT64_MAX - u) - 1;
}

static uint64_t load_le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | p[n];
	return v;
}

static size_t store_le(uint8_t *p, uint64_t v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
	return n;
}

/* The integer value of a signed kind from its raw bits (two's complement). */
static int64_t int_decode(const struct kind *k, uint64_t raw)
{
	if (k->flags & K_32)
		raw = (uint32_t)raw;
	if (k->flags & K_ZIGZAG)
		return s64((raw >> 1) ^ (0 - (raw & 1)));
	if (k->flags & K_32)
		raw = (raw ^ UINT64_C(0x80000000)) - UINT64_C(0x80000000);
	return s64(raw);
}

/* The raw bits of a signed value; int32 negatives stay sign-extended to
 * 64 bits as protobuf encodes them, fixed-width stores keep the low bytes. */
static uint64_t int_encode(const struct kind *k, int64_t v)
{
	uint64_t u = (uint64_t)v;

	if (k->flags & K_ZIGZAG)
		u = (u << 1) ^ (v < 0 ? UINT64_MAX : 0);
	return u;
}

/* <m> to the nearest multiple of <step>, halves up, never above <lim>
 * (then down: rounding must not wrap a value to the other end). */
static uint64_t round_mag(uint64_t m, uint64_t step, uint64_t lim)
{
	uint64_t rem = m % step, down = m - rem;

	if (rem >= step - rem && lim - down >= step)
		return down + step;
	return down;
}

/* The step of <p> for integer kinds, 0 when it cannot change an integer. */
static uint64_t int_step(double p)
{
	if (!isfinite(p) || !(p >= 1.5))
		return 0;
	if (p >= 0x1p64)
		return UINT64_MAX;
	return (uint64_t)(p + 0.5);
}

/* Rounding works on the magnitude: halfway away from zero falls out of
 * rounding |v| halves up, and the type's range is asymmetric only there. */
static int coarsen_int(const struct kind *k, double precision, uint64_t *raw)
{
	uint64_t step = int_step(precision), top = k->flags & K_32 ? UINT32_MAX : UINT64_MAX;
	uint64_t u, m;
	int64_t v, w;

	if (step == 0)
		return 0;
	if (!(k->flags & K_SIGNED)) {
		u = *raw & top;
		if ((m = round_mag(u, step, top)) == u)
			return 0;
		*raw = m;
		return 1;
	}
	v = int_decode(k, *raw);
	if (v >= 0)
		w = (int64_t)round_mag((uint64_t)v, step, top >> 1);
	else
		w = s64(0 - round_mag(0 - (uint64_t)v, step, (top >> 1) + 1));
	if (w == v)
		return 0;
	*raw = int_encode(k, w);
	return 1;
}

/* round(v / p) * p in double for a double or float field; see fg_pbwire.h. */
static double coarsen_fp(double v, double p, int is_float)
{
	double qmax = is_float ? FLOAT_QUOTIENT_MAX : DOUBLE_QUOTIENT_MAX;
	double top = is_float ? FLOAT_OVERFLOW : HUGE_VAL;
	double q, r;

	if (!isfinite(v) || !isfinite(p) || !(p >= (is_float ? FLT_MIN : DBL_MIN)))
		return v;
	q = v / p;
	if (!(fabs(q) < qmax))
		return v;
	r = round(q) * p;
	if (fabs(r) >= top)
		r = trunc(q) * p;       /* away from zero overflowed the type */
	return fabs(r) >= top ? v : r;
}

/* Coarsen the raw bits of one value of kind <k>: 1 if the value changed. */
static int coarsen_raw(const struct kind *k, double precision, uint64_t *raw)
{
	uint64_t bits;
	uint32_t b32;
	double d;
	float f;

	if (!(k->flags & K_FLOAT))
		return coarsen_int(k, precision, raw);
	if (k->flags & K_32) {
		b32 = (uint32_t)*raw;
		memcpy(&f, &b32, sizeof(f));
		f = (float)coarsen_fp(f, precision, 1);
		memcpy(&b32, &f, sizeof(f));
		bits = b32;
	} else {
		memcpy(&d, raw, sizeof(d));
		d = coarsen_fp(d, precision, 0);
		memcpy(&bits, &d, sizeof(d));
	}
	if (bits == *raw)
		return 0;
	*raw = bits;
	return 1;
}

/* ---- the editor ---- */

static int fail(struct edit *e, const char *why)
{
	e->why = why;
	return FG_EINVAL;
}

static inline void count(struct edit *e, uint32_t stat)
{
	if (stat < e->nstats)
		e->stats[stat]++;
}

/* The index of the first rule of <m> whose number is not below <number>. */
static size_t lower_bound(const struct fg_pbwire_msg *m, uint32_t number)
{
	size_t lo = 0, hi = m->nrules, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (m->rules[mid].number < number)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * The rule for field <number>, from <*cursor>, the lower bound of the
 * previous field's number in <m>'s sorted rules.  Encoders write fields
 * in number order, so the bound only moves forward and one message costs
 * one merge-walk over its rules; a field that goes back (any order is
 * valid protobuf) costs a binary search.
 */
static inline const struct fg_pbwire_rule *seek_rule(const struct fg_pbwire_msg *m, size_t *cursor,
                                                     uint32_t number)
{
	const struct fg_pbwire_rule *r = m->rules;
	size_t i = *cursor;

	if (i > 0 && r[i - 1].number >= number)
		i = lower_bound(m, number);
	else
		while (i < m->nrules && r[i].number < number)
			i++;
	*cursor = i;
	return i < m->nrules && r[i].number == number ? &r[i] : NULL;
}

/* The rule for field <number> of <m>: the index when it covers the number. */
static inline const struct fg_pbwire_rule *rule_for(const struct fg_pbwire_msg *m, size_t *cursor,
                                                    uint32_t number)
{
	uint8_t k;

	if (m->indexed && number < FG_PBWIRE_INDEX_MAX) {
		k = m->index[number];
		return k ? &m->rules[k - 1] : NULL;
	}
	return seek_rule(m, cursor, number);
}

void fg_pbwire_msg_index(struct fg_pbwire_msg *m)
{
	size_t i;

	memset(m->index, 0, sizeof(m->index));
	/* sorted: the rules below the index's end come first, at most 63 of them */
	for (i = 0; i < m->nrules && m->rules[i].number < FG_PBWIRE_INDEX_MAX; i++)
		m->index[m->rules[i].number] = (uint8_t)(i + 1);
	m->indexed = 1;
}

/* Append one coarsened value: its original bytes <orig> when the value
 * stays, else the new encoding, so unchanged input stays byte-identical. */
static int put_coarse(struct edit *e, const struct fg_pbwire_rule *r, const struct kind *k,
                      uint64_t raw, const uint8_t *orig, size_t olen, int *changed)
{
	uint8_t tmp[FG_PBWIRE_VARINT_MAX];
	size_t n;

	*changed = coarsen_raw(k, r->precision, &raw);
	if (!*changed)
		return buf_append(e->out, orig, olen);
	count(e, r->stat);
	if (k->wire == FG_PBWIRE_VARINT)
		n = fg_pbwire_write_varint(tmp, raw);
	else
		n = store_le(tmp, raw, olen);
	return buf_append(e->out, tmp, n);
}

static size_t fixed_width(uint8_t wire_type)
{
	return wire_type == FG_PBWIRE_I64 ? 8 : wire_type == FG_PBWIRE_I32 ? 4 : 0;
}

/* Each element of a packed repeated scalar, one LEN value. */
static int coarsen_packed(struct edit *e, const struct fg_pbwire_field *f,
                          const struct fg_pbwire_rule *r, const struct kind *k, int *changed)
{
	const uint8_t *p = f->value, *end = p + f->vlen, *s;
	size_t at, body, w = fixed_width(k->wire);
	uint64_t raw;
	int rv, ch;

	if (w != 0 && f->vlen % w != 0)
		return fail(e, "packed field is not a whole number of elements");
	if ((rv = open_len(e->out, f, &at, &body)) < 0)
		return rv;
	while (p < end) {
		s = p;
		if (w != 0) {
			raw = load_le(p, w);
			p += w;
		} else if (get_varint(&p, end, &raw, &e->why) < 0)
			return FG_EINVAL;
		if ((rv = put_coarse(e, r, k, raw, s, (size_t)(p - s), &ch)) < 0)
			return rv;
		*changed |= ch;
	}
	return *changed ? close_len(e->out, at, body) : 0;
}

static int coarsen_field(struct edit *e, const struct fg_pbwire_field *f,
                         const struct fg_pbwire_rule *r, int *changed)
{
	const struct kind *k = kind_of(r->scalar);
	uint64_t raw;
	int rv;

	if (k == NULL)
		return fail(e, "program: COARSEN without a scalar kind");
	if (f->wire_type == FG_PBWIRE_LEN)
		return coarsen_packed(e, f, r, k, changed);
	if (f->wire_type != k->wire)
		return fail(e, "wire type does not match the rule's scalar");
	if ((rv = buf_append(e->out, f->tag, f->tag_len)) < 0)
		return rv;
	raw = k->wire == FG_PBWIRE_VARINT ? f->varint : load_le(f->value, f->vlen);
	return put_coarse(e, r, k, raw, f->value, f->vlen, changed);
}

/* KEEP with a scalar kind: the value, or every packed element, must be of
 * that kind's wire type, so an allow-list cannot pass a smuggled field. */
static int keep_field(struct edit *e, const struct fg_pbwire_field *f,
                      const struct fg_pbwire_rule *r)
{
	const struct kind *k = kind_of(r->scalar);
	const uint8_t *p = f->value, *end = p + f->vlen;
	size_t w;
	uint64_t v;

	if (k == NULL)
		return fail(e, "program: KEEP with an unknown scalar kind");
	if (f->wire_type == FG_PBWIRE_LEN) {
		w = fixed_width(k->wire);
		if (w != 0 && f->vlen % w != 0)
			return fail(e, "packed field is not a whole number of elements");
		while (w == 0 && p < end)
			if (get_varint(&p, end, &v, &e->why) < 0)
				return FG_EINVAL;
	} else if (f->wire_type != k->wire)
		return fail(e, "wire type does not match the rule's scalar");
	return buf_append(e->out, f->tag, (size_t)(f->end - f->tag));
}

static int edit_msg(struct edit *e, const uint8_t *in, size_t len,
                    const struct fg_pbwire_msg *prog, unsigned depth, int *changed);

/*
 * Edit a sub-message.  The room left for its new length is a guess, the
 * size the previous sub-message of the same parent needed (<*guess>, 0 at
 * first: the original length's size), so a run of repeated messages that
 * all shrink, or all stay, writes each one's content where it belongs and
 * moves nothing; a wrong guess costs one memmove of the content.  The
 * bytes written do not depend on the guess.
 */
static int recurse_field(struct edit *e, const struct fg_pbwire_field *f,
                         const struct fg_pbwire_rule *r, unsigned depth, uint8_t *guess, int *changed)
{
	size_t orig = (size_t)(f->value - f->tag) - f->tag_len, hole = *guess ? *guess : orig;
	size_t at, body, n, need;
	struct fg_bufq *out = e->out;
	int rv;

	if (f->wire_type != FG_PBWIRE_LEN)
		return fail(e, "a field the policy edits inside is not length-delimited (not a message)");
	if (depth >= FG_PBWIRE_MAX_DEPTH)
		return fail(e, "messages nested too deep");
	/* the tag, then the hole, whose bytes are written once the content is in */
	if ((rv = out_reserve(out, (size_t)f->tag_len + hole)) < 0)
		return rv;
	memcpy(fg_bufq_tail(out), f->tag, f->tag_len);
	at = fg_bufq_len(out) + f->tag_len;
	body = at + hole;
	fg_bufq_commit(out, (size_t)f->tag_len + hole);
	if ((rv = edit_msg(e, f->value, f->vlen, r->sub, depth + 1, changed)) < 0)
		return rv;
	n = fg_bufq_len(out) - body;
	/* unchanged content keeps its original length bytes, minimal or not */
	need = *changed ? fg_pbwire_varint_size(n) : orig;
	if (need > hole && (rv = out_reserve(out, need - hole)) < 0)
		return rv;
	if (need != hole)
		memmove(out_at(out, at + need), out_at(out, body), n);
	if (*changed) {
		fg_pbwire_write_varint(out_at(out, at), n);
		count(e, r->stat);
	} else
		memcpy(out_at(out, at), f->tag + f->tag_len, orig);
	out_set_len(out, at + need + n);
	*guess = (uint8_t)need;
	return 0;
}

static int last_field(const uint8_t *in, size_t len, const uint32_t *path, size_t depth,
                      struct fg_pbwire_field *best, int *found, const char **why);

static int str_key_in(struct edit *e, const struct fg_pbwire_keys *keys,
                      const struct fg_pbwire_field *key, int *hit)
{
	const uint8_t *s = NULL;
	size_t n = 0, i, klen;

	if (key != NULL) {
		if (key->wire_type != FG_PBWIRE_LEN)
			return fail(e, "map key is not a string");
		s = key->value;
		n = key->vlen;
	}
	for (i = 0; i < keys->n && !*hit; i++) {
		klen = keys->str_len ? keys->str_len[i] : strlen(keys->str[i]);
		*hit = klen == n && (n == 0 || memcmp(keys->str[i], s, n) == 0);
	}
	return 0;
}

/* Integer keys: decoded by the rule's scalar kind, S_NONE being a varint
 * read as int64 (right for int32, int64, uint32, uint64 and bool). */
static int num_key_in(struct edit *e, const struct fg_pbwire_rule *r,
                      const struct fg_pbwire_field *key, int *hit)
{
	static const struct kind plain = { FG_PBWIRE_VARINT, K_VALID | K_SIGNED };
	const struct kind *k = r->scalar == FG_PBWIRE_S_NONE ? &plain : kind_of(r->scalar);
	uint64_t raw;
	int64_t v = 0;
	size_t i;

	if (k == NULL || (k->flags & K_FLOAT))
		return fail(e, "program: DROP_KEYS with a non-integer key kind");
	if (key != NULL) {
		if (key->wire_type != k->wire)
			return fail(e, "map key wire type does not match the rule");
		raw = k->wire == FG_PBWIRE_VARINT ? key->varint : load_le(key->value, key->vlen);
		if (k->flags & K_SIGNED)
			v = int_decode(k, raw);
		else
			v = s64(k->flags & K_32 ? (uint32_t)raw : raw);
	}
	for (i = 0; i < r->keys->n && !*hit; i++)
		*hit = r->keys->num[i] == v;
	return 0;
}

static int drop_keys_field(struct edit *e, const struct fg_pbwire_field *f,
                           const struct fg_pbwire_rule *r, unsigned depth, int *changed)
{
	static const uint32_t key_number = 1;   /* map entries: key = 1, value = 2 */
	const struct fg_pbwire_keys *keys = r->keys;
	struct fg_pbwire_field key;
	int rv, found = 0, hit = 0;

	if (f->wire_type != FG_PBWIRE_LEN)
		return fail(e, "map field is not length-delimited");
	if (depth >= FG_PBWIRE_MAX_DEPTH)
		return fail(e, "messages nested too deep");
	if ((rv = last_field(f->value, f->vlen, &key_number, 1, &key, &found, &e->why)) < 0)
		return rv;
	if (keys != NULL && keys->str != NULL)
		rv = str_key_in(e, keys, found ? &key : NULL, &hit);
	else if (keys != NULL && keys->num != NULL)
		rv = num_key_in(e, r, found ? &key : NULL, &hit);
	if (rv < 0)
		return rv;
	if (!hit)
		return buf_append(e->out, f->tag, (size_t)(f->end - f->tag));
	count(e, r->stat);
	*changed = 1;
	return 0;
}

/* The call's value for REPLACE rule <r>, or NULL when it has none. */
static const struct fg_pbwire_value *replace_value(const struct edit *e, const struct fg_pbwire_rule *r)
{
	const struct fg_pbwire_value *v;

	if (e->ctx == NULL || r->arg >= e->ctx->nvalues)
		return NULL;
	v = &e->ctx->values[r->arg];
	return v->data != NULL ? v : NULL;
}

/* REPLACE: the tag as it came, then the call's value; dropped without one. */
static int replace_field(struct edit *e, const struct fg_pbwire_field *f, const struct fg_pbwire_rule *r,
                         int *changed)
{
	const struct fg_pbwire_value *v = replace_value(e, r);
	uint8_t len[FG_PBWIRE_VARINT_MAX];
	int rv;

	if (f->wire_type != FG_PBWIRE_LEN)
		return fail(e, "REPLACE field is not length-delimited");
	if (v != NULL && v->len == f->vlen && (v->len == 0 || memcmp(v->data, f->value, v->len) == 0))
		return buf_append(e->out, f->tag, (size_t)(f->end - f->tag));
	count(e, r->stat);
	*changed = 1;
	if (v == NULL)
		return 0;
	if ((rv = buf_append(e->out, f->tag, f->tag_len)) < 0 ||
	    (rv = buf_append(e->out, len, fg_pbwire_write_varint(len, v->len))) < 0)
		return rv;
	return buf_append(e->out, v->data, v->len);
}

/* Append the edited form of one field that has a rule, or that the
 * allow-list of <prog> drops (<r> NULL). */
static int edit_field(struct edit *e, const struct fg_pbwire_field *f,
                      const struct fg_pbwire_msg *prog, const struct fg_pbwire_rule *r,
                      unsigned depth, uint8_t *guess, int *changed)
{
	*changed = 0;
	if (r == NULL) {
		count(e, prog->unlisted_stat);
		*changed = 1;
		return 0;
	}
	switch (r->action) {
	case FG_PBWIRE_KEEP:
		return keep_field(e, f, r);
	case FG_PBWIRE_DROP:
		count(e, r->stat);
		*changed = 1;
		return 0;
	case FG_PBWIRE_RECURSE:
		return recurse_field(e, f, r, depth, guess, changed);
	case FG_PBWIRE_COARSEN:
		return coarsen_field(e, f, r, changed);
	case FG_PBWIRE_DROP_KEYS:
		return drop_keys_field(e, f, r, depth, changed);
	case FG_PBWIRE_REPLACE:
		return replace_field(e, f, r, changed);
	default:
		return fail(e, "program: unknown action");
	}
}

/* Fields copied as they are, without a look at their value. */
static int is_verbatim(const struct fg_pbwire_msg *prog, const struct fg_pbwire_rule *r)
{
	if (r == NULL)
		return prog == NULL || !prog->allow_only;
	return r->action == FG_PBWIRE_KEEP && r->scalar == FG_PBWIRE_S_NONE;
}

/*
 * Append the edit of one message (<depth> below the root).  Runs of
 * verbatim fields are copied with one memcpy when the run ends, so a
 * message without rules costs a parse and a copy.
 */
static int edit_msg(struct edit *e, const uint8_t *in, size_t len,
                    const struct fg_pbwire_msg *prog, unsigned depth, int *changed)
{
	const uint8_t *p = in, *end = in + len, *run = in;
	const struct fg_pbwire_rule *r;
	struct fg_pbwire_field f;
	size_t cursor = 0;
	uint8_t guess = 0;      /* recurse_field()'s length guess for this message's children */
	int rv, ch;

	*changed = 0;
	while (p < end) {
		if (next_field(&p, end, &f, &e->why) < 0)
			return FG_EINVAL;
		r = prog != NULL ? rule_for(prog, &cursor, f.number) : NULL;
		if (is_verbatim(prog, r))
			continue;
		if (f.tag != run && (rv = buf_append(e->out, run, (size_t)(f.tag - run))) < 0)
			return rv;
		run = f.end;
		/* the common edit inline: a field dropped by its rule (edit_field
		 * does the same; inlining it here is worth 9% of the rankfeed
		 * response edit, pbwire-bench 5.5 against 6.0 us) */
		if (r != NULL && r->action == FG_PBWIRE_DROP) {
			count(e, r->stat);
			*changed = 1;
			continue;
		}
		if ((rv = edit_field(e, &f, prog, r, depth, &guess, &ch)) < 0)
			return rv;
		*changed |= ch;
	}
	return buf_append(e->out, run, (size_t)(end - run));
}

int fg_pbwire_edit(const uint8_t *in, size_t len, const struct fg_pbwire_msg *prog,
                   struct fg_bufq *out, uint64_t *stats, size_t nstats,
                   int *changed, const char **why)
{
	return fg_pbwire_edit_ex(in, len, prog, NULL, out, stats, nstats, changed, why);
}

int fg_pbwire_edit_ex(const uint8_t *in, size_t len, const struct fg_pbwire_msg *prog,
                      const struct fg_pbwire_ctx *ctx, struct fg_bufq *out, uint64_t *stats, size_t nstats,
                      int *changed, const char **why)
{
	struct edit e = { .out = out, .stats = stats, .nstats = nstats, .ctx = ctx, .why = NULL };
	size_t saved = fg_bufq_len(out);
	int rv = 0, ch = 0;

	if (len > 0) {
		rv = fg_bufq_reserve(out, len <= SIZE_MAX - EDIT_SLACK ? len + EDIT_SLACK : len);
		if (rv == 0)
			rv = edit_msg(&e, in, len, prog, 0, &ch);
	}
	if (rv < 0) {
		fg_bufq_truncate(out, saved);
		if (why != NULL)
			*why = rv == FG_ENOMEM ? "out of memory" : e.why;
		return rv;
	}
	if (changed != NULL)
		*changed = ch;
	return 0;
}

/* ---- lookup ---- */

/*
 * The last occurrence of <path> in <in>, through every occurrence of each
 * enclosing field: protobuf merges repeated occurrences of a message field
 * and lets the last scalar win, and so must we to read what the server
 * will read.  Recursion is bounded by <depth>.
 */
static int last_field(const uint8_t *in, size_t len, const uint32_t *path, size_t depth,
                      struct fg_pbwire_field *best, int *found, const char **why)
{
	const uint8_t *p = in, *end = in + len;
	struct fg_pbwire_field f;

	while (p < end) {
		if (get_field(&p, end, &f, why) < 0)
			return FG_EINVAL;
		if (f.number != path[0])
			continue;
		if (depth == 1) {
			*best = f;
			*found = 1;
		} else if (f.wire_type != FG_PBWIRE_LEN) {
			*why = "a field on the path is not a message";
			return FG_EINVAL;
		} else if (last_field(f.value, f.vlen, path + 1, depth - 1, best, found, why) < 0)
			return FG_EINVAL;
	}
	return 0;
}

int fg_pbwire_find(const uint8_t *in, size_t len, const uint32_t *path, size_t depth,
                   struct fg_pbwire_field *f, const char **why)
{
	struct fg_pbwire_field best;
	const char *reason = NULL;
	int found = 0;

	if (depth == 0 || depth > FG_PBWIRE_MAX_DEPTH) {
		reason = "path depth out of range";
		goto fail_invalid;
	}
	if (len > 0 && last_field(in, len, path, depth, &best, &found, &reason) < 0)
		goto fail_invalid;
	if (!found)
		return FG_ENOTFOUND;
	*f = best;
	return 0;

fail_invalid:
	if (why != NULL)
		*why = reason;
	return FG_EINVAL;
}
