/*
 * fg_capread.c - capture files as decoded records.  See fg_capread.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

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
