/*
 * fg_tz.h - IANA time zones, loaded once from the system's compiled
 * zoneinfo and queried from any thread.
 *
 * glibc converts to local time only through the process-wide TZ (tzset,
 * localtime_r), which a multi-threaded daemon cannot switch per call.  So
 * the main thread loads each zone a policy names, at config or policy load,
 * into an immutable struct fg_tz; workers then ask it without locks,
 * allocation or global state.  Nothing here calls localtime, mktime or
 * tzset.
 *
 * Input: a TZif file (RFC 8536, versions 1 to 4; the 64-bit data block of
 * v2+, and the footer's POSIX TZ string for instants after the last
 * transition, with the v3 extensions: rule times from -167h to +167h).
 * The file is hostile input: every count, index, offset and designation is
 * checked, its size is bounded, and a zone name cannot leave the zoneinfo
 * directory.  Leap-second files ("right/...") are refused: feedguard counts
 * POSIX time.
 *
 * Semantics follow RFC 8536: before the first transition the zone is in
 * time type 0; from the last transition on, the footer's rule (or, with an
 * empty footer or a v1 file, the last transition's type).  A POSIX rule
 * whose DST covers a whole year ("0/0,J365/25") is DST all year, as in
 * tzcode.  Instants are clamped to +-FG_TZ_TIME_LIMIT seconds.
 */
#ifndef FG_TZ_H
#define FG_TZ_H

#include <stddef.h>
#include <stdint.h>

#define FG_TZ_NAME_MAX 64             /* "America/Argentina/ComodRivadavia" is 32 */
#define FG_TZ_POSIX_MAX 128           /* a POSIX TZ string, footer or standalone */
#define FG_TZ_ABBR_MAX 16             /* "BST", "+0530", "<-03>" without the brackets */
#define FG_TZ_FILE_MAX (256 * 1024)   /* the largest tzdata 2025 file is under 4 KiB */
#define FG_TZ_TIME_LIMIT (INT64_C(1) << 50)   /* seconds: about 35 million years */
#define FG_TZ_DEFAULT_DIR "/usr/share/zoneinfo"
#define FG_TZ_DAY 86400

struct fg_tz;

/* One instant seen in one zone.  Every field is filled. */
struct fg_tz_local {
	int64_t utc;             /* the instant, after clamping */
	int32_t utc_offset;      /* seconds east of UTC (London summer: 3600) */
	int is_dst;              /* 1 in daylight saving time, else 0 */
	const char *abbr;        /* "BST": borrowed from the zone, lives as long as it */
	int64_t year;            /* proleptic Gregorian, astronomical (0 is 1 BC) */
	int month;               /* 1..12 */
	int day;                 /* 1..31 */
	int weekday;             /* 0 Sunday .. 6 Saturday */
	int hour, minute, second;
	int64_t day_number;      /* local date as days since 1970-01-01 (a key for "today") */
	int32_t sec_of_day;      /* wall clock seconds since 00:00: hour * 3600 + minute * 60 + second;
	                          * the time elapsed since the day began is utc - day_start */
	int64_t day_start;       /* UTC of the first instant whose local date is this date */
	int64_t next_day_start;  /* UTC of the first instant after <utc> whose local date is later */
};

/*
 * fg_tz_load - load zone <name> ("Europe/London", "UTC") from the zoneinfo
 * directory: $TZDIR if set, else FG_TZ_DEFAULT_DIR.  <name> is 1 to
 * FG_TZ_NAME_MAX of [A-Za-z0-9_+-/], not starting or ending with '/', with
 * no empty component and no "..": a policy or a request cannot make this
 * open a file outside the directory.  The file must be a regular file of
 * at most FG_TZ_FILE_MAX bytes.
 * On success *<out> is returned owned (fg_tz_free).  Returns 0, FG_EINVAL
 * (bad name, or a malformed file), FG_ENOTFOUND (no such zone), FG_ETOOBIG,
 * FG_EIO (errno kept) or FG_ENOMEM; <err> (<errlen> bytes, may be 0) gets
 * the name and what is wrong, with the byte offset for a malformed file.
 * Reads getenv("TZDIR") and the file system: main thread, at load time.
 */
int fg_tz_load(const char *name, struct fg_tz **out, char *err, size_t errlen);

/*
 * fg_tz_parse_tzif - the zone in the <len> TZif bytes at <buf> (borrowed),
 * named <name> (at most FG_TZ_NAME_MAX bytes, kept as a copy).  Same
 * returns and <err> as fg_tz_load, without FG_ENOTFOUND and FG_EIO.  Any
 * thread.
 */
int fg_tz_parse_tzif(const char *name, const void *buf, size_t len, struct fg_tz **out, char *err,
                     size_t errlen);

/*
 * fg_tz_parse_posix - a zone made of the POSIX TZ string <rule> alone
 * ("EST5EDT,M3.2.0,M11.1.0", at most FG_TZ_POSIX_MAX bytes; the TZif
 * footer grammar of RFC 8536 3.3 with the v3 extensions: a zone with DST
 * must give its rule).  Its name is <rule>.  Returns 0, FG_EINVAL (with
 * the byte offset in <err>) or FG_ENOMEM.  Any thread.
 */
int fg_tz_parse_posix(const char *rule, struct fg_tz **out, char *err, size_t errlen);

/* fg_tz_free - NULL is a no-op. */
void fg_tz_free(struct fg_tz *tz);

/* fg_tz_name - the name <tz> was loaded under; lives as long as <tz>. */
const char *fg_tz_name(const struct fg_tz *tz);

/*
 * fg_tz_local - <utc_seconds> (POSIX time) in zone <tz>, into <out>.
 * day_start <= utc < next_day_start always holds, so a day lasts 23 or 25
 * hours around DST changes (24 + 0.5 on Lord Howe Island).  When a DST
 * change is at midnight, day_start is when the date begins: 01:00 on a day
 * that starts by springing forward from 24:00.  In the rare zone whose
 * clocks went back across midnight, the repeated part belongs to the
 * earlier date again, and next_day_start is the next time the later date
 * begins.  Any thread; no allocation, no lock.
 */
void fg_tz_local(const struct fg_tz *tz, int64_t utc_seconds, struct fg_tz_local *out);

/*
 * fg_tz_wall_to_utc - the UTC instant at which the wall clock of <tz>
 * first reads <wall_seconds> (seconds after 00:00; 24 * 3600 is the next
 * midnight) on local date <day_number> (days since 1970-01-01), or a later
 * time on that date: the earliest instant whose local time is at or after
 * it.  So, for quiet hours "22:00 to 07:00" of a day d: start at
 * (d, 22h), end at (d + 1, 7h).
 *   - In a gap (spring forward: 01:30 in London on the last Sunday of
 *     March) it is the first valid instant after it, the change itself
 *     (01:00 UTC, 02:00 BST).
 *   - In an overlap (fall back: 01:30 on the last Sunday of October) it is
 *     the first occurrence (00:30 UTC, 01:30 BST).
 *   - On a date the zone skipped (Pacific/Apia, 2011-12-30) it is the
 *     first instant of the next date.
 * <day_number> is clamped to the dates of +-FG_TZ_TIME_LIMIT (plus two
 * days), so nothing overflows.  Any thread; no allocation, no lock.
 */
int64_t fg_tz_wall_to_utc(const struct fg_tz *tz, int64_t day_number, int32_t wall_seconds);

#endif /* FG_TZ_H */
