/* test_grpc.c - the stateless gRPC helpers, through fg_grpc.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "fg_error.h"
#include "fg_grpc.h"

static int64_t timeout_of(const char *v)
{
	int64_t us = -1;
	assert_int_equal(fg_grpc_parse_timeout(v, strlen(v), &us), 0);
	return us;
}

static void test_grpc_timeout_units(void **state)
{
	assert_int_equal(timeout_of("1H"), INT64_C(3600000000));
	assert_int_equal(timeout_of("2M"), INT64_C(120000000));
	assert_int_equal(timeout_of("3S"), 3000000);
	assert_int_equal(timeout_of("250m"), 250000);
	assert_int_equal(timeout_of("7u"), 7);
	/* nanoseconds round up: a deadline must never collapse to zero */
	assert_int_equal(timeout_of("1n"), 1);
	assert_int_equal(timeout_of("1500n"), 2);
	assert_int_equal(timeout_of("99999999H"), INT64_C(99999999) * INT64_C(3600000000));
}

static void test_grpc_timeout_rejects(void **state)
{
	static const char *const bad[] = { "", "S", "10", "123456789S", "1s", "1.5S", "-1S", "1 S", "1SS" };
	int64_t us;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(fg_grpc_parse_timeout(bad[i], strlen(bad[i]), &us), FG_EINVAL);
}

static void test_grpc_timeout_format_roundtrip(void **state)
{
	static const int64_t values[] = { 1, 999, 1000, 250000, 3000000, 99999999, 100000000,
	                                  INT64_C(86400000000), INT64_C(99999999) * 3600000000 };
	char buf[32];
	size_t i, n;
	int64_t back;

	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		n = fg_grpc_format_timeout(values[i], buf, sizeof(buf));
		assert_true(n >= 2 && n <= FG_GRPC_TIMEOUT_MAX_DIGITS + 1);
		assert_int_equal(fg_grpc_parse_timeout(buf, n, &back), 0);
		/* never shorter than asked, and exact when the unit allows */
		assert_true(back >= values[i]);
	}
	n = fg_grpc_format_timeout(250000, buf, sizeof(buf));
	assert_string_equal(buf, "250000u");
	n = fg_grpc_format_timeout(INT64_C(86400000000), buf, sizeof(buf));
	assert_string_equal(buf, "86400000m");
}

static void test_grpc_percent_encode(void **state)
{
	char buf[64];

	assert_int_equal(fg_grpc_percent_encode("plain text", buf, sizeof(buf)), 10);
	assert_string_equal(buf, "plain text");
	fg_grpc_percent_encode("100% ok\n", buf, sizeof(buf));
	assert_string_equal(buf, "100%25 ok%0A");
	fg_grpc_percent_encode("\xc3\xa9", buf, sizeof(buf));
	assert_string_equal(buf, "%C3%A9");
	/* an escape is never split by the end of the buffer */
	fg_grpc_percent_encode("ab\xc3", buf, 5);
	assert_string_equal(buf, "ab");
}

static void test_grpc_status_names(void **state)
{
	assert_string_equal(fg_grpc_status_name(0), "OK");
	assert_string_equal(fg_grpc_status_name(14), "UNAVAILABLE");
	assert_string_equal(fg_grpc_status_name(16), "UNAUTHENTICATED");
	assert_string_equal(fg_grpc_status_name(17), "UNKNOWN");
	assert_string_equal(fg_grpc_status_name(-1), "UNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grpc_timeout_units),
		cmocka_unit_test(test_grpc_timeout_rejects),
		cmocka_unit_test(test_grpc_timeout_format_roundtrip),
		cmocka_unit_test(test_grpc_percent_encode),
		cmocka_unit_test(test_grpc_status_names),
	};
	return cmocka_run_group_tests_name("grpc", tests, NULL, NULL);
}
