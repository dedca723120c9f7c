/*
 * fg_capread.c - capture files as decoded records.  See fg_capread.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fg_capfile.h"
#include "fg_capread.h"
#include "fg_error.h"

struct fg_capread {
	struct fg_capfile_reader *file;
	Feedguard__Capture__V1__Record *rec;  /* the last record handed out */
	uint64_t offset;                      /* its frame's offset */
	uint64_t records;
};

int fg_capread_open(struct fg_capread **out, const char *path, unsigned flags, char *err, size_t errlen)
{
	struct fg_capread *r = calloc(1, sizeof(*r));
	int rc;

	*out = NULL;
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return FG_ENOMEM;
	}
	rc = fg_capfile_reader_open(path, (flags & FG_CAPREAD_F_FOLLOW) ? FG_CAPFILE_F_FOLLOW : 0, &r->file, err,
	                            errlen);
	if (rc < 0) {
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static void drop_last(struct fg_capread *r)
{
	if (r->rec)
		feedguard__capture__v1__record__free_unpacked(r->rec, NULL);
	r->rec = NULL;
}

int fg_capread_next(struct fg_capread *r, Feedguard__Capture__V1__Record **rec, char *err, size_t errlen)
{
	struct fg_capfile_record fr;
	int rc;

	*rec = NULL;
	drop_last(r);
	rc = fg_capfile_reader_next(r->file, &fr, err, errlen);
	switch (rc) {
	case FG_CAPFILE_RECORD:
		break;
	case FG_CAPFILE_END:
		return FG_CAPREAD_END;
	case FG_CAPFILE_TORN:
		return FG_CAPREAD_TORN;
	case FG_CAPFILE_AGAIN:
		return FG_CAPREAD_AGAIN;
	default:
		return rc < 0 ? rc : FG_EINVAL;
	}
	r->offset = fr.offset;
	/* A frame whose CRC holds but whose bytes are no Record was written
	 * wrong, not torn: corruption, said like a bad frame. */
	if (!(r->rec = feedguard__capture__v1__record__unpack(NULL, fr.len, fr.data))) {
		snprintf(err, errlen, "corrupt record at offset %llu after %llu records: not a capture Record",
		         (unsigned long long)fr.offset, (unsigned long long)r->records);
		return FG_EINVAL;
	}
	r->records++;
	*rec = r->rec;
	return FG_CAPREAD_RECORD;
}

uint64_t fg_capread_offset(const struct fg_capread *r)
{
	return r->rec ? r->offset : fg_capfile_reader_offset(r->file);
}

uint64_t fg_capread_records(const struct fg_capread *r)
{
	return r->records;
}

void fg_capread_free(struct fg_capread *r)
{
	if (!r)
		return;
	drop_last(r);
	fg_capfile_reader_free(r->file);
	free(r);
}

/* <n> bytes at <off> of <fd> appended to <buf>. */
static int pread_all(int fd, uint64_t off, size_t n, struct fg_bufq *buf)
{
	ssize_t got;

	if (fg_bufq_reserve(buf, n) < 0)
		return FG_ENOMEM;
	while (n > 0) {
		got = pread(fd, fg_bufq_tail(buf), n, (off_t)off);
		if (got <= 0)
			return FG_EIO;
		fg_bufq_commit(buf, (size_t)got);
		off += (uint64_t)got;
		n -= (size_t)got;
	}
	return 0;
}

int fg_capread_record_at(int fd, uint64_t offset, struct fg_bufq *buf, Feedguard__Capture__V1__Record **rec)
{
	const uint8_t *p;
	struct fg_capfile_frame f;
	uint32_t len;
	int rc;

	*rec = NULL;
	fg_bufq_truncate(buf, 0);
	if ((rc = pread_all(fd, offset, FG_CAPFILE_FRAME_HEADER_LEN, buf)) < 0)
		return rc;
	p = fg_bufq_head(buf);
	len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	if (len > FG_CAPFILE_MAX_RECORD)
		return FG_EINVAL;
	if ((rc = pread_all(fd, offset + FG_CAPFILE_FRAME_HEADER_LEN, len, buf)) < 0)
		return rc;
	/* the frame alone, as if it ended the file: a record or nothing */
	if (fg_capfile_parse_frame(fg_bufq_head(buf), fg_bufq_len(buf), FG_CAPFILE_F_EOF, &f) != FG_CAPFILE_RECORD)
		return FG_EINVAL;
	*rec = feedguard__capture__v1__record__unpack(NULL, f.len, f.payload);
	return *rec ? 0 : FG_EINVAL;
}
