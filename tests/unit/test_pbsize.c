/*
 * test_pbsize.c - fg_pbsize.h: what protobuf-c would allocate, counted
 * before decoding, and what cannot be counted refused.  Each hostile case
 * is one a review or an attack run found: the count must stop it before
 * protobuf-c grows.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "capture.pb-c.h"
#include "descriptor.pb-c.h"
#include "fg_error.h"
#include "fg_pbsize.h"
#include "fg_pbwire.h"

#define REC (&feedguard__capture__v1__record__descriptor)
#define MIB ((uint64_t)1 << 20)

/* Field <num> length-delimited around the <len> bytes at <in>, into a new buffer. */
static uint8_t *wrap(uint8_t *in, size_t len, unsigned num, size_t *out)
{
	uint8_t *o = malloc(len + 16);
	size_t n;

	assert_non_null(o);
	n = fg_pbwire_write_varint(o, (uint64_t)num << 3 | 2);
	n += fg_pbwire_write_varint(o + n, len);
	memcpy(o + n, in, len);
	*out = n + len;
	free(in);
	return o;
}

/* A Record's Call of <n> empty request messages (Call.request = 9, bytes). */
static uint8_t *empty_requests(size_t n, size_t *len)
{
	uint8_t *b = malloc(2 * n + 1);
	size_t i;

	assert_non_null(b);
	for (i = 0; i < n; i++) {
		b[2 * i] = 9 << 3 | 2;
		b[2 * i + 1] = 0;
	}
	return wrap(b, 2 * n, 2, len);
}

static void test_within_and_over(void **state)
{
	size_t len;
	uint8_t *b = empty_requests(1000, &len);

	(void)state;
	assert_int_equal(fg_pbsize_check(REC, b, len, MIB), 0);
	free(b);
	/* 2 bytes each: a pointer, a binary struct, a scan record */
	b = empty_requests(4u << 20, &len);
	assert_int_equal(fg_pbsize_check(REC, b, len, 256 * MIB), FG_ETOOBIG);
	free(b);
}

/* protobuf-c takes a 10-byte varint past 64 bits (it only asks that it
 * end); the count's reader does not, and used to stop counting there
 * while protobuf-c decoded the rest: refused. */
static void test_a_varint_the_count_cannot_read(void **state)
{
	uint8_t call[32] = { 12 << 3 }, *b = malloc(64);
	size_t n = 1, len;

	(void)state;
	memset(call + n, 0xff, 9);
	n += 9;
	call[n++] = 0x7f;
	assert_non_null(b);
	memcpy(b, call, n);
	b = wrap(b, n, 2, &len);
	assert_int_equal(fg_pbsize_check(REC, b, len, 256 * MIB), FG_EINVAL);
	free(b);
}

/* A message field that is not repeated, twice: protobuf-c merges the
 * second into the first, copying its arrays each time (40,000 repeats of
 * Call.decisions took 8.9 s): refused. */
static void test_a_message_field_twice(void **state)
{
	uint8_t call[] = { 15 << 3 | 2, 0, 15 << 3 | 2, 0 };     /* Call.decisions, twice */
	uint8_t *b = malloc(sizeof(call));
	size_t len;

	(void)state;
	assert_non_null(b);
	memcpy(b, call, 2);
	b = wrap(b, 2, 2, &len);
	assert_int_equal(fg_pbsize_check(REC, b, len, MIB), 0);
	free(b);
	b = malloc(sizeof(call));
	assert_non_null(b);
	memcpy(b, call, sizeof(call));
	b = wrap(b, sizeof(call), 2, &len);
	assert_int_equal(fg_pbsize_check(REC, b, len, MIB), FG_EINVAL);
	free(b);
}

/* Past FG_PBSIZE_MAX_DEPTH the count used to stop counting (and
 * protobuf-c did not): refused. */
static void test_nesting_past_the_depth(void **state)
{
	const ProtobufCMessageDescriptor *set = &google__protobuf__file_descriptor_set__descriptor;
	uint8_t *b = malloc(1);
	size_t len = 0, k;

	(void)state;
	assert_non_null(b);
	/* FileDescriptorSet.file(1) > FileDescriptorProto.message_type(4) >
	 * DescriptorProto.nested_type(3) ... */
	for (k = 0; k < FG_PBSIZE_MAX_DEPTH + 1; k++)
		b = wrap(b, len, 3, &len);
	b = wrap(b, len, 4, &len);
	b = wrap(b, len, 1, &len);
	assert_int_equal(fg_pbsize_check(set, b, len, 256 * MIB), FG_EINVAL);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_within_and_over),
		cmocka_unit_test(test_a_varint_the_count_cannot_read),
		cmocka_unit_test(test_a_message_field_twice),
		cmocka_unit_test(test_nesting_past_the_depth),
	};

	return cmocka_run_group_tests_name("pbsize", tests, NULL, NULL);
}
