/*
 * fg_capout.c - a capture file written with O_DIRECT in whole blocks, its
 * tail and every fallback with plain writes.  See fg_capout.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_capout.h"
#include "fg_error.h"

/* --- frames not wholly on the file ------------------------------------------ */

static unsigned pending(const struct fg_capout *o)
{
	return o->ends_head - o->ends_tail;
}

/* Frames ending at or before <on_file> are on the file. */
static void pending_done(struct fg_capout *o, uint64_t on_file)
{
	while (o->ends_tail != o->ends_head && o->ends[o->ends_tail % FG_CAPOUT_PENDING] <= on_file)
		o->whole = o->ends[o->ends_tail++ % FG_CAPOUT_PENDING];
}

/* --- writes ------------------------------------------------------------------ */

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	ssize_t n;

	while (len > 0) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ENOSPC;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/*
 * Nothing more can be written: the file ends at its last whole frame (a
 * frame cut by a failed write would read as corruption once anything
 * followed it, and nothing will), the frames after it are <*lost>.
 */
static int fail(struct fg_capout *o, uint64_t *lost)
{
	int err = errno;

	pending_done(o, o->base + o->shown);
	*lost = pending(o);
	o->ends_tail = o->ends_head;
	if (ftruncate(o->fd, (off_t)o->whole) < 0) {
		/* what is past <whole> then reads as a torn tail */
	}
	o->failed = 1;
	errno = err;
	return FG_EIO;
}

/* buf[0 .. <len>) (whole blocks) at <base>: directly, or plainly when the
 * file system refuses it (once refused, plainly from then on). */
static int write_blocks(struct fg_capout *o, size_t len)
{
	ssize_t n = -1;

	if (!o->direct_failed) {
		do
			n = pwrite(o->dfd, o->buf, len, (off_t)o->base);
		while (n < 0 && errno == EINTR);
	}
	if (n == (ssize_t)len)
		return 0;
	o->direct_failed = 1;
	return pwrite_all(o->fd, o->buf, len, o->base);
}

/* The first <len> bytes of the buffer (whole blocks) are written: the
 * rest moves to its start. */
static void advance(struct fg_capout *o, size_t len)
{
	o->fill -= len;
	memmove(o->buf, o->buf + len, o->fill);
	o->shown = o->shown > len ? o->shown - len : 0;
	o->base += len;
	pending_done(o, o->base);
}

/* <len> bytes at <p> into the buffer, a full buffer written as it fills. */
static int copy_in(struct fg_capout *o, const uint8_t *p, size_t len)
{
	size_t n;

	while (len > 0) {
		n = FG_CAPOUT_CHUNK - o->fill;
		if (n > len)
			n = len;
		memcpy(o->buf + o->fill, p, n);
		o->fill += n;
		p += n;
		len -= n;
		if (o->fill == FG_CAPOUT_CHUNK) {
			if (write_blocks(o, FG_CAPOUT_CHUNK) < 0)
				return -1;
			advance(o, FG_CAPOUT_CHUNK);
		}
	}
	return 0;
}

/* Plain mode: the frames with one pwritev(2) (a reader sees whole frames
 * or a short tail); a short one is finished piece by piece. */
static int plain_frames(struct fg_capout *o, const struct iovec *iov, size_t k, uint64_t *lost)
{
	uint64_t off = o->end, want = 0, done, at = 0;
	ssize_t n;
	size_t i;

	for (i = 0; i < 2 * k; i++)
		want += iov[i].iov_len;
	do
		n = pwritev(o->fd, iov, (int)(2 * k), (off_t)off);
	while (n < 0 && errno == EINTR);
	done = n < 0 ? 0 : (uint64_t)n;
	for (i = 0; n >= 0 && done < want && i < 2 * k; at += iov[i].iov_len, i++) {
		size_t skip = done > at ? (size_t)(done - at) : 0;
		if (skip >= iov[i].iov_len)
			continue;
		if (pwrite_all(o->fd, (const uint8_t *)iov[i].iov_base + skip, iov[i].iov_len - skip,
		               off + at + skip) < 0)
			n = -1;
	}
	if (n < 0) {
		/* the batch's first frame starts at <off>: the file ends there */
		*lost = k;
		if (ftruncate(o->fd, (off_t)off) < 0) {
			/* a cut frame then reads as a torn tail */
		}
		o->failed = 1;
		return FG_EIO;
	}
	o->end += want;
	o->whole = o->end;
	return 0;
}

/* --- the interface -------------------------------------------------------------- */

int fg_capout_open(struct fg_capout *o, const char *path, mode_t mode, unsigned flags, const void *prefix,
                   size_t len)
{
	int err;

	memset(o, 0, sizeof(*o));
	o->dfd = -1;
	o->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (o->fd < 0)
		return FG_EIO;
	if (pwrite_all(o->fd, prefix, len, 0) < 0) {
		err = errno;
		close(o->fd);
		o->fd = -1;
		unlink(path);
		errno = err;
		return FG_EIO;
	}
	o->end = o->whole = len;
	if ((flags & FG_CAPOUT_F_PLAIN) || len >= FG_CAPOUT_BLOCK)
		return 0;
	/* EINVAL: the file system has no O_DIRECT (tmpfs); plain it is */
	o->dfd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (o->dfd < 0)
		return 0;
	if (!(o->buf = aligned_alloc(FG_CAPOUT_BLOCK, FG_CAPOUT_CHUNK))) {
		close(o->dfd);
		o->dfd = -1;
		return 0;
	}
	memcpy(o->buf, prefix, len);
	o->fill = o->shown = len;
	return 0;
}

int fg_capout_direct(const struct fg_capout *o)
{
	return o->dfd >= 0 && !o->direct_failed;
}

int fg_capout_frames(struct fg_capout *o, const struct iovec *iov, size_t k, uint64_t *lost)
{
	size_t i, whole;
	int rc;

	*lost = 0;
	if (o->fd < 0 || o->failed) {
		errno = EIO;
		return FG_EIO;
	}
	if (o->dfd < 0)
		return plain_frames(o, iov, k, lost);
	for (i = 0; i < k; i++) {
		if (pending(o) == FG_CAPOUT_PENDING && (rc = fg_capout_show(o, lost)) < 0)
			return rc;
		if (copy_in(o, iov[2 * i].iov_base, iov[2 * i].iov_len) < 0 ||
		    copy_in(o, iov[2 * i + 1].iov_base, iov[2 * i + 1].iov_len) < 0) {
			/* frame <i> is not whole on the file; those after it are not appended */
			o->ends[o->ends_head++ % FG_CAPOUT_PENDING] = UINT64_MAX;
			rc = fail(o, lost);
			*lost += k - i - 1;
			return rc;
		}
		o->end += iov[2 * i].iov_len + iov[2 * i + 1].iov_len;
		o->ends[o->ends_head++ % FG_CAPOUT_PENDING] = o->end;
	}
	/* the whole blocks now, so that only a partial one waits for a show */
	whole = o->fill & ~(size_t)(FG_CAPOUT_BLOCK - 1);
	if (whole > 0) {
		if (write_blocks(o, whole) < 0)
			return fail(o, lost);
		advance(o, whole);
	}
	return 0;
}

int fg_capout_show(struct fg_capout *o, uint64_t *lost)
{
	*lost = 0;
	if (o->fd < 0 || o->dfd < 0 || o->failed || o->fill == o->shown)
		return 0;
	if (pwrite_all(o->fd, o->buf + o->shown, o->fill - o->shown, o->base + o->shown) < 0)
		return fail(o, lost);
	o->shown = o->fill;
	pending_done(o, o->base + o->fill);
	return 0;
}

int fg_capout_close(struct fg_capout *o, uint64_t *lost)
{
	int rc;

	*lost = 0;
	if (o->fd < 0)
		return 0;
	rc = fg_capout_show(o, lost);
	if (o->dfd >= 0)
		close(o->dfd);
	close(o->fd);
	free(o->buf);
	o->buf = NULL;
	o->fd = o->dfd = -1;
	return rc;
}
