/* test_hdrs.c - header lists, through fg_hdrs.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fg_hdrs.h"

static void add(struct fg_hdrs *h, const char *name, const char *value)
{
	assert_int_equal(fg_hdrs_add(h, (const uint8_t *)name, strlen(name), (const uint8_t *)value,
	                             strlen(value), 0), 0);
}

static void test_hdrs_order_and_nv(void **state)
{
	struct fg_hdrs h;
	nghttp2_nv *nv;
	char name[16];
	int i;

	fg_hdrs_init(&h);
	/* enough headers to force both arrays to grow several times */
	for (i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "x-h%d", i);
		add(&h, name, i % 2 ? "odd" : "even-value-that-is-longer");
	}
	nv = fg_hdrs_nv(&h);
	assert_non_null(nv);
	assert_int_equal(h.n, 200);
	for (i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "x-h%d", i);
		assert_int_equal(nv[i].namelen, strlen(name));
		assert_memory_equal(nv[i].name, name, nv[i].namelen);
		if (i % 2)
			assert_memory_equal(nv[i].value, "odd", 3);
	}
	fg_hdrs_free(&h);
}

static void test_hdrs_binary_values_and_find(void **state)
{
	static const uint8_t bin[] = { 0, 1, 0xff, '\n' };
	struct fg_hdrs h;
	const char *v;
	size_t len;

	fg_hdrs_init(&h);
	assert_null(fg_hdrs_nv(&h));
	add(&h, ":path", "/a.B/C");
	assert_int_equal(fg_hdrs_add(&h, (const uint8_t *)"x-raw", 5, bin, sizeof(bin), NGHTTP2_NV_FLAG_NO_INDEX), 0);
	v = fg_hdrs_find(&h, "x-raw", &len);
	assert_non_null(v);
	assert_int_equal(len, sizeof(bin));
	assert_memory_equal(v, bin, sizeof(bin));
	assert_int_equal(fg_hdrs_nv(&h)[1].flags, NGHTTP2_NV_FLAG_NO_INDEX);
	assert_null(fg_hdrs_find(&h, "x-ra", &len));
	assert_null(fg_hdrs_find(&h, "missing", &len));
	fg_hdrs_free(&h);
}

static void test_hdrs_list_size_and_reset(void **state)
{
	struct fg_hdrs h;
	size_t len;

	fg_hdrs_init(&h);
	add(&h, "ab", "cde");
	add(&h, "f", "");
	/* RFC 9113 §6.5.2: octets + 32 per field */
	assert_int_equal(h.list_size, (2 + 3 + 32) + (1 + 0 + 32));
	fg_hdrs_reset(&h);
	assert_int_equal(h.n, 0);
	assert_int_equal(h.list_size, 0);
	assert_null(fg_hdrs_find(&h, "ab", &len));
	add(&h, "ab", "z");
	assert_memory_equal(fg_hdrs_find(&h, "ab", &len), "z", 1);
	fg_hdrs_free(&h);
	fg_hdrs_free(&h); /* freeing twice is harmless: free leaves an empty list */
}

/* Every copy of a name goes, the rest keep their order and size. */
static void test_hdrs_remove(void **state)
{
	struct fg_hdrs h;
	nghttp2_nv *nv;
	size_t len;

	(void)state;
	fg_hdrs_init(&h);
	add(&h, "x-a", "1");
	add(&h, "feedguard-notice", "forged");
	add(&h, "x-b", "2");
	add(&h, "feedguard-notice", "again");
	assert_int_equal(fg_hdrs_remove(&h, "feedguard-notice"), 2);
	assert_int_equal(fg_hdrs_remove(&h, "missing"), 0);
	assert_int_equal(h.n, 2);
	assert_int_equal(h.list_size, (3 + 1 + 32) * 2);
	assert_null(fg_hdrs_find(&h, "feedguard-notice", &len));
	nv = fg_hdrs_nv(&h);
	assert_non_null(nv);
	assert_memory_equal(nv[0].name, "x-a", 3);
	assert_memory_equal(nv[1].name, "x-b", 3);
	assert_memory_equal(nv[1].value, "2", 1);
	add(&h, "x-c", "3");
	assert_memory_equal(fg_hdrs_find(&h, "x-c", &len), "3", 1);
	fg_hdrs_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdrs_order_and_nv),
		cmocka_unit_test(test_hdrs_binary_values_and_find),
		cmocka_unit_test(test_hdrs_list_size_and_reset),
		cmocka_unit_test(test_hdrs_remove),
	};
	return cmocka_run_group_tests_name("hdrs", tests, NULL, NULL);
}
