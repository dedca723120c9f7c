/*
 * test_capout.c - the capture writer's output file, through fg_capout.h,
 * read back with fg_capfile's reader: direct and plain files hold the same
 * frames, a reader following an open file never sees corruption, and a
 * write that fails leaves the file ending at a whole frame with the frames
 * after it counted lost.
 *
 * Files go into a mkdtemp directory under /tmp (fg_testutil.h); direct
 * mode is checked where that file system has O_DIRECT, plain mode by
 * FG_CAPOUT_F_PLAIN.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "fg_capfile.h"
#include "fg_capout.h"
#include "fg_error.h"
#include "fg_testutil.h"

#define ERRLEN 256

static uint8_t byte_of(size_t k, size_t i)
{
	return (uint8_t)(k * 31 + i * 7 + (k >> 8) + 1);
}

/* Frame <i> of <len> payload bytes, appended with its header. */
static int append(struct fg_capout *o, size_t i, size_t len, uint64_t *lost)
{
	uint8_t hdr[FG_CAPFILE_FRAME_HEADER_LEN], *p = malloc(len ? len : 1);
	struct iovec iov[2];
	size_t k;
	int rc;

	assert_non_null(p);
	for (k = 0; k < len; k++)
		p[k] = byte_of(k, i);
	assert_int_equal(fg_capfile_write_frame_header(hdr, p, len), 0);
	iov[0] = (struct iovec){ .iov_base = hdr, .iov_len = sizeof(hdr) };
	iov[1] = (struct iovec){ .iov_base = p, .iov_len = len };
	rc = fg_capout_frames(o, iov, 1, lost);
	free(p);
	return rc;
}

static void open_out(struct fg_capout *o, const char *path, unsigned flags)
{
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN];

	fg_capfile_write_file_header(hdr);
	assert_int_equal(fg_capout_open(o, path, 0640, flags, hdr, sizeof(hdr)), 0);
}

/* The frames of <path> in order, checked byte by byte against <lens>;
 * the count read, and the reader's last verdict in <*last>. */
static size_t read_back(const char *path, const size_t *lens, size_t n, int *last)
{
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	char err[ERRLEN];
	size_t i = 0, k;
	int rc;

	assert_int_equal(fg_capfile_reader_open(path, 0, &r, err, sizeof(err)), 0);
	while ((rc = fg_capfile_reader_next(r, &rec, err, sizeof(err))) == FG_CAPFILE_RECORD) {
		assert_true(i < n);
		assert_int_equal(rec.len, lens[i]);
		for (k = 0; k < rec.len; k++)
			if (rec.data[k] != byte_of(k, i))
				fail_msg("frame %zu byte %zu differs", i, k);
		i++;
	}
	*last = rc;
	fg_capfile_reader_free(r);
	return i;
}

/* Sizes around the block and the chunk: tiny, odd, one larger than the
 * buffer (written in pieces). */
static size_t size_of(size_t i)
{
	static const size_t sizes[] = { 0, 1, 4079, 4088, 4096, 26372, 3 * FG_CAPOUT_CHUNK / 2, 17, 65536 };

	return sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
}

static void frames_read_back(const char *path, unsigned flags, int want_direct)
{
	struct fg_capout o;
	size_t lens[40], i;
	uint64_t lost;
	int last;

	open_out(&o, path, flags);
	if (want_direct >= 0)
		assert_int_equal(fg_capout_direct(&o), want_direct);
	for (i = 0; i < 40; i++) {
		lens[i] = size_of(i);
		assert_int_equal(append(&o, i, lens[i], &lost), 0);
		assert_int_equal(lost, 0);
	}
	/* open and shown: a reader sees every frame, then the end */
	assert_int_equal(fg_capout_show(&o, &lost), 0);
	assert_int_equal(read_back(path, lens, 40, &last), 40);
	assert_int_equal(last, FG_CAPFILE_END);
	assert_int_equal(fg_capout_close(&o, &lost), 0);
	assert_int_equal(read_back(path, lens, 40, &last), 40);
	assert_int_equal(last, FG_CAPFILE_END);
}

static int direct_here(const char *dir)
{
	char path[300];
	struct fg_capout o;
	uint64_t lost;
	int d;

	snprintf(path, sizeof(path), "%s/probe", dir);
	open_out(&o, path, 0);
	d = fg_capout_direct(&o);
	fg_capout_close(&o, &lost);
	unlink(path);
	return d;
}

static void test_capout_direct_and_plain_hold_the_same_frames(void **state)
{
	struct fg_test_dir *d = *state;
	char path[300];

	snprintf(path, sizeof(path), "%s/direct", d->path);
	frames_read_back(path, 0, direct_here(d->path) ? 1 : -1);
	snprintf(path, sizeof(path), "%s/plain", d->path);
	frames_read_back(path, FG_CAPOUT_F_PLAIN, 0);
	if (!direct_here(d->path))
		print_message("note: %s has no O_DIRECT; direct mode not exercised\n", d->path);
}

/* Before a show, a reader of a direct file sees whole frames and at most a
 * frame cut at a block boundary: a torn tail, never corruption. */
static void test_capout_reader_before_show_sees_no_corruption(void **state)
{
	struct fg_test_dir *d = *state;
	struct fg_capout o;
	size_t lens[200], i, got;
	uint64_t lost;
	int last;

	open_out(&o, d->file, 0);
	for (i = 0; i < 200; i++) {
		lens[i] = 1000 + (i * 37) % 900;
		assert_int_equal(append(&o, i, lens[i], &lost), 0);
		got = read_back(d->file, lens, i + 1, &last);
		assert_true(last == FG_CAPFILE_END || last == FG_CAPFILE_TORN);
		assert_true(got <= i + 1);
		/* what is not shown yet is under one block */
		assert_true(o.end - (o.base + o.shown) < FG_CAPOUT_BLOCK || !fg_capout_direct(&o));
	}
	assert_int_equal(fg_capout_close(&o, &lost), 0);
	assert_int_equal(read_back(d->file, lens, 200, &last), 200);
	assert_int_equal(last, FG_CAPFILE_END);
}

/* More tiny frames than the pending table holds: shown on the way. */
static void test_capout_many_tiny_frames(void **state)
{
	struct fg_test_dir *d = *state;
	enum { N = 3 * FG_CAPOUT_PENDING };
	static size_t lens[N];
	struct fg_capout o;
	uint64_t lost;
	size_t i;
	int last;

	open_out(&o, d->file, 0);
	for (i = 0; i < N; i++) {
		lens[i] = i % 3;
		assert_int_equal(append(&o, i, lens[i], &lost), 0);
	}
	assert_int_equal(fg_capout_close(&o, &lost), 0);
	assert_int_equal(read_back(d->file, lens, N, &last), N);
	assert_int_equal(last, FG_CAPFILE_END);
}

/* A file that cannot grow (RLIMIT_FSIZE, as a full disk would): it ends
 * at its last whole frame, and every frame appended is either on it or
 * counted lost. */
static void fsize_limit(const char *path, unsigned flags, rlim_t limit, size_t len, int shows)
{
	struct rlimit was, lim;
	struct fg_capout o;
	size_t lens[64], i, on_file;
	uint64_t lost = 0, lost_close = 0;
	struct stat st;
	int last, rc = 0;

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
	lim = was;
	lim.rlim_cur = limit;
	open_out(&o, path, flags);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	for (i = 0; i < 64 && rc == 0; i++) {
		lens[i] = len + i;
		rc = append(&o, i, lens[i], &lost);
		if (rc == 0 && shows)
			rc = fg_capout_show(&o, &lost);   /* as the writer does when idle */
	}
	assert_int_equal(rc, FG_EIO);
	assert_int_equal(fg_capout_frames(&o, NULL, 0, &lost_close), FG_EIO); /* only close may follow */
	assert_int_equal(fg_capout_close(&o, &lost_close), 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
	on_file = read_back(path, lens, i, &last);
	assert_int_equal(last, FG_CAPFILE_END);         /* a whole frame ends it */
	assert_int_equal(on_file + lost, i);
	assert_true(on_file > 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true((uint64_t)st.st_size <= limit);
}

static void test_capout_write_failure_ends_at_a_whole_frame(void **state)
{
	struct fg_test_dir *d = *state;
	char path[300];

	signal(SIGXFSZ, SIG_IGN);
	snprintf(path, sizeof(path), "%s/direct", d->path);
	fsize_limit(path, 0, 300 * 1024, 20000, 1);
	snprintf(path, sizeof(path), "%s/plain", d->path);
	fsize_limit(path, FG_CAPOUT_F_PLAIN, 300 * 1024 + 123, 20000, 1);
	/* direct, without shows: the limit inside a block's direct write,
	 * frames of the buffer's tail lost with it */
	snprintf(path, sizeof(path), "%s/direct2", d->path);
	fsize_limit(path, 0, 2 * 1024 * 1024 + 5000, 50000, 0);
	/* frames larger than the buffer, cut inside one */
	snprintf(path, sizeof(path), "%s/direct3", d->path);
	fsize_limit(path, 0, 5 * 1024 * 1024 + 77, 3 * FG_CAPOUT_CHUNK / 2, 0);
}

static void test_capout_open_existing_fails(void **state)
{
	struct fg_test_dir *d = *state;
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN];
	struct fg_capout o;

	fg_test_write_file(d->file, "x", 1);
	fg_capfile_write_file_header(hdr);
	assert_int_equal(fg_capout_open(&o, d->file, 0640, 0, hdr, sizeof(hdr)), FG_EIO);
	assert_int_equal(errno, EEXIST);
	assert_int_equal(o.fd, -1);
}

static int setup(void **state)
{
	return fg_test_dir_new(state, "cap.fgcap");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_capout_direct_and_plain_hold_the_same_frames, setup, fg_test_dir_free),
		cmocka_unit_test_setup_teardown(test_capout_reader_before_show_sees_no_corruption, setup, fg_test_dir_free),
		cmocka_unit_test_setup_teardown(test_capout_many_tiny_frames, setup, fg_test_dir_free),
		cmocka_unit_test_setup_teardown(test_capout_write_failure_ends_at_a_whole_frame, setup, fg_test_dir_free),
		cmocka_unit_test_setup_teardown(test_capout_open_existing_fails, setup, fg_test_dir_free),
	};

	return cmocka_run_group_tests_name("capout", tests, NULL, NULL);
}
