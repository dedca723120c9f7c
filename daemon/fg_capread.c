/*
 * fg_capread.c - capture files as decoded records.  See fg_capread.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <stdint.h>
#include <string.h>

#include "fg_capfile.h"
#include "fg_capread.h"
#include "fg_pbsize.h"
#include "fg_error.h"
#include "fg_items.h"
#include "fg_pbwire.h"

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

/* --- delivered messages named by delivered_from (format version 2) ---- */

typedef Feedguard__Capture__V1__Call Call;
typedef Feedguard__Capture__V1__DeliveredFrom DeliveredFrom;
typedef Feedguard__Capture__V1__Item Item;

/* The record's items grouped by message: message m's are
 * items[idx[first[m]] .. idx[first[m + 1]]). */
struct by_message {
	uint32_t *first;                /* [n_upstream_response + 1] */
	uint32_t *idx;
};

static int group_items(const Call *c, struct by_message *g)
{
	size_t nm = c->n_upstream_response, ni = c->decisions ? c->decisions->n_items : 0, i;
	Item **items = ni ? c->decisions->items : NULL;

	g->first = calloc(nm + 2, sizeof(*g->first));
	g->idx = malloc((ni ? ni : 1) * sizeof(*g->idx));
	if (!g->first || !g->idx)
		return FG_ENOMEM;
	for (i = 0; i < ni; i++)
		if (items[i]->message < nm)
			g->first[items[i]->message + 2]++;
	for (i = 2; i < nm + 2; i++)
		g->first[i] += g->first[i - 1];
	for (i = 0; i < ni; i++)
		if (items[i]->message < nm)
			g->idx[g->first[items[i]->message + 1]++] = (uint32_t)i;
	return 0;
}

/* The plan of upstream message <m>, its items found in <pg>: each item
 * at its delivered_position, dense from 0, each at most once. */
static int plan_of(const Call *c, const struct by_message *g, uint32_t m, struct fg_items_page *pg, const char **why)
{
	Item **items = c->decisions->items;
	uint32_t k;

	for (k = 0; k < pg->n; k++)
		pg->order[k] = UINT32_MAX;
	pg->norder = 0;
	for (k = g->first[m]; k < g->first[m + 1]; k++) {
		const Item *it = items[g->idx[k]];
		/* each item once, each place once: a page never grows (a
		 * hostile file cannot make one item fill a page many times) */
		if (it->position >= pg->n || pg->item[it->position].limited ||
		    (it->delivered_position >= 0 && ((uint32_t)it->delivered_position >= pg->n ||
		                                     pg->order[it->delivered_position] != UINT32_MAX))) {
			*why = "its item decisions do not fit its upstream page";
			return FG_EINVAL;
		}
		pg->item[it->position].limited = 1;     /* seen */
		if (it->delivered_position < 0)
			continue;
		pg->order[it->delivered_position] = it->position;
		pg->norder++;
	}
	for (k = 0; k < pg->norder; k++)
		if (pg->order[k] == UINT32_MAX) {
			*why = "its item decisions leave a hole in the delivered page";
			return FG_EINVAL;
		}
	return 0;
}

/* Entry <f> of delivered_from, rebuilt into <out>. */
static int rebuild_one(const Call *c, const struct by_message *g, const DeliveredFrom *f, struct fg_items_page *pg,
                       struct fg_bufq *out, const char **why)
{
	struct fg_items_spec spec;
	const ProtobufCBinaryData *up;
	int rc;

	if (f->delivered >= c->n_delivered_response || f->upstream >= c->n_upstream_response ||
	    c->delivered_response[f->delivered].len != 0) {
		*why = "delivered_from names a message the record does not leave out";
		return FG_EINVAL;
	}
	up = &c->upstream_response[f->upstream];
	if (!f->reordered)
		return fg_bufq_append(out, up->data, up->len);
	if (c->n_items_path == 0 || c->n_items_path > FG_ITEMS_MAX_PATH || !c->decisions) {
		*why = "a reordered page without its items path or decisions";
		return FG_EINVAL;
	}
	memset(&spec, 0, sizeof(spec));
	spec.items_depth = c->n_items_path;
	memcpy(spec.items_path, c->items_path, c->n_items_path * sizeof(spec.items_path[0]));
	if ((rc = fg_items_locate(up->data, up->len, &spec, pg, why)) < 0 || (rc = plan_of(c, g, f->upstream, pg, why)) < 0)
		return rc;
	return fg_items_write(up->data, up->len, &spec, pg, out, why);
}

/*
 * Each delivered_response entry that delivered_from names, filled in: the
 * tools then read every delivered message whole, whatever the version.
 * The rebuilt bytes replace the empty entry's (protobuf-c frees them with
 * the record).  0, FG_EINVAL with <*why>, or FG_ENOMEM.
 */
static int rebuild_delivered(Feedguard__Capture__V1__Record *rec, const char **why)
{
	Call *c = rec->kind_case == FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL ? rec->call : NULL;
	struct by_message g = { NULL, NULL };
	struct fg_items_page pg;
	struct fg_bufq out;
	size_t i;
	int rc = 0;

	if (!c || c->n_delivered_from == 0)
		return 0;
	memset(&pg, 0, sizeof(pg));
	fg_bufq_init(&out);
	if ((rc = group_items(c, &g)) < 0)
		goto out;
	for (i = 0; i < c->n_delivered_from && rc == 0; i++) {
		ProtobufCBinaryData *d;
		uint8_t *copy;
		fg_bufq_truncate(&out, 0);
		if ((rc = rebuild_one(c, &g, c->delivered_from[i], &pg, &out, why)) < 0)
			break;
		if (!(copy = malloc(fg_bufq_len(&out) ? fg_bufq_len(&out) : 1))) {
			rc = FG_ENOMEM;
			break;
		}
		if (fg_bufq_len(&out))
			memcpy(copy, fg_bufq_head(&out), fg_bufq_len(&out));
		d = &c->delivered_response[c->delivered_from[i]->delivered];
		free(d->data);
		d->data = copy;
		d->len = fg_bufq_len(&out);
	}
out:
	if (rc == FG_ENOMEM)
		*why = "out of memory";
	free(g.first);
	free(g.idx);
	fg_items_page_free(&pg);
	fg_bufq_free(&out);
	return rc;
}

int fg_capread_unpack(size_t len, const uint8_t *data, Feedguard__Capture__V1__Record **out, const char **why)
{
	int rc;

	*out = NULL;
	rc = fg_pbsize_check(&feedguard__capture__v1__record__descriptor, data, len, FG_CAPREAD_MAX_UNPACKED);
	if (rc == FG_ETOOBIG) {
		*why = "it would take more than 256 MiB unpacked (FG_CAPREAD_MAX_UNPACKED)";
		return FG_EINVAL;
	}
	if (rc < 0) {
		*why = "not a Record feedguardd writes (it does not parse, nests too deep, or repeats a message field)";
		return FG_EINVAL;
	}
	if (!(*out = feedguard__capture__v1__record__unpack(NULL, len, data))) {
		*why = "not a capture Record";
		return FG_EINVAL;
	}
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
	const char *why = "malformed";
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
	if (fg_capread_unpack(fr.len, fr.data, &r->rec, &why) < 0) {
		snprintf(err, errlen, "corrupt record at offset %llu after %llu records: %s",
		         (unsigned long long)fr.offset, (unsigned long long)r->records, why);
		return FG_EINVAL;
	}
	if ((rc = rebuild_delivered(r->rec, &why)) < 0) {
		snprintf(err, errlen, "corrupt record at offset %llu after %llu records: %s", (unsigned long long)fr.offset,
		         (unsigned long long)r->records, why);
		drop_last(r);
		return rc;
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
	const char *why = NULL;
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
	if ((rc = fg_capread_unpack(f.len, f.payload, rec, &why)) < 0)
		return rc;
	if ((rc = rebuild_delivered(*rec, &why)) < 0) {
		feedguard__capture__v1__record__free_unpacked(*rec, NULL);
		*rec = NULL;
		return rc;
	}
	return 0;
}
