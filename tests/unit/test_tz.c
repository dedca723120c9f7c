/*
 * test_tz.c - cmocka group "tz": fg_tz.h through its header.
 *
 * The reference is glibc: localtime_r with setenv("TZ") + tzset(), which
 * this single-threaded test may call (the daemon may not).  For each zone,
 * random instants over 1900..2100 and every change of offset, DST or
 * abbreviation a daily scan finds (at -1, 0 and +1 s) must agree on every
 * field.  Zones beyond 2037 run on their footer's POSIX rule, including
 * the v3 forms (America/Nuuk: -1:00; Asia/Jerusalem: 26:00; America/
 * Santiago: 24:00).  Allocation is wrapped (fg_failalloc.h) so that
 * test_enomem fails each of the loader's allocations in turn.  Tests that need the system's zoneinfo skip with a
 * message when it is missing (contrib/install-deps.sh installs tzdata).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_error.h"
#include "fg_testutil.h"
#include "fg_tz.h"

#define FG_FAILALLOC_ALL
#include "fg_failalloc.h"

#define ZONEINFO "/usr/share/zoneinfo"
#define Y1900 INT64_C(-2208988800)
#define Y2100 INT64_C(4102444800)
/* glibc applies a POSIX TZ string to years before 1971 as if they were 1970 */
#define Y1971 INT64_C(31536000)
#define SCAN_STEP 86400        /* a change undone within a day is left to the random instants */
#define RANDOM_INSTANTS 3000
#define HOUR 3600

static const char *const zones[] = {
	"Europe/London", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kolkata",
	"America/Sao_Paulo", "Africa/Casablanca", "UTC", "Asia/Jerusalem", "America/Nuuk",
	"America/Santiago",
};

/* Zones parsed from POSIX strings, compared with glibc given the same string. */
static const char *const posix_zones[] = {
	"XST5XDT,M3.2.0,M11.1.0", "<+0330>-3:30", "AAA-2BBB,M3.4.4/26,M10.5.0",
	"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "CCC3DDD,J60/2,300/-3", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
	"EEE-1FFF-2:30:15,M1.1.0/0,M12.5.6/23:59:59",
};

static int have_zoneinfo(void)
{
	if (access(ZONEINFO "/UTC", R_OK) == 0)
		return 1;
	print_message("skipped: %s is missing (install tzdata: contrib/install-deps.sh)\n", ZONEINFO);
	return 0;
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void use_glibc_zone(const char *tz)
{
	unsetenv("TZDIR");
	setenv("TZ", tz, 1);
	tzset();
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b < 0);
}

/* The local date of <t> per glibc, as days since 1970-01-01. */
static int64_t glibc_day(time_t t)
{
	struct tm tm;

	localtime_r(&t, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	return floor_div((int64_t)timegm(&tm), 86400);
}

static void check_instant(const struct fg_tz *tz, int64_t t)
{
	struct fg_tz_local l;
	struct tm tm;
	time_t tt = (time_t)t;

	localtime_r(&tt, &tm);
	fg_tz_local(tz, t, &l);
	if (l.utc_offset != tm.tm_gmtoff || l.is_dst != (tm.tm_isdst > 0) || l.year != tm.tm_year + 1900 ||
	    l.month != tm.tm_mon + 1 || l.day != tm.tm_mday || l.hour != tm.tm_hour || l.minute != tm.tm_min ||
	    l.second != tm.tm_sec || l.weekday != tm.tm_wday || strcmp(l.abbr, tm.tm_zone) != 0)
		fail_msg("%s at %lld: fg_tz %lld-%02d-%02d %02d:%02d:%02d %+d dst %d %s wd %d; glibc "
		         "%d-%02d-%02d %02d:%02d:%02d %+ld dst %d %s wd %d", fg_tz_name(tz), (long long)t,
		         (long long)l.year, l.month, l.day, l.hour, l.minute, l.second, l.utc_offset, l.is_dst,
		         l.abbr, l.weekday, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		         tm.tm_sec, tm.tm_gmtoff, tm.tm_isdst, tm.tm_zone, tm.tm_wday);
	assert_int_equal(l.sec_of_day, l.hour * 3600 + l.minute * 60 + l.second);
	assert_int_equal(l.day_number, glibc_day(tt));
}

/* day_start and next_day_start against glibc's dates around them. */
static void check_day_bounds(const struct fg_tz *tz, int64_t t)
{
	struct fg_tz_local l;

	fg_tz_local(tz, t, &l);
	assert_true(l.day_start <= t && t < l.next_day_start);
	assert_int_equal(glibc_day((time_t)l.day_start), l.day_number);
	assert_true(glibc_day((time_t)(l.day_start - 1)) < l.day_number);
	assert_true(glibc_day((time_t)l.next_day_start) > l.day_number);
	assert_true(l.next_day_start - l.day_start >= 20 * HOUR);
	assert_true(l.next_day_start - l.day_start <= 28 * HOUR);
}

static int same_type(time_t a, time_t b)
{
	struct tm x, y;

	localtime_r(&a, &x);
	localtime_r(&b, &y);
	return x.tm_gmtoff == y.tm_gmtoff && x.tm_isdst == y.tm_isdst && strcmp(x.tm_zone, y.tm_zone) == 0;
}

/* The first instant in (<a>, <b>] whose glibc type differs from <a>'s. */
static int64_t glibc_change(int64_t a, int64_t b)
{
	while (b - a > 1) {
		int64_t mid = a + (b - a) / 2;

		if (same_type((time_t)a, (time_t)mid))
			a = mid;
		else
			b = mid;
	}
	return b;
}

/* Scan <from>..2100; returns how many changes were found and checked. */
static int compare_zone(const struct fg_tz *tz, const char *glibc_tz, int64_t from)
{
	int changes = 0;

	use_glibc_zone(glibc_tz);
	for (int64_t t = from; t < Y2100; t += SCAN_STEP) {
		if (!same_type((time_t)t, (time_t)(t + SCAN_STEP))) {
			int64_t c = glibc_change(t, t + SCAN_STEP);

			check_instant(tz, c - 1);
			check_instant(tz, c);
			check_instant(tz, c + 1);
			check_day_bounds(tz, c);
			changes++;
		}
	}
	for (int i = 0; i < RANDOM_INSTANTS; i++) {
		int64_t t = from + (int64_t)(next_rand() % (uint64_t)(Y2100 - from));

		check_instant(tz, t);
		check_day_bounds(tz, t);
	}
	return changes;
}

static void test_zones_match_glibc(void **state)
{
	(void)state;
	if (!have_zoneinfo())
		skip();
	for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		struct fg_tz *tz = NULL;
		char err[256] = "";
		int changes;

		unsetenv("TZDIR");
		if (fg_tz_load(zones[i], &tz, err, sizeof(err)) != 0)
			fail_msg("%s: %s", zones[i], err);
		assert_string_equal(fg_tz_name(tz), zones[i]);
		changes = compare_zone(tz, zones[i], Y1900);
		if (strcmp(zones[i], "UTC") != 0 && strcmp(zones[i], "Asia/Kolkata") != 0)
			assert_true(changes > 10);
		fg_tz_free(tz);
	}
	unsetenv("TZ");
}

static void test_posix_match_glibc(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(posix_zones) / sizeof(posix_zones[0]); i++) {
		struct fg_tz *tz = NULL;
		char err[256] = "";

		if (fg_tz_parse_posix(posix_zones[i], &tz, err, sizeof(err)) != 0)
			fail_msg("%s: %s", posix_zones[i], err);
		assert_string_equal(fg_tz_name(tz), posix_zones[i]);
		compare_zone(tz, posix_zones[i], Y1971);
		fg_tz_free(tz);
	}
	unsetenv("TZ");
}

static struct fg_tz *load(const char *name)
{
	struct fg_tz *tz = NULL;
	char err[256] = "";

	unsetenv("TZDIR");
	if (fg_tz_load(name, &tz, err, sizeof(err)) != 0)
		fail_msg("%s: %s", name, err);
	return tz;
}

static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi };

	return (int64_t)timegm(&tm);
}

static int64_t day_of(int y, int mo, int d)
{
	return utc(y, mo, d, 0, 0) / 86400;
}

/* Expect local date <y>-<mo>-<d> to run from <start> for <hours> hours. */
static void expect_day(const struct fg_tz *tz, int y, int mo, int d, int64_t start, int64_t seconds)
{
	struct fg_tz_local l;

	fg_tz_local(tz, start + seconds / 2, &l);
	assert_int_equal(l.day_number, day_of(y, mo, d));
	assert_int_equal(l.day_start, start);
	assert_int_equal(l.next_day_start - l.day_start, seconds);
	assert_int_equal(fg_tz_wall_to_utc(tz, l.day_number, 0), start);
}

static void test_day_lengths(void **state)
{
	struct fg_tz *tz;
	struct fg_tz_local l;

	(void)state;
	if (!have_zoneinfo())
		skip();
	tz = load("Europe/London");
	expect_day(tz, 2024, 3, 31, utc(2024, 3, 31, 0, 0), 23 * HOUR);
	expect_day(tz, 2024, 10, 27, utc(2024, 10, 26, 23, 0), 25 * HOUR);
	expect_day(tz, 2024, 6, 1, utc(2024, 5, 31, 23, 0), 24 * HOUR);
	fg_tz_free(tz);
	tz = load("America/New_York");
	expect_day(tz, 2024, 3, 10, utc(2024, 3, 10, 5, 0), 23 * HOUR);
	expect_day(tz, 2024, 11, 3, utc(2024, 11, 3, 4, 0), 25 * HOUR);
	fg_tz_free(tz);
	/* half an hour of DST: 02:00 back to 01:30 */
	tz = load("Australia/Lord_Howe");
	expect_day(tz, 2024, 4, 7, utc(2024, 4, 6, 13, 0), 24 * HOUR + HOUR / 2);
	expect_day(tz, 2024, 10, 6, utc(2024, 10, 5, 13, 30), 24 * HOUR - HOUR / 2);
	fg_tz_free(tz);
	/* DST began at midnight: 2018-11-04 starts at 01:00 -02 (03:00 UTC) */
	tz = load("America/Sao_Paulo");
	expect_day(tz, 2018, 11, 4, utc(2018, 11, 4, 3, 0), 23 * HOUR);
	fg_tz_local(tz, utc(2018, 11, 4, 3, 0), &l);
	assert_int_equal(l.hour, 1);
	expect_day(tz, 2018, 11, 3, utc(2018, 11, 3, 3, 0), 24 * HOUR);
	/* and ended at midnight: 2019-02-16 has 25 hours */
	expect_day(tz, 2019, 2, 16, utc(2019, 2, 16, 2, 0), 25 * HOUR);
	fg_tz_free(tz);
	/* 2011-12-30 never happened on Samoa: the 29th runs into the 31st */
	tz = load("Pacific/Apia");
	expect_day(tz, 2011, 12, 29, utc(2011, 12, 29, 10, 0), 24 * HOUR);
	expect_day(tz, 2011, 12, 31, utc(2011, 12, 30, 10, 0), 24 * HOUR);
	fg_tz_local(tz, utc(2011, 12, 30, 10, 0) - 1, &l);
	assert_int_equal(l.day, 29);
	assert_int_equal(l.next_day_start, utc(2011, 12, 30, 10, 0));
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2011, 12, 30), 22 * HOUR), utc(2011, 12, 30, 10, 0));
	fg_tz_free(tz);
}

static void test_wall_to_utc(void **state)
{
	struct fg_tz *tz;

	(void)state;
	if (!have_zoneinfo())
		skip();
	tz = load("Europe/London");
	/* quiet hours 22:00 to 07:00 on a summer day */
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2024, 6, 1), 22 * HOUR), utc(2024, 6, 1, 21, 0));
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2024, 6, 2), 7 * HOUR), utc(2024, 6, 2, 6, 0));
	/* gap: 01:30 does not exist; the change (02:00 BST) comes first after it */
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2024, 3, 31), HOUR + HOUR / 2), utc(2024, 3, 31, 1, 0));
	/* overlap: 01:30 happens twice; the first (BST) counts */
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2024, 10, 27), HOUR + HOUR / 2),
	                 utc(2024, 10, 27, 0, 30));
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2024, 10, 27), 2 * HOUR), utc(2024, 10, 27, 2, 0));
	/* 24:00 is the next midnight */
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2024, 1, 1), 24 * HOUR), utc(2024, 1, 2, 0, 0));
	/* beyond 2037: the footer's rule */
	assert_int_equal(fg_tz_wall_to_utc(tz, day_of(2090, 3, 26), HOUR + HOUR / 2), utc(2090, 3, 26, 1, 0));
	/* the earliest instant at or after: the second before is earlier in wall time */
	for (int i = 0; i < 2000; i++) {
		int64_t day = day_of(1900, 1, 1) + (int64_t)(next_rand() % (200 * 366));
		int32_t wall = (int32_t)(next_rand() % 86400);
		int64_t r = fg_tz_wall_to_utc(tz, day, wall);
		struct fg_tz_local a, b;

		fg_tz_local(tz, r, &a);
		fg_tz_local(tz, r - 1, &b);
		assert_true(a.day_number * 86400 + a.sec_of_day >= day * 86400 + wall);
		assert_true(b.day_number * 86400 + b.sec_of_day < day * 86400 + wall);
	}
	fg_tz_free(tz);
}

static void expect_bad_name(const char *name, int rc)
{
	struct fg_tz *tz = (struct fg_tz *)1;
	char err[256] = "";

	assert_int_equal(fg_tz_load(name, &tz, err, sizeof(err)), rc);
	assert_null(tz);
	assert_true(strstr(err, "time zone") != NULL);
}

static void test_bad_names(void **state)
{
	char longname[FG_TZ_NAME_MAX + 2];

	(void)state;
	unsetenv("TZDIR");
	expect_bad_name("../etc/passwd", FG_EINVAL);
	expect_bad_name("Europe/../../etc/passwd", FG_EINVAL);
	expect_bad_name("/etc/localtime", FG_EINVAL);
	expect_bad_name("localtime", FG_EINVAL);     /* each host's own zone (an attack run) */
	expect_bad_name("posix/localtime", FG_EINVAL); /* the same where posix is a link to "." */
	expect_bad_name("", FG_EINVAL);
	expect_bad_name("Europe//London", FG_EINVAL);
	expect_bad_name("Europe/", FG_EINVAL);
	expect_bad_name("Europe/London\n", FG_EINVAL);
	expect_bad_name("Europe London", FG_EINVAL);
	expect_bad_name("Europe/London.", FG_EINVAL);
	memset(longname, 'A', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	expect_bad_name(longname, FG_EINVAL);
	if (!have_zoneinfo())
		skip();
	expect_bad_name("Europe/Nowhere", FG_ENOTFOUND);
	expect_bad_name("Europe", FG_EINVAL);        /* a directory */
}

static void *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = malloc(FG_TZ_FILE_MAX);

	assert_non_null(fp);
	assert_non_null(buf);
	*len = fread(buf, 1, FG_TZ_FILE_MAX, fp);
	fclose(fp);
	return buf;
}

static void put(const struct fg_test_dir *d, const char *name, const void *buf, size_t len)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", d->path, name);
	fg_test_write_file(path, buf, len);
}

/* Load <name> from TZDIR=<d>; expect <rc> and <msg> in the error. */
static void expect_load(const struct fg_test_dir *d, const char *name, int rc, const char *msg)
{
	struct fg_tz *tz = NULL;
	char err[256] = "";

	setenv("TZDIR", d->path, 1);
	assert_int_equal(fg_tz_load(name, &tz, err, sizeof(err)), rc);
	unsetenv("TZDIR");
	if (rc == 0) {
		assert_non_null(tz);
		fg_tz_free(tz);
		return;
	}
	assert_null(tz);
	if (!strstr(err, msg))
		fail_msg("%s: error \"%s\" lacks \"%s\"", name, err, msg);
}

/* A v1 file: Asia/Kolkata's header and 32-bit block alone, version 0. */
static void expect_v1(const struct fg_test_dir *d)
{
	struct fg_tz *tz = NULL;
	struct fg_tz_local l;
	char err[256] = "";
	size_t len, n;
	uint8_t *buf = slurp(ZONEINFO "/Asia/Kolkata", &len);
	uint32_t c[6];

	for (int i = 0; i < 6; i++)
		c[i] = (uint32_t)buf[20 + 4 * i] << 24 | (uint32_t)buf[21 + 4 * i] << 16 |
		       (uint32_t)buf[22 + 4 * i] << 8 | buf[23 + 4 * i];
	n = 44 + c[3] * 5 + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0];
	buf[4] = 0;
	put(d, "V1", buf, n);
	setenv("TZDIR", d->path, 1);
	if (fg_tz_load("V1", &tz, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	unsetenv("TZDIR");
	fg_tz_local(tz, utc(2024, 1, 1, 0, 0), &l);
	assert_int_equal(l.utc_offset, 5 * 3600 + 1800);
	assert_string_equal(l.abbr, "IST");
	fg_tz_free(tz);
	put(d, "V1Trailing", buf, n + 1);
	expect_load(d, "V1Trailing", FG_EINVAL, "bytes after the v1 data block");
	free(buf);
}

static void test_bad_files(void **state)
{
	struct fg_test_dir *d = *state;
	size_t len;
	uint8_t *buf, *big;

	if (!have_zoneinfo())
		skip();
	buf = slurp(ZONEINFO "/Europe/London", &len);
	put(d, "Good", buf, len);
	expect_load(d, "Good", 0, NULL);
	put(d, "Truncated", buf, len / 2);
	expect_load(d, "Truncated", FG_EINVAL, "Truncated: byte ");
	put(d, "Short", buf, 20);
	expect_load(d, "Short", FG_EINVAL, "truncated header");
	put(d, "Empty", buf, 0);
	expect_load(d, "Empty", FG_EINVAL, "truncated header");
	put(d, "NoFooterEnd", buf, len - 1);
	expect_load(d, "NoFooterEnd", FG_EINVAL, "footer: no closing newline");
	buf[0] = 'X';
	put(d, "BadMagic", buf, len);
	expect_load(d, "BadMagic", FG_EINVAL, "byte 0: not a TZif file");
	buf[0] = 'T';
	buf[4] = '9';
	put(d, "BadVersion", buf, len);
	expect_load(d, "BadVersion", FG_EINVAL, "unsupported TZif version");
	buf[4] = '2';
	memcpy(buf + len - 8, "XX9\n", 4);    /* inside "M10.5.0\n" */
	put(d, "BadFooter", buf, len - 4);
	expect_load(d, "BadFooter", FG_EINVAL, "footer TZ string");
	free(buf);
	buf = slurp(ZONEINFO "/Europe/London", &len);
	buf[len - 1] = 'x';
	put(d, "Trailing", buf, len);
	buf[len - 1] = '\n';
	expect_load(d, "Trailing", FG_EINVAL, "footer: no closing newline");
	expect_v1(d);
	big = calloc(1, FG_TZ_FILE_MAX + 1);
	assert_non_null(big);
	memcpy(big, buf, len);
	put(d, "Big", big, FG_TZ_FILE_MAX + 1);
	expect_load(d, "Big", FG_ETOOBIG, "larger than");
	free(big);
	free(buf);
}

/* Hand-made v2 files: every field checked. */
static size_t tzif(uint8_t *out, int version, uint32_t timecnt, const int64_t *times, const uint8_t *idx,
                   uint32_t typecnt, const uint8_t *ttinfo, uint32_t charcnt, const char *chars, const char *footer)
{
	uint8_t *p = out;
	uint32_t counts[6] = { 0, 0, 0, timecnt, typecnt, charcnt };

	for (int block = 0; block < 2; block++) {
		memcpy(p, "TZif", 4);
		p[4] = (uint8_t)version;
		memset(p + 5, 0, 15);
		p += 20;
		for (int i = 0; i < 6; i++, p += 4) {
			uint32_t v = block == 0 ? 0 : counts[i];

			if (block == 0 && (i == 4 || i == 5))
				v = 1;
			p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
		}
		if (block == 0) {
			memset(p, 0, 7);          /* one ttinfo and one char */
			p += 7;
			continue;
		}
		for (uint32_t i = 0; i < timecnt; i++, p += 8)
			for (int b = 0; b < 8; b++)
				p[b] = (uint8_t)((uint64_t)times[i] >> (56 - 8 * b));
		memcpy(p, idx, timecnt);
		p += timecnt;
		memcpy(p, ttinfo, 6 * typecnt);
		p += 6 * typecnt;
		memcpy(p, chars, charcnt);
		p += charcnt;
	}
	p += sprintf((char *)p, "\n%s\n", footer);
	return (size_t)(p - out);
}

static void test_bad_fields(void **state)
{
	/* two types: -1h "AAA" and +14h "BBB" */
	uint8_t tt[12] = { 0xff, 0xff, 0xf1, 0xf0, 0, 0, 0, 0, 0xc4, 0xe0, 0, 4 };
	int64_t times[2] = { 0, 1000 };
	uint8_t idx[2] = { 1, 0 };
	uint8_t file[512];
	struct fg_tz *tz = NULL;
	struct fg_tz_local l;
	char err[256];
	size_t n;

	(void)state;
	n = tzif(file, '3', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), 0);
	fg_tz_local(tz, 500, &l);
	assert_int_equal(l.utc_offset, 14 * 3600);
	assert_string_equal(l.abbr, "BBB");
	fg_tz_local(tz, -1, &l);
	assert_int_equal(l.utc_offset, -3600);
	fg_tz_local(tz, 5000, &l);
	assert_int_equal(l.utc_offset, -3600);
	fg_tz_free(tz);
	/* times not ascending */
	times[1] = 0;
	n = tzif(file, '2', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), FG_EINVAL);
	assert_non_null(strstr(err, "not after"));
	times[1] = 1000;
	/* type index out of range */
	idx[0] = 2;
	n = tzif(file, '2', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), FG_EINVAL);
	assert_non_null(strstr(err, "has type 2"));
	idx[0] = 1;
	/* designation not terminated */
	n = tzif(file, '2', 2, times, idx, 2, tt, 7, "AAA\0BBB", "AAA1");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), FG_EINVAL);
	assert_non_null(strstr(err, "not NUL-terminated"));
	/* isdst 2 */
	tt[4] = 2;
	n = tzif(file, '2', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), FG_EINVAL);
	assert_non_null(strstr(err, "isdst"));
	tt[4] = 0;
	/* offset of 26 hours */
	tt[6] = 0, tt[7] = 0x01, tt[8] = 0x6d, tt[9] = 0xa0;
	n = tzif(file, '2', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), FG_EINVAL);
	if (!strstr(err, "beyond 24:59:59"))
		fail_msg("%s", err);
	tt[7] = 0, tt[8] = 0xc4, tt[9] = 0xe0;
	/* a v3 rule time in a v2 file */
	n = tzif(file, '2', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1BBB,M3.5.0/-1,M10.5.0");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), FG_EINVAL);
	assert_non_null(strstr(err, "before TZif v3"));
	n = tzif(file, '3', 2, times, idx, 2, tt, 8, "AAA\0BBB", "AAA1BBB,M3.5.0/-1,M10.5.0");
	assert_int_equal(fg_tz_parse_tzif("Hand", file, n, &tz, err, sizeof(err)), 0);
	fg_tz_free(tz);
}

static void expect_bad_posix(const char *s, const char *msg)
{
	struct fg_tz *tz = (struct fg_tz *)1;
	char err[256] = "";

	assert_int_equal(fg_tz_parse_posix(s, &tz, err, sizeof(err)), FG_EINVAL);
	assert_null(tz);
	if (!strstr(err, msg))
		fail_msg("\"%s\": error \"%s\" lacks \"%s\"", s, err, msg);
}

static void test_posix_errors(void **state)
{
	struct fg_tz *tz;
	struct fg_tz_local l;
	char err[256];

	(void)state;
	expect_bad_posix("", "byte 0: abbreviation of at least 3");
	expect_bad_posix("ES5", "byte 2: abbreviation of at least 3");
	expect_bad_posix("EST", "byte 3: digit expected");
	expect_bad_posix("EST25", "number out of range");
	expect_bad_posix("EST5EDT", "must give its rule");
	expect_bad_posix("EST5EDT,M3.2.0", "rule date expected");
	expect_bad_posix("EST5EDT,M13.2.0,M11.1.0", "byte 11: number out of range");
	expect_bad_posix("EST5EDT,M3.6.0,M11.1.0", "byte 12: number out of range");
	expect_bad_posix("EST5EDT,M3.2.7,M11.1.0", "out of range");
	expect_bad_posix("EST5EDT,J0,J100", "J1..J365");
	expect_bad_posix("EST5EDT,366,J100", "out of range");
	expect_bad_posix("EST5EDT,M3.2.0/168,M11.1.0", "out of range");
	expect_bad_posix("<AB>3", "at least 3");
	expect_bad_posix("<ABC3", "'>' expected");
	expect_bad_posix("EST5 ", "byte 4: abbreviation");
	expect_bad_posix("EST5EDT,M3.2.0,M11.1.0 ", "byte 22: unexpected character");
	expect_bad_posix("EST0005", "number too long");
	/* found by fuzz_tz: the default DST offset, std + 1h, past 24:59:59 */
	expect_bad_posix("EST-24EDT,0/0,3", "DST offset beyond");
	/* DST all year (RFC 8536 3.3.1) */
	assert_int_equal(fg_tz_parse_posix("EST5EDT,0/0,J365/25", &tz, err, sizeof(err)), 0);
	for (int64_t t = Y1900; t < Y2100; t += 86400 * 7 + 3601) {
		fg_tz_local(tz, t, &l);
		assert_int_equal(l.is_dst, 1);
		assert_int_equal(l.utc_offset, -4 * 3600);
	}
	fg_tz_free(tz);
}

static void test_extremes(void **state)
{
	struct fg_tz *tz;
	struct fg_tz_local l;
	char err[256];
	const int64_t probes[] = { INT64_MIN, INT64_MIN + 1, -FG_TZ_TIME_LIMIT, -1, 0, FG_TZ_TIME_LIMIT, INT64_MAX };

	(void)state;
	assert_int_equal(fg_tz_parse_posix("<+0330>-3:30<+0430>,J1/-167,J365/167", &tz, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		fg_tz_local(tz, probes[i], &l);
		assert_true(l.day_start <= l.utc && l.utc < l.next_day_start);
		(void)fg_tz_wall_to_utc(tz, probes[i], INT32_MAX);
		(void)fg_tz_wall_to_utc(tz, probes[i], INT32_MIN);
	}
	fg_tz_free(tz);
	fg_tz_free(NULL);
}

/* Each allocation failed in turn: FG_ENOMEM, nothing returned, nothing leaked. */
static void test_enomem(void **state)
{
	struct fg_tz *tz;
	char err[256];
	long live = mem.live;
	int rc;

	(void)state;
	for (long n = 1;; n++) {
		mem_arm(n);
		rc = fg_tz_parse_posix("EST5EDT,M3.2.0,M11.1.0", &tz, err, sizeof(err));
		mem_arm(0);
		if (rc == 0) {
			fg_tz_free(tz);
			break;
		}
		assert_int_equal(rc, FG_ENOMEM);
		assert_null(tz);
		assert_int_equal(mem.live, live);
	}
	if (!have_zoneinfo())
		skip();
	unsetenv("TZDIR");
	for (long n = 1;; n++) {
		mem_arm(n);
		rc = fg_tz_load("Europe/London", &tz, err, sizeof(err));
		mem_arm(0);
		assert_int_equal(mem.live, live + (rc == 0));
		if (rc == 0) {
			assert_true(n > 2);     /* the file's buffer, then the zone */
			fg_tz_free(tz);
			break;
		}
		assert_int_equal(rc, FG_ENOMEM);
		assert_non_null(strstr(err, "out of memory"));
		assert_null(tz);
	}
}

static int setup_dir(void **state)
{
	return fg_test_dir_new(state, "unused");
}

static int teardown_dir(void **state)
{
	return fg_test_dir_free(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zones_match_glibc),
		cmocka_unit_test(test_posix_match_glibc),
		cmocka_unit_test(test_day_lengths),
		cmocka_unit_test(test_wall_to_utc),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test_setup_teardown(test_bad_files, setup_dir, teardown_dir),
		cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_posix_errors),
		cmocka_unit_test(test_extremes),
		cmocka_unit_test(test_enomem),
	};

	return cmocka_run_group_tests_name("tz", tests, NULL, NULL);
}
