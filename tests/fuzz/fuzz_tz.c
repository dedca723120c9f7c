/*
 * fuzz_tz.c - libFuzzer target for the TZif parser and the POSIX TZ string
 * parser of fg_tz.h, and for the lookups on whatever they accept.
 *
 * Each input is parsed twice: as a TZif file (fg_tz_parse_tzif) and, up
 * to its first NUL, as a POSIX TZ string (fg_tz_parse_posix).  A rejected
 * input must come with an error message.  On an accepted zone, instants
 * across the whole range (and one taken from the input) must keep the
 * promises of fg_tz.h:
 *   - day_start <= utc < next_day_start;
 *   - the local fields are in range and agree with sec_of_day;
 *   - the offset is within 24:59:59 and the abbreviation is short;
 *   - fg_tz_wall_to_utc of the instant's own local date and time is not
 *     later than the instant (it is the earliest such instant).
 *
 * Build (after configure, for config.h):
 *   clang -g -std=c11 -fsanitize=fuzzer,address,undefined -I. -Idaemon \
 *     tests/fuzz/fuzz_tz.c daemon/fg_tz.c daemon/fg_tz_rule.c
 * Run:   ./fuzz_tz -max_total_time=60 new_corpus_dir tests/fuzz/corpus/tz
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_tz.h"

#define OFFSET_MAX (24 * 3600 + 59 * 60 + 59)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int64_t probes[] = {
	INT64_MIN, -FG_TZ_TIME_LIMIT - 1, -(INT64_C(1) << 59), INT64_C(-2208988800), -1, 0,
	INT64_C(2147483647), INT64_C(4102444800), INT64_C(1) << 40, FG_TZ_TIME_LIMIT, INT64_MAX,
};

static void check(int ok)
{
	if (!ok)
		abort();
}

static void probe(const struct fg_tz *tz, int64_t t)
{
	struct fg_tz_local l;

	fg_tz_local(tz, t, &l);
	check(l.day_start <= l.utc && l.utc < l.next_day_start);
	check(l.utc_offset >= -OFFSET_MAX && l.utc_offset <= OFFSET_MAX);
	check(l.is_dst == 0 || l.is_dst == 1);
	check(l.abbr && strlen(l.abbr) <= FG_TZ_ABBR_MAX);
	check(l.month >= 1 && l.month <= 12 && l.day >= 1 && l.day <= 31 && l.weekday >= 0 && l.weekday <= 6);
	check(l.hour >= 0 && l.hour < 24 && l.minute >= 0 && l.minute < 60 && l.second >= 0 && l.second < 60);
	check(l.sec_of_day == l.hour * 3600 + l.minute * 60 + l.second);
	check(fg_tz_wall_to_utc(tz, l.day_number, l.sec_of_day) <= l.utc);
	/* the edges of the day, and the wall-clock helper on odd input */
	fg_tz_local(tz, l.day_start, &l);
	fg_tz_local(tz, l.next_day_start - 1, &l);
	(void)fg_tz_wall_to_utc(tz, l.day_number, INT32_MAX);
	(void)fg_tz_wall_to_utc(tz, INT64_MIN, INT32_MIN);
}

static void probe_all(const struct fg_tz *tz, const uint8_t *data, size_t size)
{
	int64_t t = 0;

	check(fg_tz_name(tz) != NULL);
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		probe(tz, probes[i]);
	if (size >= sizeof(t)) {
		memcpy(&t, data + size - sizeof(t), sizeof(t));
		probe(tz, t);
		probe(tz, t >> 16);     /* within a few thousand years of 1970 */
		probe(tz, t >> 30);     /* within a few decades */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_tz *tz = NULL;
	char err[256] = "";
	char *s;

	if (fg_tz_parse_tzif("fuzz", data, size, &tz, err, sizeof(err)) == 0) {
		probe_all(tz, data, size);
		fg_tz_free(tz);
	} else {
		check(tz == NULL && err[0] != '\0');
	}
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	err[0] = '\0';
	if (fg_tz_parse_posix(s, &tz, err, sizeof(err)) == 0) {
		probe_all(tz, data, size);
		fg_tz_free(tz);
	} else {
		check(tz == NULL && err[0] != '\0');
	}
	free(s);
	return 0;
}
