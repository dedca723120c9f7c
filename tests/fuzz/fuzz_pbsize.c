/*
 * fuzz_pbsize.c - libFuzzer target for fg_pbsize_check, against what
 * protobuf-c really asks for.
 *
 * Input: one byte choosing the descriptor (even: a capture Record; odd: a
 * FileDescriptorSet), then the message's bytes.  Property: when the count
 * takes the bytes (within 1 MiB), protobuf-c's unpack, through an
 * allocator that keeps the peak of live bytes, never holds more than the
 * count (the least budget the check passes).  A review found three ways past an earlier count (a
 * varint protobuf-c takes and the count's reader does not, nesting past
 * its depth, merges of a message field seen twice); this keeps the count
 * an upper bound.
 *
 * Build and run: tests/fuzz/run.sh 60 pbsize
 */
#define _GNU_SOURCE 1
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "capture.pb-c.h"
#include "descriptor.pb-c.h"
#include "fg_pbsize.h"

#define BUDGET ((uint64_t)1 << 20)
#define HDR 16          /* the block's size, kept in front of it */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t live, peak;

static void *count_alloc(void *ad, size_t n)
{
	uint8_t *p = malloc(n + HDR);

	(void)ad;
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof(n));
	live += n;
	if (live > peak)
		peak = live;
	return p + HDR;
}

static void count_free(void *ad, void *q)
{
	size_t n;

	(void)ad;
	if (!q)
		return;
	memcpy(&n, (uint8_t *)q - HDR, sizeof(n));
	live -= n;
	free((uint8_t *)q - HDR);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ProtobufCAllocator a = { count_alloc, count_free, NULL };
	const ProtobufCMessageDescriptor *d;
	ProtobufCMessage *m;

	if (size < 1)
		return 0;
	d = data[0] & 1 ? &google__protobuf__file_descriptor_set__descriptor
	                : &feedguard__capture__v1__record__descriptor;
	uint64_t lo = 0, hi = BUDGET, mid;

	if (fg_pbsize_check(d, data + 1, size - 1, BUDGET) != 0)
		return 0;
	/* the count itself: the least budget the check passes */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (fg_pbsize_check(d, data + 1, size - 1, mid) == 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	live = peak = 0;
	m = protobuf_c_message_unpack(d, &a, size - 1, data + 1);
	if (m)
		protobuf_c_message_free_unpacked(m, &a);
	if (peak > lo || live != 0)
		abort();
	return 0;
}
