/*
 * test_capture.c - the capture writer (fg_capture.h): records from worker
 * rings reach files whole and in order, the byte budget holds, a full ring
 * drops and counts, rotation by size and on reopen, retention by total
 * size, a reload that turns capture off; read back with fg_capread.h.
 *
 * Each test has its own mkdtemp directory (fg_testutil.h) as
 * capture.directory; waits poll the files with a deadline, never sleep a
 * fixed time.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
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

#include "fg_bufq.h"
#include "fg_capread.h"
#include "fg_capture.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_testutil.h"

#define WAIT_MS 5000

/* pthread_create is wrapped (-Wl,--wrap) so a test can make the writer
 * thread fail to start, as it may when the process is out of threads. */
static int thread_create_fails;
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
	if (thread_create_fails)
		return EAGAIN;
	return __real_pthread_create(t, a, fn, arg);
}

static struct fg_config *config(const struct fg_test_dir *d, const char *extra)
{
	char text[2048], key[160], err[512];
	struct fg_config *cfg = NULL;
	FILE *f;

	snprintf(key, sizeof(key), "%s/cap.key", d->path);
	if (access(key, R_OK) != 0) {
		assert_non_null(f = fopen(key, "w"));
		fputs("0123456789abcdef0123456789abcdef", f);
		fclose(f);
	}
	snprintf(text, sizeof(text),
	         "upstream: {address: \"127.0.0.1:1\"}\nadmin: {listen: \"off\"}\n"
	         "capture: {directory: \"%s\", key: {id: k1, file: cap.key}, sample: 1%s}\n", d->path, extra);
	if (fg_config_load_string("t.yaml", d->path, text, strlen(text), &cfg, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return cfg;
}

/* A Record holding a Call with method <m> and start <t>, in the bytes a
 * capture stage queues. */
static void record(struct fg_bufq *q, const char *m, int64_t t, size_t pad)
{
	Feedguard__Capture__V1__Record r = FEEDGUARD__CAPTURE__V1__RECORD__INIT;
	Feedguard__Capture__V1__Call c = FEEDGUARD__CAPTURE__V1__CALL__INIT;
	ProtobufCBinaryData msg;
	size_t n;

	msg.len = pad;
	msg.data = calloc(1, pad ? pad : 1);
	c.method = (char *)m;
	c.start_unix_ms = t;
	c.n_request = 1;
	c.request = &msg;
	r.kind_case = FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL;
	r.call = &c;
	n = feedguard__capture__v1__record__get_packed_size(&r);
	fg_bufq_init(q);
	assert_int_equal(fg_bufq_reserve(q, n), 0);
	feedguard__capture__v1__record__pack(&r, fg_bufq_tail(q));
	fg_bufq_commit(q, n);
	free(msg.data);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Files of <dir> whose name ends in <suffix>, sorted; their count. */
static size_t files(const char *dir, const char *suffix, char names[][256], size_t max)
{
	struct dirent *e;
	size_t n = 0;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name), s = strlen(suffix);
		if (strncmp(e->d_name, "feedguard-", 10) == 0 && l > s && strcmp(e->d_name + l - s, suffix) == 0 &&
		    n < max)
			snprintf(names[n++], 256, "%s/%s", dir, e->d_name);
	}
	closedir(d);
	qsort(names, n, 256, (int (*)(const void *, const void *))strcmp);
	return n;
}

/* Calls in <path> (FileInfo first, then Calls), their starts into <t>. */
static size_t calls_in(const char *path, int64_t *t, size_t max)
{
	Feedguard__Capture__V1__Record *rec;
	struct fg_capread *r;
	char err[256];
	size_t n = 0, k = 0;
	int rc;

	assert_int_equal(fg_capread_open(&r, path, 0, err, sizeof(err)), 0);
	while ((rc = fg_capread_next(r, &rec, err, sizeof(err))) == FG_CAPREAD_RECORD) {
		if (k++ == 0) {
			assert_int_equal(rec->kind_case, FEEDGUARD__CAPTURE__V1__RECORD__KIND_FILE_INFO);
			assert_string_equal(rec->file_info->capture_key_id, "k1");
			continue;
		}
		assert_int_equal(rec->kind_case, FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL);
		if (n < max)
			t[n] = rec->call->start_unix_ms;
		n++;
	}
	assert_int_equal(rc, FG_CAPREAD_END);
	fg_capread_free(r);
	return n;
}

static uint64_t counter(const struct fg_capture *c, size_t off)
{
	return __atomic_load_n((const uint64_t *)((const char *)fg_capture_counters(c) + off), __ATOMIC_RELAXED);
}

#define COUNT(c, field) counter(c, offsetof(struct fg_capture_counters, field))

static void wait_records(const struct fg_capture *c, uint64_t n)
{
	int64_t until = now_ms() + WAIT_MS;

	while (COUNT(c, records) < n && now_ms() < until)
		usleep(2000);
	assert_true(COUNT(c, records) >= n);
}

static int setup(void **state)
{
	return fg_test_dir_new(state, "unused");
}

static int teardown(void **state)
{
	return fg_test_dir_free(state);
}

/* Two workers' records reach one file, each worker's in its order; the
 * budget is back to zero once they are written. */
static void test_records_in_order(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *cfg = config(d, "");
	struct fg_capture *c;
	struct fg_capture_ring *r0, *r1;
	char names[8][256];
	int64_t t[64];
	struct fg_bufq q;
	size_t i, n;

	assert_int_equal(fg_capture_new(&c, 2), 0);
	assert_int_equal(fg_capture_configure(c, cfg), 0);
	assert_non_null(r0 = fg_capture_attach(c, 0));
	assert_non_null(r1 = fg_capture_attach(c, 1));
	assert_null(fg_capture_attach(c, 2));
	for (i = 0; i < 20; i++) {
		record(&q, "/a.B/C", (int64_t)i, 10);
		assert_int_equal(fg_capture_reserve(c, 100, cfg->capture.queue), 0);
		assert_int_equal(fg_capture_submit(i % 2 ? r1 : r0, &q, 100), 0);
		assert_int_equal(fg_bufq_len(&q), 0);
	}
	wait_records(c, 20);
	assert_int_equal(COUNT(c, held), 0);
	assert_int_equal(files(d->path, ".fgcap.open", names, 8), 1);
	n = calls_in(names[0], t, 64);
	assert_int_equal(n, 20);
	/* per worker in order: evens before later evens, odds likewise */
	for (i = 2; i < n; i++) {
		size_t j;
		for (j = 0; j < i; j++)
			if (t[j] % 2 == t[i] % 2)
				assert_true(t[j] < t[i]);
	}
	fg_capture_free(c);
	/* closed at the end: renamed without .open */
	assert_int_equal(files(d->path, ".fgcap.open", names, 8), 0);
	assert_int_equal(files(d->path, ".fgcap", names, 8), 1);
	fg_config_unref(cfg);
}

/* The budget: nothing past capture.queue is counted, and release gives
 * it back. */
static void test_budget(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *cfg = config(d, ", queue: 1MiB, max_record_size: 4KiB");
	struct fg_capture *c;

	assert_int_equal(fg_capture_new(&c, 1), 0);
	assert_int_equal(fg_capture_reserve(c, 1 << 20, cfg->capture.queue), 0);
	assert_int_equal(fg_capture_reserve(c, 1, cfg->capture.queue), FG_ETOOBIG);
	assert_int_equal(COUNT(c, held), 1 << 20);
	fg_capture_release(c, 1 << 20);
	assert_int_equal(COUNT(c, held), 0);
	assert_int_equal(fg_capture_reserve(c, UINT64_MAX, UINT64_MAX), 0);
	assert_int_equal(fg_capture_reserve(c, 2, UINT64_MAX), FG_ETOOBIG);    /* no wrap */
	fg_capture_release(c, UINT64_MAX);
	fg_capture_free(c);
	fg_config_unref(cfg);
}

/* A ring that is full drops the record, counts it and gives its bytes
 * back (no writer runs: nothing is configured). */
static void test_ring_full(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *cfg = config(d, "");
	struct fg_capture *c;
	struct fg_capture_ring *r;
	struct fg_bufq q;
	uint64_t kept = 0;
	int rc, i;

	assert_int_equal(fg_capture_new(&c, 1), 0);
	assert_non_null(r = fg_capture_attach(c, 0));
	for (i = 0; i < 5000; i++) {
		record(&q, "/a.B/C", i, 0);
		assert_int_equal(fg_capture_reserve(c, 10, cfg->capture.queue), 0);
		rc = fg_capture_submit(r, &q, 10);
		kept += rc == 0;
		assert_true(rc == 0 || rc == FG_EBUSY);
		assert_int_equal(fg_bufq_len(&q), 0);
	}
	assert_true(kept < 5000);
	assert_int_equal(COUNT(c, dropped[FG_CAPTURE_DROP_QUEUE_FULL]), 5000 - kept);
	assert_int_equal(COUNT(c, held), kept * 10);
	/* a tool takes them back out (replay's use) */
	for (i = 0; fg_capture_take(c, &q); i++)
		;
	fg_bufq_free(&q);
	assert_int_equal(i, kept);
	assert_int_equal(COUNT(c, held), 0);
	fg_capture_free(c);
	fg_config_unref(cfg);
}

/* rotate_size closes files as they fill; reopen closes the current one;
 * max_total_size deletes the oldest closed ones. */
static void test_rotation_and_retention(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *cfg = config(d, ", rotate_size: 64KiB");
	struct fg_capture *c;
	struct fg_capture_ring *r;
	char names[64][256];
	struct fg_bufq q;
	size_t closed, total = 0, i;
	int64_t t[1];

	assert_int_equal(fg_capture_new(&c, 1), 0);
	assert_int_equal(fg_capture_configure(c, cfg), 0);
	assert_non_null(r = fg_capture_attach(c, 0));
	for (i = 0; i < 40; i++) {
		record(&q, "/a.B/C", (int64_t)i, 8000);
		assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	}
	wait_records(c, 40);
	closed = files(d->path, ".fgcap", names, 64);
	assert_true(closed >= 4);                       /* 40 x 8 KB in 64 KiB files */
	for (i = 0; i < closed; i++)
		total += calls_in(names[i], t, 0);
	assert_int_equal(files(d->path, ".fgcap.open", names, 64), 1);
	total += calls_in(names[0], t, 0);
	assert_int_equal(total, 40);
	assert_true(COUNT(c, files[FG_CAPTURE_FILE_ROTATED]) >= closed);

	/* reopen: the open file is closed at once, the next record starts one */
	fg_capture_reopen(c);
	{
		int64_t until = now_ms() + WAIT_MS;
		while (files(d->path, ".fgcap.open", names, 64) != 0 && now_ms() < until)
			usleep(2000);
	}
	assert_int_equal(files(d->path, ".fgcap.open", names, 64), 0);
	record(&q, "/a.B/C", 99, 10);
	assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	wait_records(c, 41);
	assert_int_equal(files(d->path, ".fgcap.open", names, 64), 1);
	fg_capture_free(c);
	fg_config_unref(cfg);

	/* retention by size, at the next start (the check runs when capture
	 * turns on): the oldest closed files go until the rest fit */
	cfg = config(d, ", rotate_size: 64KiB, max_total_size: 1MiB");
	assert_int_equal(fg_capture_new(&c, 1), 0);
	assert_int_equal(fg_capture_configure(c, cfg), 0);
	assert_non_null(r = fg_capture_attach(c, 0));
	for (i = 0; i < 200; i++) {
		record(&q, "/a.B/C", (int64_t)i, 8000);
		while (fg_capture_submit(r, &q, 0) < 0)
			record(&q, "/a.B/C", (int64_t)i, 8000);
	}
	wait_records(c, 200);
	fg_capture_reopen(c);                           /* closing a file runs retention too */
	record(&q, "/a.B/C", 1000, 10);
	assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	wait_records(c, 201);
	{
		int64_t until = now_ms() + WAIT_MS;
		while (COUNT(c, files[FG_CAPTURE_FILE_DELETED]) == 0 && now_ms() < until)
			usleep(2000);
	}
	assert_true(COUNT(c, files[FG_CAPTURE_FILE_DELETED]) > 0);
	{
		uint64_t sum = 0;
		struct stat st;
		closed = files(d->path, ".fgcap", names, 64);
		for (i = 0; i < closed; i++)
			if (stat(names[i], &st) == 0)
				sum += (uint64_t)st.st_size;
		assert_true(sum <= (1u << 20));
	}
	fg_capture_free(c);
	fg_config_unref(cfg);
}

/* A reload with capture off: records queued after it are dropped and
 * counted; the file is closed. */
static void test_configure_off(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *on = config(d, ""), *off;
	char err[256], names[8][256];
	const char *text = "upstream: {address: \"127.0.0.1:1\"}\nadmin: {listen: \"off\"}\n";
	struct fg_capture *c;
	struct fg_capture_ring *r;
	struct fg_bufq q;
	int64_t until;

	assert_int_equal(fg_config_load_string("t.yaml", d->path, text, strlen(text), &off, err, sizeof(err)), 0);
	assert_int_equal(fg_capture_new(&c, 1), 0);
	assert_int_equal(fg_capture_configure(c, on), 0);
	assert_non_null(r = fg_capture_attach(c, 0));
	record(&q, "/a.B/C", 1, 10);
	assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	wait_records(c, 1);
	assert_int_equal(fg_capture_configure(c, off), 0);
	until = now_ms() + WAIT_MS;
	while (files(d->path, ".fgcap.open", names, 8) != 0 && now_ms() < until)
		usleep(2000);
	assert_int_equal(files(d->path, ".fgcap.open", names, 8), 0);
	record(&q, "/a.B/C", 2, 10);
	assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	until = now_ms() + WAIT_MS;
	while (COUNT(c, dropped[FG_CAPTURE_DROP_WRITE_ERROR]) == 0 && now_ms() < until)
		usleep(2000);
	assert_int_equal(COUNT(c, dropped[FG_CAPTURE_DROP_WRITE_ERROR]), 1);
	assert_int_equal(COUNT(c, records), 1);
	fg_capture_free(c);
	fg_config_unref(on);
	fg_config_unref(off);
}

/* A writer thread that cannot start leaves nothing to empty the rings:
 * records are dropped and counted at once (nothing held), and a later
 * configure that starts it writes again. */
static void test_writer_that_cannot_start(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *cfg = config(d, "");
	struct fg_capture *c;
	struct fg_capture_ring *r;
	struct fg_bufq q;
	int i;

	assert_int_equal(fg_capture_new(&c, 1), 0);
	thread_create_fails = 1;
	assert_int_equal(fg_capture_configure(c, cfg), FG_EIO);
	thread_create_fails = 0;
	assert_non_null(r = fg_capture_attach(c, 0));
	for (i = 0; i < 100; i++) {
		record(&q, "/a.B/C", i, 0);
		assert_int_equal(fg_capture_reserve(c, 10, cfg->capture.queue), 0);
		assert_int_equal(fg_capture_submit(r, &q, 10), FG_EUNAVAIL);
		assert_int_equal(fg_bufq_len(&q), 0);
	}
	assert_int_equal(COUNT(c, dropped[FG_CAPTURE_DROP_WRITE_ERROR]), 100);
	assert_int_equal(COUNT(c, held), 0);
	assert_false(fg_capture_take(c, &q));           /* nothing sits in the ring */
	/* the next reload starts it */
	assert_int_equal(fg_capture_configure(c, cfg), 0);
	record(&q, "/a.B/C", 100, 0);
	assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	wait_records(c, 1);
	fg_bufq_free(&q);
	fg_capture_free(c);
	fg_config_unref(cfg);
}

/* Written records' buffers come back to the worker that queued them, for
 * its next records: empty, their memory kept; at most 64 wait, and one
 * over 32 KiB is freed instead.  Buffers still waiting when capture is
 * freed are freed with it (the sanitizer and valgrind runs see a leak). */
static void test_written_buffers_come_back(void **state)
{
	const struct fg_test_dir *d = *state;
	struct fg_config *cfg = config(d, "");
	struct fg_capture *c;
	struct fg_capture_ring *r;
	struct fg_bufq q, s = { 0 };
	size_t i, n = 0;

	assert_int_equal(fg_capture_new(&c, 1), 0);
	assert_int_equal(fg_capture_configure(c, cfg), 0);
	assert_non_null(r = fg_capture_attach(c, 0));
	assert_int_equal(fg_capture_spare(r, &s), 0);   /* none yet */
	assert_null(s.data);
	for (i = 0; i < 101; i++) {
		record(&q, "/a.B/C", (int64_t)i, 100);
		/* one buffer of 64 KiB, then 100 of 16 KiB */
		assert_int_equal(fg_bufq_reserve(&q, (i == 0 ? 64 : 16) * 1024 - fg_bufq_len(&q)), 0);
		assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	}
	wait_records(c, 101);
	while (fg_capture_spare(r, &s)) {
		assert_int_equal(fg_bufq_len(&s), 0);
		assert_true(s.cap >= 16 * 1024 && s.cap <= 32 * 1024);
		n++;
	}
	assert_int_equal(n, 64);
	assert_non_null(s.data);                        /* the last one taken, untouched by the miss */
	fg_bufq_free(&s);
	for (i = 0; i < 5; i++) {
		record(&q, "/a.B/C", (int64_t)(200 + i), 100);
		assert_int_equal(fg_capture_submit(r, &q, 0), 0);
	}
	wait_records(c, 106);
	fg_capture_free(c);
	fg_config_unref(cfg);
}

/*
 * What a Record would take unpacked is counted before decoding, every field
 * occurrence's scan record included: 31 million repeats of one scalar
 * (Call.status, 2 bytes each) took 1 GB in the tools before those were
 * counted (an attack run).  5 million are refused now; a Record of a few
 * fields is not.
 */
static void test_unpack_counts_every_occurrence(void **state)
{
	size_t reps = 5u << 20, n = 0, i;
	uint8_t *buf = malloc(2 * reps + 16), *call;
	Feedguard__Capture__V1__Record *rec = NULL;
	const char *why = NULL;

	(void)state;
	assert_non_null(buf);
	call = buf + 6;
	for (i = 0; i < reps; i++) {
		call[2 * i] = 12 << 3;      /* Call.status, varint */
		call[2 * i + 1] = 0;
	}
	/* Record.call (field 2, length-delimited), a 5-byte varint length */
	buf[n++] = 2 << 3 | 2;
	buf[n++] = (uint8_t)(0x80 | ((2 * reps) & 0x7f));
	buf[n++] = (uint8_t)(0x80 | ((2 * reps) >> 7 & 0x7f));
	buf[n++] = (uint8_t)(0x80 | ((2 * reps) >> 14 & 0x7f));
	buf[n++] = (uint8_t)(0x80 | ((2 * reps) >> 21 & 0x7f));
	buf[n++] = (uint8_t)((2 * reps) >> 28);
	assert_int_equal(fg_capread_unpack(n + 2 * reps, buf, &rec, &why), FG_EINVAL);
	assert_null(rec);
	assert_non_null(strstr(why, "256 MiB unpacked"));
	/* a few occurrences unpack */
	buf[1] = 8;
	memmove(buf + 2, call, 8);
	assert_int_equal(fg_capread_unpack(2 + 8, buf, &rec, &why), 0);
	assert_non_null(rec);
	assert_int_equal(rec->kind_case, FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL);
	feedguard__capture__v1__record__free_unpacked(rec, NULL);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_records_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_and_retention, setup, teardown),
		cmocka_unit_test_setup_teardown(test_configure_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_that_cannot_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_written_buffers_come_back, setup, teardown),
		cmocka_unit_test(test_unpack_counts_every_occurrence),
	};

	return cmocka_run_group_tests_name("capture", tests, NULL, NULL);
}
