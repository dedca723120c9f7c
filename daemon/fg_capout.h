/*
 * fg_capout.h - the file a capture writer appends its frames to, written
 * around the page cache where the file system allows it.
 *
 * Why.  A buffered write(2) copies every byte into the page cache: with
 * records of tens of KB, that copy (page allocation, dirty accounting) was
 * the largest single cost of capturing a call, about 10 µs of a 26 KB
 * record on a 2-core VM.  O_DIRECT writes whole blocks from the writer's
 * own buffer instead: 2.6 µs a record there, the copy into that buffer
 * included.
 *
 * How.  Frames are copied into one block-aligned buffer of
 * FG_CAPOUT_CHUNK bytes.  After each call of fg_capout_frames() the whole
 * blocks it holds are written with O_DIRECT, and the partial block left
 * (under FG_CAPOUT_BLOCK bytes) moves to the buffer's start.  That tail is
 * made visible to readers by fg_capout_show() (a plain pwrite(2)), which
 * the writer calls when it has nothing else to do and at close; the next
 * direct write of that block writes it again, whole (Linux writes the
 * cached page back and drops it first).  So the file never holds padding:
 * a reader following it sees whole frames, or a frame cut at a block
 * boundary, exactly as with plain writes, and a crash leaves at most one
 * frame cut short.
 *
 * A file system without O_DIRECT (tmpfs), and a direct write that fails
 * where a plain one succeeds, get plain writes of the same bytes: the file
 * is the same either way.  When a plain write fails too, the file ends at
 * the last whole frame on it (ftruncate(2)): never a frame cut in the
 * middle of a file, and the frames after it are reported lost, exactly.
 *
 * One thread per file (the capture writer); blocks in write(2); no
 * libevent.  Memory: FG_CAPOUT_CHUNK bytes per open file in direct mode,
 * none in plain mode.
 */
#ifndef FG_CAPOUT_H
#define FG_CAPOUT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Alignment of a direct write's buffer, offset and length: the largest
 * logical block size of Linux block devices. */
#define FG_CAPOUT_BLOCK 4096u
/* The aligned buffer: what a frame larger than this takes is written in
 * pieces of this size. */
#define FG_CAPOUT_CHUNK (1024u * 1024u)
/* Frames whose bytes may not all be on the file yet, at most: a direct
 * file shows its tail before it would hold more (tiny frames only). */
#define FG_CAPOUT_PENDING 4096u

/* <flags> of fg_capout_open. */
#define FG_CAPOUT_F_PLAIN 0x1u  /* plain writes only (tests; no O_DIRECT tried) */

struct fg_capout {
	int fd;                     /* plain writes, ftruncate; -1 when closed */
	int dfd;                    /* the same file opened O_DIRECT, or -1: plain mode */
	uint8_t *buf;               /* direct mode: FG_CAPOUT_CHUNK bytes, block-aligned */
	size_t fill;                /* bytes in <buf> */
	size_t shown;               /* bytes of <buf> already on the file (written plainly) */
	uint64_t base;              /* file offset of buf[0]: a multiple of FG_CAPOUT_BLOCK */
	uint64_t end;               /* file offset after the last byte appended */
	uint64_t whole;             /* file offset after the last frame wholly on the file */
	unsigned direct_failed;     /* a direct write failed where a plain one did not: plain from then on */
	unsigned failed;            /* nothing more is written: only close */
	uint64_t ends[FG_CAPOUT_PENDING]; /* end offsets of the frames not wholly on the file */
	unsigned ends_head, ends_tail; /* a ring: indexes run free */
};

/*
 * fg_capout_open - create the file <path> (O_EXCL, <mode>) and write the
 * <len> bytes at <prefix> (the file header; not a frame) at its start, on
 * the file when this returns.  Tries O_DIRECT unless <flags> has
 * FG_CAPOUT_F_PLAIN.  Returns 0, FG_EIO (errno kept; nothing is left open,
 * a file created is removed) or FG_ENOMEM.
 */
int fg_capout_open(struct fg_capout *o, const char *path, mode_t mode, unsigned flags, const void *prefix,
                   size_t len);

/* fg_capout_direct - 1 when <o> writes with O_DIRECT now. */
int fg_capout_direct(const struct fg_capout *o);

/*
 * fg_capout_frames - append <k> frames: <iov>[2i] and <iov>[2i + 1] are
 * frame i's header and payload (borrowed, copied or written before this
 * returns).  Returns 0, or FG_EIO (errno kept) when the file could take
 * them neither directly nor plainly: it then ends at its last whole frame
 * and <*lost> (else 0) counts the frames appended, by this call or an
 * earlier one, that are not on it.  After FG_EIO only fg_capout_close()
 * may follow.
 */
int fg_capout_frames(struct fg_capout *o, const struct iovec *iov, size_t k, uint64_t *lost);

/*
 * fg_capout_show - put every byte appended on the file, for readers (the
 * tail a direct file keeps under a block).  Returns 0, or FG_EIO as
 * fg_capout_frames() with <*lost>.
 */
int fg_capout_show(struct fg_capout *o, uint64_t *lost);

/*
 * fg_capout_close - show what is left and close; <o> is then closed
 * (fd -1).  Returns 0, or FG_EIO with <*lost> as fg_capout_show() (the
 * file is closed all the same).  A closed <o> returns 0.
 */
int fg_capout_close(struct fg_capout *o, uint64_t *lost);

#endif /* FG_CAPOUT_H */
