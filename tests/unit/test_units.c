/*
 * test_units.c - cmocka group "units": fg_units.h through its header.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fg_error.h"
#include "fg_fmt.h"
#include "fg_units.h"

static void expect_duration(const char *text, int64_t want)
{
	const char *why = "untouched";
	int64_t got = -12345;

	assert_int_equal(fg_units_parse_duration(text, &got, &why), 0);
	assert_true(got == want);
	assert_string_equal(why, "untouched");
}

static void expect_duration_error(const char *text, int rc, const char *why_want)
{
	const char *why = NULL;
	int64_t got = -12345;

	assert_int_equal(fg_units_parse_duration(text, &got, &why), rc);
	assert_string_equal(why, why_want);
	assert_true(got == -12345);
}

static void expect_size(const char *text, uint64_t want)
{
	uint64_t got = 12345;

	assert_int_equal(fg_units_parse_size(text, &got, NULL), 0);
	assert_true(got == want);
}

static void expect_size_error(const char *text, int rc, const char *why_want)
{
	const char *why = NULL;
	uint64_t got = 12345;

	assert_int_equal(fg_units_parse_size(text, &got, &why), rc);
	assert_string_equal(why, why_want);
	assert_true(got == 12345);
}

static void test_duration_units(void **state)
{
	expect_duration("0s", 0);
	expect_duration("10us", 10);
	expect_duration("250ms", 250000);
	expect_duration("2s", 2000000);
	expect_duration("5m", 300000000);
	expect_duration("1h", 3600000000LL);
	expect_duration("007s", 7000000);
}

static void test_duration_fractions(void **state)
{
	expect_duration("1.5s", 1500000);
	expect_duration("0.25h", 900000000LL);
	expect_duration("1.5m", 90000000);
	expect_duration("1.001s", 1001000);
	expect_duration("0.000001s", 1);
	expect_duration("1.5ms", 1500);
	/* zeros past the last microsecond are exact, so they are fine */
	expect_duration("1.0000000000s", 1000000);
	expect_duration("2.00us", 2);
}

static void test_duration_limits(void **state)
{
	expect_duration("9223372036854775807us", INT64_MAX);
	expect_duration("2562047788h", 2562047788LL * 3600000000LL);
	expect_duration_error("9223372036854775808us", FG_ETOOBIG, "too large");
	expect_duration_error("2562047789h", FG_ETOOBIG, "too large");
	expect_duration_error("99999999999999999999999s", FG_ETOOBIG, "too large");
	/* the fraction pushes it over */
	expect_duration_error("9223372036854.775808s", FG_ETOOBIG, "too large");
	expect_duration("9223372036854.775807s", INT64_MAX);
}

static void test_duration_errors(void **state)
{
	expect_duration_error("", FG_EINVAL, "expected digits");
	expect_duration_error("s", FG_EINVAL, "expected digits");
	expect_duration_error("-1s", FG_EINVAL, "expected digits");
	expect_duration_error(" 1s", FG_EINVAL, "expected digits");
	expect_duration_error(".5s", FG_EINVAL, "expected digits");
	expect_duration_error("0", FG_EINVAL, "missing unit (use us, ms, s, m, h or d)");
	expect_duration_error("30", FG_EINVAL, "missing unit (use us, ms, s, m, h or d)");
	expect_duration_error("5x", FG_EINVAL, "unknown unit (use us, ms, s, m, h or d)");
	expect_duration_error("5S", FG_EINVAL, "unknown unit (use us, ms, s, m, h or d)");
	expect_duration_error("1s ", FG_EINVAL, "unknown unit (use us, ms, s, m, h or d)");
	expect_duration_error("1.5.5s", FG_EINVAL, "unknown unit (use us, ms, s, m, h or d)");
	expect_duration_error("1w", FG_EINVAL, "unknown unit (use us, ms, s, m, h or d)");
	expect_duration_error("1.s", FG_EINVAL, "expected digits after '.'");
	expect_duration_error("1.5us", FG_EINVAL, "finer than 1us");
	expect_duration_error("0.0000001s", FG_EINVAL, "finer than 1us");
	/* a syntax error wins over an overflow */
	expect_duration_error("99999999999999999999999x", FG_EINVAL,
	                      "unknown unit (use us, ms, s, m, h or d)");
}

static void test_duration_why_may_be_null(void **state)
{
	int64_t v;

	assert_int_equal(fg_units_parse_duration("5x", &v, NULL), FG_EINVAL);
	assert_int_equal(fg_units_parse_duration("99999999999999999999h", &v, NULL), FG_ETOOBIG);
}

static void test_size_good(void **state)
{
	expect_size("0B", 0);
	expect_size("1B", 1);
	expect_size("1KiB", 1024);
	expect_size("64KiB", 65536);
	expect_size("4MiB", 4194304);
	expect_size("1GiB", 1073741824);
	expect_size("18446744073709551615B", UINT64_MAX);
	expect_size("17179869183GiB", 17179869183ULL << 30);
}

static void test_size_errors(void **state)
{
	expect_size_error("", FG_EINVAL, "expected digits");
	expect_size_error("KiB", FG_EINVAL, "expected digits");
	expect_size_error("-1B", FG_EINVAL, "expected digits");
	expect_size_error("64", FG_EINVAL, "missing unit (use B, KiB, MiB or GiB)");
	expect_size_error("64KB", FG_EINVAL, "unknown unit (use B, KiB, MiB or GiB)");
	expect_size_error("64kib", FG_EINVAL, "unknown unit (use B, KiB, MiB or GiB)");
	expect_size_error("1TiB", FG_EINVAL, "unknown unit (use B, KiB, MiB or GiB)");
	expect_size_error("1.5MiB", FG_EINVAL, "sizes are whole numbers (write 1536KiB, not 1.5MiB)");
	expect_size_error("1.MiB", FG_EINVAL, "expected digits after '.'");
	expect_size_error("18446744073709551616B", FG_ETOOBIG, "too large");
	expect_size_error("17179869184GiB", FG_ETOOBIG, "too large");
}

static void expect_format(int64_t usec, const char *want)
{
	char buf[32];

	memset(buf, 'x', sizeof(buf));
	assert_ptr_equal(fg_units_format_duration(usec, buf, sizeof(buf)), buf);
	assert_string_equal(buf, want);
}

static void test_format(void **state)
{
	expect_format(0, "0s");
	expect_format(1, "1us");
	expect_format(1500, "1500us");
	expect_format(250000, "250ms");
	expect_format(1500000, "1500ms");
	expect_format(2000000, "2s");
	expect_format(90000000, "90s");
	expect_format(300000000, "5m");
	expect_format(7200000000LL, "2h");
	expect_format(-5000000, "-5s");
	expect_format(INT64_MAX, "9223372036854775807us");
	expect_format(INT64_MIN, "-9223372036854775808us");
}

static void test_format_truncates(void **state)
{
	char buf[8] = "xxxxxxx";

	fg_units_format_duration(250000, buf, 4);
	assert_string_equal(buf, "250");
	fg_units_format_duration(250000, buf, 1);
	assert_string_equal(buf, "");
	memcpy(buf, "keep", 5);
	fg_units_format_duration(250000, buf, 0);
	assert_string_equal(buf, "keep");
}

/* What the formatter writes, the parser reads back to the same value. */
static void test_format_round_trip(void **state)
{
	static const int64_t values[] = {
		0, 1, 999, 1000, 1001, 59000000, 60000000, 61000000, 3599999999LL,
		3600000000LL, 86400000000LL, INT64_MAX,
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		int64_t back = -1;

		fg_units_format_duration(values[i], buf, sizeof(buf));
		assert_int_equal(fg_units_parse_duration(buf, &back, NULL), 0);
		assert_true(back == values[i]);
	}
}

/* fg_fmt.h: decimal without printf, against printf. */
static void test_fmt_integers(void **state)
{
	static const int64_t cases[] = { 0, 1, -1, 9, 10, 99, 100, 1768478400000, INT64_MAX, INT64_MIN, -42 };
	char got[FG_FMT_I64_MAX], want[32];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(want, sizeof(want), "%lld", (long long)cases[i]);
		assert_int_equal(fg_fmt_i64(got, cases[i]), strlen(want));
		assert_string_equal(got, want);
	}
	assert_int_equal(fg_fmt_u64(got, UINT64_MAX), 20);
	assert_string_equal(got, "18446744073709551615");
	/* Each digit count's edges: the length comes before the digits. */
	for (uint64_t p = 10; p <= 10000000000000000000ULL; p *= 10) {
		for (uint64_t v = p - 1; v <= p; v++) {
			snprintf(want, sizeof(want), "%llu", (unsigned long long)v);
			assert_int_equal(fg_fmt_u64(got, v), strlen(want));
			assert_string_equal(got, want);
		}
		if (p == 10000000000000000000ULL)
			break;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration_units),
		cmocka_unit_test(test_duration_fractions),
		cmocka_unit_test(test_duration_limits),
		cmocka_unit_test(test_duration_errors),
		cmocka_unit_test(test_duration_why_may_be_null),
		cmocka_unit_test(test_size_good),
		cmocka_unit_test(test_size_errors),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_truncates),
		cmocka_unit_test(test_format_round_trip),
		cmocka_unit_test(test_fmt_integers),
	};

	return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
