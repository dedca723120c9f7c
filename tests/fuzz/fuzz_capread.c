/*
 * fuzz_capread.c - libFuzzer target for a capture record as the tools read
 * it: the payload unpacked as a feedguard.capture.v1.Record and, format
 * version 2, its delivered messages rebuilt from delivered_from (items
 * found through items_path, put back in the order of the item decisions).
 *
 * Input: one Record's bytes; the harness frames it (length and CRC) into a
 * memfd and reads it with fg_capread_record_at().  Besides "no crash, no
 * leak", a record that reads must keep the promise that a rebuilt page is
 * never longer than the upstream page it comes from: each item at most
 * once, so a hostile file cannot make the reader build more than it holds.
 *
 * Build and run: tests/fuzz/run.sh 60 capread
 */
#define _GNU_SOURCE 1
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fg_bufq.h"
#include "fg_capfile.h"
#include "fg_capread.h"
#include "fg_error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t fh[FG_CAPFILE_FRAME_HEADER_LEN];
	Feedguard__Capture__V1__Record *rec = NULL;
	struct fg_bufq buf;
	int fd, rc;
	size_t i;

	if (size > (1u << 20))
		return 0;
	fd = memfd_create("capread", 0);
	if (fd < 0)
		return 0;
	if (fg_capfile_write_frame_header(fh, data, size) < 0 || write_all(fd, fh, sizeof(fh)) < 0 ||
	    write_all(fd, data, size) < 0) {
		close(fd);
		return 0;
	}
	fg_bufq_init(&buf);
	rc = fg_capread_record_at(fd, 0, &buf, &rec);
	check(rc == 0 || rc == FG_EINVAL || rc == FG_ENOMEM);
	check((rc == 0) == (rec != NULL));
	if (rec && rec->kind_case == FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL) {
		const Feedguard__Capture__V1__Call *c = rec->call;
		for (i = 0; i < c->n_delivered_from; i++) {
			const Feedguard__Capture__V1__DeliveredFrom *f = c->delivered_from[i];
			check(f->delivered < c->n_delivered_response && f->upstream < c->n_upstream_response);
			check(c->delivered_response[f->delivered].len <= c->upstream_response[f->upstream].len);
		}
	}
	if (rec)
		feedguard__capture__v1__record__free_unpacked(rec, NULL);
	fg_bufq_free(&buf);
	close(fd);
	return 0;
}
