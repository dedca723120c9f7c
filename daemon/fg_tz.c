/*
 * fg_tz.c - TZif zones (RFC 8536): loading a named zone from zoneinfo,
 * checking every field of the file, and the lookups workers make.
 *
 * A loaded zone is one allocation: the struct, then its transition times,
 * their type indices, the types and the designations.  It never changes
 * after fg_tz_parse_tzif returns, so any number of threads may read it.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fg_error.h"
#include "fg_file.h"
#include "fg_tz-internal.h"

/* RFC 8536 3.1: "TZif", version, 15 unused bytes, six 32-bit counts. */
#define TZIF_MAGIC "TZif"
#define TZIF_MAGIC_LEN 4
#define TZIF_HEADER_LEN 44
#define TZIF_COUNTS_AT 20
#define TZIF_TTINFO_LEN 6       /* int32 utoff, uint8 isdst, uint8 desigidx */
#define TZIF_TYPES_MAX 256      /* a type index is one byte */
#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-/"

struct fg_tz_type {
	int32_t utoff;          /* seconds east of UTC */
	uint8_t isdst;
	uint8_t abbr;           /* index into chars, NUL-terminated there */
};

struct fg_tz {
	char name[FG_TZ_POSIX_MAX + 1];   /* a zone name, or a POSIX string for fg_tz_parse_posix */
	size_t timecnt;                   /* transitions */
	size_t typecnt;                   /* 0 only for a zone made of a POSIX string */
	const int64_t *times;             /* strictly ascending, UTC */
	const uint8_t *idx;               /* type from times[i] on, < typecnt */
	const struct fg_tz_type *types;
	const char *chars;                /* designations */
	int has_rule;                     /* rule applies from the last transition on */
	struct fg_tz_rule rule;
	int32_t min_off, max_off;         /* over every type and the rule: bound searches */
	int64_t storage[];                /* times, then types, idx and chars */
};

/* The counts of a TZif header (RFC 8536 3.1), in file order. */
struct tzif_counts {
	uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

/* Parsing state: the file, where we are, and where errors go. */
struct tzif {
	const uint8_t *p;
	size_t len;
	size_t pos;
	const char *name;
	char *err;
	size_t errlen;
};

static int fail_at(struct tzif *f, size_t at, const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (f->errlen)
		snprintf(f->err, f->errlen, "%s: byte %zu: %s", f->name, at, msg);
	return FG_EINVAL;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static int read_header(struct tzif *f, int *version, struct tzif_counts *c)
{
	const uint8_t *h = f->p + f->pos;
	uint32_t v[6];

	if (f->len - f->pos < TZIF_HEADER_LEN)
		return fail_at(f, f->pos, "truncated header");
	if (memcmp(h, TZIF_MAGIC, TZIF_MAGIC_LEN) != 0)
		return fail_at(f, f->pos, "not a TZif file (no \"TZif\" magic)");
	if (h[4] != 0 && (h[4] < '2' || h[4] > '4'))
		return fail_at(f, f->pos + 4, "unsupported TZif version 0x%02x", h[4]);
	*version = h[4] == 0 ? 1 : h[4] - '0';
	for (int i = 0; i < 6; i++)
		v[i] = be32(h + TZIF_COUNTS_AT + 4 * i);
	*c = (struct tzif_counts){ v[0], v[1], v[2], v[3], v[4], v[5] };
	f->pos += TZIF_HEADER_LEN;
	return 0;
}

/* RFC 8536 3.1's constraints on the counts, and that the block fits. */
static int check_counts(struct tzif *f, const struct tzif_counts *c, size_t tsize, size_t *block)
{
	size_t at = f->pos - TZIF_HEADER_LEN + TZIF_COUNTS_AT;

	if (c->typecnt == 0 || c->typecnt > TZIF_TYPES_MAX)
		return fail_at(f, at + 16, "typecnt %u not in 1..%d", c->typecnt, TZIF_TYPES_MAX);
	if (c->charcnt == 0)
		return fail_at(f, at + 20, "charcnt is 0");
	if (c->isutcnt != 0 && c->isutcnt != c->typecnt)
		return fail_at(f, at, "isutcnt %u is neither 0 nor typecnt", c->isutcnt);
	if (c->isstdcnt != 0 && c->isstdcnt != c->typecnt)
		return fail_at(f, at + 4, "isstdcnt %u is neither 0 nor typecnt", c->isstdcnt);
	/* each count < 2^32 and size_t is 64-bit on every target: no overflow */
	*block = (size_t)c->timecnt * (tsize + 1) + (size_t)c->typecnt * TZIF_TTINFO_LEN + c->charcnt +
	         (size_t)c->leapcnt * (tsize + 4) + c->isstdcnt + c->isutcnt;
	if (*block > f->len - f->pos)
		return fail_at(f, f->pos, "data block of %zu bytes truncated at %zu", *block, f->len - f->pos);
	return 0;
}

static int check_times(struct tzif *f, const struct tzif_counts *c, size_t tsize, int64_t *times)
{
	const uint8_t *p = f->p + f->pos;

	for (size_t i = 0; i < c->timecnt; i++) {
		times[i] = tsize == 8 ? be64(p + 8 * i) : (int64_t)(int32_t)be32(p + 4 * i);
		if (i > 0 && times[i] <= times[i - 1])
			return fail_at(f, f->pos + tsize * i, "transition %zu not after the one before", i);
	}
	f->pos += tsize * c->timecnt;
	for (size_t i = 0; i < c->timecnt; i++)
		if (f->p[f->pos + i] >= c->typecnt)
			return fail_at(f, f->pos + i, "transition %zu has type %u of %u", i, f->p[f->pos + i],
			               c->typecnt);
	f->pos += c->timecnt;
	return 0;
}

/* A designation: printable ASCII, NUL-terminated inside the array, short. */
static int check_abbr(struct tzif *f, const char *chars, uint32_t charcnt, unsigned idx, size_t at)
{
	const char *nul;

	if (idx >= charcnt)
		return fail_at(f, at, "designation index %u outside %u bytes", idx, charcnt);
	nul = memchr(chars + idx, '\0', charcnt - idx);
	if (!nul)
		return fail_at(f, at, "designation at %u not NUL-terminated", idx);
	if ((size_t)(nul - chars - idx) > FG_TZ_ABBR_MAX)
		return fail_at(f, at, "designation at %u longer than %d", idx, FG_TZ_ABBR_MAX);
	for (const char *s = chars + idx; s < nul; s++)
		if (*s < 0x20 || *s > 0x7e)
			return fail_at(f, at, "designation at %u is not printable ASCII", idx);
	return 0;
}

static int check_types(struct tzif *f, const struct tzif_counts *c, struct fg_tz_type *types)
{
	const uint8_t *p = f->p + f->pos;
	const char *chars = (const char *)p + (size_t)c->typecnt * TZIF_TTINFO_LEN;

	for (size_t i = 0; i < c->typecnt; i++, p += TZIF_TTINFO_LEN) {
		size_t at = f->pos + i * TZIF_TTINFO_LEN;
		int32_t off = (int32_t)be32(p);

		if (off < -FG_TZ_OFFSET_MAX || off > FG_TZ_OFFSET_MAX)
			return fail_at(f, at, "type %zu: UTC offset %d beyond 24:59:59", i, (int)off);
		if (p[4] > 1)
			return fail_at(f, at + 4, "type %zu: isdst %u is not 0 or 1", i, p[4]);
		if (check_abbr(f, chars, c->charcnt, p[5], at + 5) < 0)
			return FG_EINVAL;
		types[i] = (struct fg_tz_type){ off, p[4], p[5] };
	}
	f->pos += (size_t)c->typecnt * TZIF_TTINFO_LEN + c->charcnt;
	return 0;
}

/* Standard/wall and UT/local indicators: 0 or 1, and UT implies standard. */
static int check_indicators(struct tzif *f, const struct tzif_counts *c)
{
	const uint8_t *isstd = f->p + f->pos, *isut = isstd + c->isstdcnt;

	for (size_t i = 0; i < c->isstdcnt; i++)
		if (isstd[i] > 1)
			return fail_at(f, f->pos + i, "standard/wall indicator %zu is %u", i, isstd[i]);
	for (size_t i = 0; i < c->isutcnt; i++) {
		if (isut[i] > 1)
			return fail_at(f, f->pos + c->isstdcnt + i, "UT/local indicator %zu is %u", i, isut[i]);
		if (isut[i] && (c->isstdcnt == 0 || !isstd[i]))
			return fail_at(f, f->pos + c->isstdcnt + i, "type %zu is UT but not standard", i);
	}
	f->pos += c->isstdcnt + c->isutcnt;
	return 0;
}

static struct fg_tz *tz_alloc(const struct tzif_counts *c)
{
	size_t n = sizeof(struct fg_tz) + (size_t)c->timecnt * (sizeof(int64_t) + 1) +
	           (size_t)c->typecnt * sizeof(struct fg_tz_type) + c->charcnt;
	struct fg_tz *tz = calloc(1, n);
	uint8_t *p;

	if (!tz)
		return NULL;
	tz->timecnt = c->timecnt;
	tz->typecnt = c->typecnt;
	tz->times = tz->storage;
	p = (uint8_t *)(tz->storage + c->timecnt);
	tz->types = (const struct fg_tz_type *)p;
	p += (size_t)c->typecnt * sizeof(struct fg_tz_type);
	tz->idx = p;
	tz->chars = (const char *)(p + c->timecnt);
	return tz;
}

/* The data block at f->pos, with <tsize>-byte times, into a new zone. */
static int read_block(struct tzif *f, const struct tzif_counts *c, size_t tsize, struct fg_tz **out)
{
	size_t start = f->pos;
	struct fg_tz *tz;

	if (c->leapcnt != 0)
		return fail_at(f, f->pos - TZIF_HEADER_LEN + TZIF_COUNTS_AT + 8,
		               "%u leap-second records: leap-second (right/) zones are not supported", c->leapcnt);
	tz = tz_alloc(c);
	if (!tz) {
		if (f->errlen)
			snprintf(f->err, f->errlen, "%s: out of memory", f->name);
		return FG_ENOMEM;
	}
	if (check_times(f, c, tsize, (int64_t *)tz->times) < 0 || check_types(f, c, (struct fg_tz_type *)tz->types) < 0 ||
	    check_indicators(f, c) < 0) {
		free(tz);
		return FG_EINVAL;
	}
	memcpy((uint8_t *)tz->idx, f->p + start + tsize * c->timecnt, c->timecnt);
	memcpy((char *)tz->chars, f->p + start + c->timecnt * (tsize + 1) + (size_t)c->typecnt * TZIF_TTINFO_LEN,
	       c->charcnt);
	*out = tz;
	return 0;
}

/* RFC 8536 3.3: "\n" TZ string "\n", then the end of the file. */
static int read_footer(struct tzif *f, int version, struct fg_tz *tz)
{
	const char *s = (const char *)f->p + f->pos + 1;
	const char *nl;
	const char *why;
	size_t len, at;

	if (f->pos == f->len || f->p[f->pos] != '\n')
		return fail_at(f, f->pos, "footer: newline expected");
	nl = memchr(s, '\n', f->len - f->pos - 1);
	if (!nl)
		return fail_at(f, f->pos, "footer: no closing newline");
	len = (size_t)(nl - s);
	if (len > FG_TZ_POSIX_MAX)
		return fail_at(f, f->pos + 1, "footer: TZ string longer than %d", FG_TZ_POSIX_MAX);
	if ((size_t)(nl + 1 - (const char *)f->p) != f->len)
		return fail_at(f, (size_t)(nl + 1 - (const char *)f->p), "bytes after the footer");
	if (len == 0)
		return 0;
	if (fg_tz_rule_parse(s, len, version >= 3 ? FG_TZ_RULE_HOURS_V3 : FG_TZ_RULE_HOURS_V2, &tz->rule, &why,
	                     &at) < 0)
		return fail_at(f, f->pos + 1 + at, "footer TZ string \"%.*s\": %s", (int)len, s, why);
	tz->has_rule = 1;
	return 0;
}

static void set_bounds(struct fg_tz *tz)
{
	int32_t lo = INT32_MAX, hi = INT32_MIN;

	for (size_t i = 0; i < tz->typecnt; i++) {
		lo = tz->types[i].utoff < lo ? tz->types[i].utoff : lo;
		hi = tz->types[i].utoff > hi ? tz->types[i].utoff : hi;
	}
	if (tz->has_rule) {
		int32_t o[2] = { tz->rule.std_off, tz->rule.has_dst ? tz->rule.dst_off : tz->rule.std_off };

		for (int i = 0; i < 2; i++) {
			lo = o[i] < lo ? o[i] : lo;
			hi = o[i] > hi ? o[i] : hi;
		}
	}
	tz->min_off = lo;
	tz->max_off = hi;
}

/* Skip the v1 block of a v2+ file and read the second header and block. */
static int read_v2(struct tzif *f, int version, struct fg_tz **out)
{
	struct tzif_counts c;
	size_t block, at = f->pos;
	int v2, rc;

	if (read_header(f, &v2, &c) < 0)
		return FG_EINVAL;
	if (v2 != version)
		return fail_at(f, at + 4, "second header says version %d, first %d", v2, version);
	if (check_counts(f, &c, 8, &block) < 0)
		return FG_EINVAL;
	rc = read_block(f, &c, 8, out);
	if (rc < 0)
		return rc;
	rc = read_footer(f, version, *out);
	if (rc < 0) {
		free(*out);
		*out = NULL;
	}
	return rc;
}

static int read_tzif(struct tzif *f, struct fg_tz **out)
{
	struct tzif_counts c;
	size_t block;
	int version, rc;

	if (read_header(f, &version, &c) < 0 || check_counts(f, &c, 4, &block) < 0)
		return FG_EINVAL;
	if (version >= 2) {
		f->pos += block;
		return read_v2(f, version, out);
	}
	rc = read_block(f, &c, 4, out);
	if (rc == 0 && f->pos != f->len) {
		free(*out);
		*out = NULL;
		rc = fail_at(f, f->pos, "bytes after the v1 data block");
	}
	return rc;
}

int fg_tz_parse_tzif(const char *name, const void *buf, size_t len, struct fg_tz **out, char *err,
                     size_t errlen)
{
	struct tzif f = { .p = buf, .len = len, .name = name, .err = err, .errlen = errlen };
	struct fg_tz *tz = NULL;
	int rc;

	*out = NULL;
	if (strlen(name) > FG_TZ_NAME_MAX) {
		if (errlen)
			snprintf(err, errlen, "zone name longer than %d", FG_TZ_NAME_MAX);
		return FG_EINVAL;
	}
	if (len > FG_TZ_FILE_MAX) {
		if (errlen)
			snprintf(err, errlen, "%s: %zu bytes, more than %d", name, len, FG_TZ_FILE_MAX);
		return FG_ETOOBIG;
	}
	rc = read_tzif(&f, &tz);
	if (rc < 0)
		return rc;
	snprintf(tz->name, sizeof(tz->name), "%s", name);
	set_bounds(tz);
	*out = tz;
	return 0;
}

int fg_tz_parse_posix(const char *rule, struct fg_tz **out, char *err, size_t errlen)
{
	struct tzif_counts none = { 0 };
	size_t len = strlen(rule), at;
	const char *why;
	struct fg_tz *tz;

	*out = NULL;
	if (len > FG_TZ_POSIX_MAX) {
		if (errlen)
			snprintf(err, errlen, "TZ string longer than %d", FG_TZ_POSIX_MAX);
		return FG_EINVAL;
	}
	tz = tz_alloc(&none);
	if (!tz) {
		if (errlen)
			snprintf(err, errlen, "out of memory");
		return FG_ENOMEM;
	}
	if (fg_tz_rule_parse(rule, len, FG_TZ_RULE_HOURS_V3, &tz->rule, &why, &at) < 0) {
		if (errlen)
			snprintf(err, errlen, "TZ string \"%s\": byte %zu: %s", rule, at, why);
		free(tz);
		return FG_EINVAL;
	}
	tz->has_rule = 1;
	snprintf(tz->name, sizeof(tz->name), "%s", rule);
	set_bounds(tz);
	*out = tz;
	return 0;
}

/* [A-Za-z0-9_+-/], no leading, trailing or doubled '/', no "..". */
static int check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > FG_TZ_NAME_MAX || strspn(name, NAME_CHARS) != len)
		return FG_EINVAL;
	if (name[0] == '/' || name[len - 1] == '/' || strstr(name, "//") || strstr(name, ".."))
		return FG_EINVAL;
	return 0;
}

/*
 * Read the file at <path> into a new buffer: a regular file (fg_file: a
 * FIFO planted in the directory cannot hang the load) of at most
 * FG_TZ_FILE_MAX bytes.
 */
static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	struct stat st;
	ssize_t n;
	int fd, rc = FG_EIO, saved;

	fd = fg_file_open_read(path);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? FG_ENOTFOUND : errno == EINVAL ? FG_EINVAL : FG_EIO;
	if (fstat(fd, &st) < 0)
		goto out_close;
	rc = st.st_size > FG_TZ_FILE_MAX ? FG_ETOOBIG : 0;
	if (rc < 0)
		goto out_close;
	*buf = malloc((size_t)st.st_size + 1);
	rc = FG_ENOMEM;
	if (!*buf)
		goto out_close;
	n = read(fd, *buf, (size_t)st.st_size + 1);
	*len = n < 0 ? 0 : (size_t)n;
	rc = n < 0 ? FG_EIO : (size_t)n > (size_t)st.st_size ? FG_ETOOBIG : 0;
	if (rc < 0) {
		saved = errno;
		free(*buf);
		*buf = NULL;
		errno = saved;
	}
out_close:
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

static int load_error(int rc, const char *name, const char *path, char *err, size_t errlen)
{
	if (!errlen)
		return rc;
	switch (rc) {
	case FG_ENOTFOUND:
		snprintf(err, errlen, "time zone %s: no such zone (%s)", name, path);
		break;
	case FG_EINVAL:
		snprintf(err, errlen, "time zone %s: %s is not a regular file", name, path);
		break;
	case FG_ETOOBIG:
		snprintf(err, errlen, "time zone %s: %s is larger than %d bytes", name, path, FG_TZ_FILE_MAX);
		break;
	case FG_ENOMEM:
		snprintf(err, errlen, "time zone %s: out of memory", name);
		break;
	default:
		snprintf(err, errlen, "time zone %s: %s: %s", name, path, strerror(errno));
		break;
	}
	return rc;
}

int fg_tz_load(const char *name, struct fg_tz **out, char *err, size_t errlen)
{
	const char *dir = getenv("TZDIR"), *base;
	char path[4096];
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	/* zoneinfo's "localtime" is the host's own zone (a link to
	 * /etc/localtime): the same policy would count days differently on
	 * each host of a fleet that shares one Redis; "posix/localtime"
	 * reaches it too where posix is a link to "." */
	base = strrchr(name, '/');
	if (strcmp(base ? base + 1 : name, "localtime") == 0) {
		if (errlen)
			snprintf(err, errlen, "time zone name \"%.*s\" is each host's own zone: name the zone "
			         "(Europe/London, UTC)", FG_TZ_NAME_MAX, name);
		return FG_EINVAL;
	}
	if (check_name(name) < 0) {
		if (errlen)
			snprintf(err, errlen, "time zone name \"%.*s\": 1 to %d of [A-Za-z0-9_+-/], no \"..\", "
			         "no leading, trailing or doubled '/'", FG_TZ_NAME_MAX, name, FG_TZ_NAME_MAX);
		return FG_EINVAL;
	}
	if (!dir || !*dir)
		dir = FG_TZ_DEFAULT_DIR;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return load_error(FG_ENOTFOUND, name, dir, err, errlen);
	rc = read_file(path, &buf, &len);
	if (rc < 0)
		return load_error(rc, name, path, err, errlen);
	rc = fg_tz_parse_tzif(name, buf, len, out, err, errlen);
	free(buf);
	return rc;
}

void fg_tz_free(struct fg_tz *tz)
{
	free(tz);
}

const char *fg_tz_name(const struct fg_tz *tz)
{
	return tz->name;
}

static void type_seg(const struct fg_tz *tz, size_t type, int64_t end, struct fg_tz_seg *seg)
{
	seg->utoff = tz->types[type].utoff;
	seg->isdst = tz->types[type].isdst;
	seg->abbr = tz->chars + tz->types[type].abbr;
	seg->end = end;
}

/* The type in effect at <t> and until when (RFC 8536 3.2, 3.3). */
static void seg_at(const struct fg_tz *tz, int64_t t, struct fg_tz_seg *seg)
{
	size_t lo = 0, hi = tz->timecnt;

	if (tz->timecnt == 0 || t >= tz->times[tz->timecnt - 1]) {
		if (tz->has_rule)
			fg_tz_rule_at(&tz->rule, t, seg);
		else
			type_seg(tz, tz->timecnt ? tz->idx[tz->timecnt - 1] : 0, INT64_MAX, seg);
		return;
	}
	if (t < tz->times[0]) {
		type_seg(tz, 0, tz->times[0], seg);
		return;
	}
	/* times[lo] <= t < times[hi] */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (tz->times[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	type_seg(tz, tz->idx[lo], tz->times[hi], seg);
}

/*
 * The earliest instant at or after <lo> whose local time (UTC + offset,
 * counted like UTC) is at or after <local>.  Before local - max_off no
 * instant qualifies, and local - min_off always does, so the walk visits
 * only the few segments in between.
 */
static int64_t first_at_or_after(const struct fg_tz *tz, int64_t local, int64_t lo)
{
	struct fg_tz_seg seg;

	if (lo < local - tz->max_off)
		lo = local - tz->max_off;
	for (;;) {
		int64_t cand;

		seg_at(tz, lo, &seg);
		cand = local - seg.utoff > lo ? local - seg.utoff : lo;
		if (cand < seg.end)
			return cand;
		lo = seg.end;
	}
}

static int64_t clamp(int64_t v, int64_t limit)
{
	return v < -limit ? -limit : v > limit ? limit : v;
}

void fg_tz_local(const struct fg_tz *tz, int64_t utc_seconds, struct fg_tz_local *out)
{
	int64_t t = clamp(utc_seconds, FG_TZ_TIME_LIMIT);
	struct fg_tz_seg seg;
	int64_t local, days;
	int32_t sod;

	seg_at(tz, t, &seg);
	local = t + seg.utoff;
	days = fg_tz_floor_div(local, FG_TZ_DAY);
	sod = (int32_t)(local - days * FG_TZ_DAY);
	out->utc = t;
	out->utc_offset = seg.utoff;
	out->is_dst = seg.isdst;
	out->abbr = seg.abbr;
	fg_tz_civil_from_days(days, &out->year, &out->month, &out->day);
	out->weekday = (int)fg_tz_floor_mod(days + FG_TZ_EPOCH_WEEKDAY, 7);
	out->hour = sod / 3600;
	out->minute = sod / 60 % 60;
	out->second = sod % 60;
	out->day_number = days;
	out->sec_of_day = sod;
	out->day_start = first_at_or_after(tz, days * FG_TZ_DAY, INT64_MIN);
	out->next_day_start = first_at_or_after(tz, (days + 1) * FG_TZ_DAY, t + 1);
}

int64_t fg_tz_wall_to_utc(const struct fg_tz *tz, int64_t day_number, int32_t wall_seconds)
{
	/*
	 * Wide enough for every date fg_tz_local gives (a clamped instant plus
	 * its offset), small enough that day * 86400 + wall cannot overflow.
	 */
	int64_t day = clamp(day_number, FG_TZ_TIME_LIMIT / FG_TZ_DAY + 2);

	return first_at_or_after(tz, day * FG_TZ_DAY + wall_seconds, INT64_MIN);
}
