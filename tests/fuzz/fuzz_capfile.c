/*
 * fuzz_capfile.c - libFuzzer target for the capture file's parser and
 * reader.
 *
 * Input: the bytes of a whole capture file.  Besides "no crash, no leak"
 * it checks the promises of fg_capfile.h:
 *   - the pure parser, walking the input as a whole file (F_EOF), gives a
 *     header, then records, then a clean end, a torn tail or corruption,
 *     and never NEED_MORE or CHECK_TAIL; every record has a CRC that zlib
 *     agrees with, lies inside the input, is framed again by
 *     fg_capfile_append() into exactly the input's bytes, and moves the
 *     position forward;
 *   - judged on shorter windows without F_EOF, a frame is NEED_MORE (asking
 *     for more than it was given), CHECK_TAIL (where the whole file says
 *     torn or corrupt) or the whole file's own verdict: more bytes never
 *     change a RECORD or an FG_EINVAL;
 *   - the reader over the input (a memfd) returns the same records at the
 *     same offsets and ends as the walk did (END, TORN or FG_EINVAL);
 *   - the reader with FOLLOW, over the input appended in pieces, returns
 *     the same records too and ends with AGAIN where the walk is torn, or
 *     stopped at a frame whose length runs past the end (damaged in a
 *     whole file, the rest still to come in a growing one).
 * The input is libFuzzer's own buffer of exactly its size, so ASan sees a
 * read past the end of the "file".
 *
 * Build and run: tests/fuzz/run.sh 60 capfile
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "fg_capfile.h"
#include "fg_error.h"

#define MAX_PIECES 8
/* Windows judged before each frame: every length up to this, and a few
 * around the frame's end. */
#define SMALL_WINDOWS 24

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What walking the input as a whole file found. */
struct walk {
	size_t *offs;                   /* offset of each record's frame */
	size_t n;                       /* records */
	int end;                        /* 0 (clean end), FG_CAPFILE_TORN or FG_EINVAL */
	size_t at;                      /* where the walk stopped */
	int past_end;                   /* it stopped at a frame whose length runs past the end */
};

static void check(int ok)
{
	if (!ok)
		abort();
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void check_record(const uint8_t *p, size_t avail, const struct fg_capfile_frame *f)
{
	uLong crc = crc32(0L, p, 4);
	struct fg_bufq b = { 0 };

	check(f->payload == p + FG_CAPFILE_FRAME_HEADER_LEN);
	check(f->len <= FG_CAPFILE_MAX_RECORD && f->len == le32(p));
	check(f->frame_len == FG_CAPFILE_FRAME_HEADER_LEN + (size_t)f->len && f->frame_len <= avail);
	if (f->len)
		crc = crc32(crc, f->payload, f->len);
	check((uint32_t)crc == le32(p + 4));
	check(fg_capfile_append(&b, f->payload, f->len) == 0);
	check(fg_bufq_len(&b) == f->frame_len && memcmp(fg_bufq_head(&b), p, f->frame_len) == 0);
	fg_bufq_free(&b);
}

/* The frame at <p> judged on the first <k> of its <avail> bytes without
 * F_EOF, against its verdict <rc>/<whole> on all of them with F_EOF. */
static void check_window(const uint8_t *p, size_t k, int rc, const struct fg_capfile_frame *whole)
{
	struct fg_capfile_frame f;
	int r = fg_capfile_parse_frame(p, k, 0, &f);

	switch (r) {
	case FG_CAPFILE_NEED_MORE:
		check(f.need > k && f.need <= FG_CAPFILE_MAX_FRAME + 1);
		break;
	case FG_CAPFILE_CHECK_TAIL:
		check(rc == FG_CAPFILE_TORN || rc == FG_EINVAL);
		check(k > FG_CAPFILE_FRAME_HEADER_LEN && f.why != NULL);
		break;
	case FG_CAPFILE_RECORD:
		check(rc == r && f.len == whole->len && f.frame_len == whole->frame_len);
		break;
	case FG_EINVAL:
		check(rc == r && f.why != NULL);
		break;
	default:
		abort();
	}
	/* a shorter file: never anything but a verdict */
	r = fg_capfile_parse_frame(p, k, FG_CAPFILE_F_EOF, &f);
	check(r == FG_CAPFILE_RECORD || r == FG_CAPFILE_TORN || r == FG_EINVAL);
}

static void check_windows(const uint8_t *p, size_t avail, int rc, const struct fg_capfile_frame *whole)
{
	size_t k, end = 0;

	/* the declared end, when there is a length and it is trusted */
	if (avail >= FG_CAPFILE_FRAME_HEADER_LEN && le32(p) <= FG_CAPFILE_MAX_RECORD)
		end = FG_CAPFILE_FRAME_HEADER_LEN + (size_t)le32(p);

	for (k = 0; k <= avail && k <= SMALL_WINDOWS; k++)
		check_window(p, k, rc, whole);
	for (k = end ? end - 1 : 0; end && k <= end + 1 && k <= avail; k++)
		check_window(p, k, rc, whole);
	if (avail > 0)
		check_window(p, avail - 1, rc, whole);
	check_window(p, avail, rc, whole);
}

static void walk_file(const uint8_t *data, size_t size, struct walk *w)
{
	struct fg_capfile_frame f;
	size_t pos = FG_CAPFILE_FILE_HEADER_LEN;
	int rc;

	rc = fg_capfile_parse_file_header(data, size, FG_CAPFILE_F_EOF, NULL, NULL);
	check(rc == FG_CAPFILE_HEADER || rc == FG_CAPFILE_TORN || rc == FG_EINVAL);
	w->at = 0;
	if (rc != FG_CAPFILE_HEADER) {
		w->end = rc;
		return;
	}
	w->offs = malloc((size / FG_CAPFILE_FRAME_HEADER_LEN + 1) * sizeof(*w->offs));
	check(w->offs != NULL);
	for (;;) {
		w->at = pos;
		if (pos == size) {
			w->end = 0;
			return;
		}
		rc = fg_capfile_parse_frame(data + pos, size - pos, FG_CAPFILE_F_EOF, &f);
		check_windows(data + pos, size - pos, rc, &f);
		if (rc != FG_CAPFILE_RECORD) {
			check((rc == FG_CAPFILE_TORN || rc == FG_EINVAL) && f.why != NULL);
			w->end = rc;
			/* a length running past the end with frames behind it: damaged
			 * in a whole file, the rest still to come in a growing one */
			w->past_end = size - pos >= FG_CAPFILE_FRAME_HEADER_LEN && le32(data + pos) <= FG_CAPFILE_MAX_RECORD &&
			              FG_CAPFILE_FRAME_HEADER_LEN + (size_t)le32(data + pos) > size - pos;
			/* the same frame in a file that may grow is torn, never damaged */
			check(!w->past_end || fg_capfile_parse_frame(data + pos, size - pos,
			                                            FG_CAPFILE_F_EOF | FG_CAPFILE_F_FOLLOW, &f) ==
			                          FG_CAPFILE_TORN);
			return;
		}
		check_record(data + pos, size - pos, &f);
		w->offs[w->n++] = pos;
		pos += f.frame_len;
		check(pos > w->at && pos <= size);
	}
}

static void check_reader_record(const uint8_t *data, const struct walk *w, size_t i,
                                const struct fg_capfile_record *rec)
{
	check(i < w->n && rec->offset == w->offs[i]);
	check(rec->len == le32(data + w->offs[i]));
	check(rec->len == 0 || memcmp(rec->data, data + w->offs[i] + FG_CAPFILE_FRAME_HEADER_LEN, rec->len) == 0);
}

/* The reader's last code where the walk ended as <w> says. */
static int reader_end(const struct walk *w, unsigned flags)
{
	if (w->end == 0)
		return FG_CAPFILE_END;
	if ((w->end == FG_CAPFILE_TORN || w->past_end) && (flags & FG_CAPFILE_F_FOLLOW))
		return FG_CAPFILE_AGAIN;
	return w->end;
}

static void run_reader(int fd, const uint8_t *data, size_t size, const struct walk *w)
{
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	size_t i = 0;
	int rc;

	check(ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0);
	check(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
	check(fg_capfile_reader_open_fd(fd, 0, &r) == 0);
	while ((rc = fg_capfile_reader_next(r, &rec, NULL, 0)) == FG_CAPFILE_RECORD)
		check_reader_record(data, w, i++, &rec);
	check(i == w->n && rc == reader_end(w, 0));
	check(fg_capfile_reader_offset(r) == w->at && fg_capfile_reader_records(r) == w->n);
	/* sticky */
	check(fg_capfile_reader_next(r, &rec, NULL, 0) == rc);
	fg_capfile_reader_free(r);
}

/* The input appended in pieces (cut where a cheap hash of it says) to a
 * file a FOLLOW reader reads after each piece. */
static void run_follower(int fd, const uint8_t *data, size_t size, const struct walk *w)
{
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	uint32_t h = (uint32_t)crc32(0L, data, (uInt)size) | 1;
	size_t i = 0, from = 0, to, piece;
	char err[160];
	int rc;

	check(ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0);
	check(fg_capfile_reader_open_fd(fd, FG_CAPFILE_F_FOLLOW, &r) == 0);
	for (piece = 0; piece < MAX_PIECES; piece++) {
		h ^= h << 13;
		h ^= h >> 17;
		h ^= h << 5;
		to = piece + 1 == MAX_PIECES ? size : from + h % (size - from + 1);
		check(to == from || pwrite(fd, data + from, to - from, (off_t)from) == (ssize_t)(to - from));
		from = to;
		while ((rc = fg_capfile_reader_next(r, &rec, err, sizeof(err))) == FG_CAPFILE_RECORD)
			check_reader_record(data, w, i++, &rec);
		if (rc == FG_EINVAL)
			break;
		check(rc == FG_CAPFILE_END || rc == FG_CAPFILE_AGAIN);
	}
	check(i == w->n && rc == reader_end(w, FG_CAPFILE_F_FOLLOW));
	check(fg_capfile_reader_offset(r) == w->at);
	fg_capfile_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	struct walk w = { 0 };

	if (fd < 0)
		fd = memfd_create("fuzz_capfile", MFD_CLOEXEC);
	check(fd >= 0);
	walk_file(data, size, &w);
	run_reader(fd, data, size, &w);
	run_follower(fd, data, size, &w);
	free(w.offs);
	return 0;
}
