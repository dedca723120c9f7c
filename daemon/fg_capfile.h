/*
 * fg_capfile.h - the framed record file of feedguard's traffic capture:
 * framing records for the writer, a pure parser of the file's bytes, and a
 * streaming reader over a file descriptor.
 *
 * Format (proto/feedguard/capture/v1/capture.proto, the comment at the top;
 * all integers little-endian):
 *
 *   file header  "\x89FGCAP\r\n"  8 bytes, FG_CAPFILE_MAGIC
 *                version          uint32, FG_CAPFILE_VERSION (2; 1 is read too)
 *                reserved         4 bytes, written as zero, ignored on read
 *   frame        length N         uint32, at most FG_CAPFILE_MAX_RECORD
 *                crc              uint32, zlib crc32() of the 4 length
 *                                 bytes followed by the N payload bytes
 *                payload          N bytes: one serialized Record, opaque
 *                                 bytes to this module
 *
 * The CRC covers the length so that a damaged length cannot make a reader
 * take a wrong slice of the file for a record.
 *
 * How a file ends.  The writer only appends, whole frames or whole blocks
 * (fg_capout.h), so a crash leaves at most one frame cut short, or, on a file
 * system that extended the file before its data reached the disk, a
 * zero-filled tail.  Neither is an error: the rest of the file is a "torn
 * tail", reported (FG_CAPFILE_TORN) and skipped.  Everything else that
 * does not parse is corruption (FG_EINVAL), reported with its offset.
 * The verdict on the frame at a position, given the bytes from there to the
 * end of the file:
 *   - fewer than FG_CAPFILE_FRAME_HEADER_LEN bytes: torn;
 *   - a length of at most FG_CAPFILE_MAX_RECORD whose frame runs past the
 *     end of the file: torn (a cut-short write; the CRC cannot be checked),
 *     unless a whole frame (CRC checked) starts somewhere in the bytes after
 *     its position and the file is not read as it grows (FOLLOW): then its
 *     length is damaged, and it is corrupt;
 *   - a whole frame whose CRC matches: a record;
 *   - a bad frame (CRC mismatch, or a length over FG_CAPFILE_MAX_RECORD,
 *     which is not trusted to say where the frame ends): torn when it is the
 *     last thing in the file (for a bad CRC: the frame ends exactly at the
 *     end of the file; for a bad length: nothing follows its 8-byte frame
 *     header), or when every byte after its 8-byte frame header up to the
 *     end of the file is zero; otherwise corrupt.
 * So a length damaged in the middle of a file is corruption even when it
 * reaches past the end of the file: the frames behind it give it away
 * (looking for them costs at most 4 x FG_CAPFILE_MAX_RECORD bytes of CRC;
 * past that budget the frame is taken as torn).  The reader says how many
 * bytes a torn tail skips.
 * A file header with another magic is not a capture file; a version
 * outside FG_CAPFILE_VERSION_MIN .. FG_CAPFILE_VERSION is not supported; a file shorter than its header (a writer has just
 * created it) is torn, unless the bytes present already differ from the
 * magic.
 *
 * A writer must therefore never append after a failed or short write: the
 * torn frame would become corruption in the middle of the file.  It
 * truncates the file back to the frame's offset (ftruncate(2)) or moves to
 * a new file, and a daemon that restarts after a crash starts a new file
 * rather than appending to the old one.
 *
 * Pure and stateless apart from the reader: no libevent, nghttp2 or
 * protobuf-c; zlib's CRC-32 only (computed with ISA-L's crc32_gzip_refl
 * when configure found libisal: the same function, faster).  No global
 * state: every function may
 * run on any thread, and a reader is used by one thread at a time.  The
 * reader blocks in read(2) (files do not support non-blocking reads), so it
 * is for tools, tests and a capture's own thread, never a worker's event
 * loop.  Allocation: fg_capfile_append() (through fg_bufq) and the reader
 * allocate; failure is returned as FG_ENOMEM, never aborted.  The parsers
 * do not allocate.
 */
#ifndef FG_CAPFILE_H
#define FG_CAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"

/* The file's signature: a high byte and CR LF catch 7-bit and text-mode
 * damage, as PNG's does.  FG_CAPFILE_MAGIC_LEN bytes, no NUL. */
#define FG_CAPFILE_MAGIC "\x89" "FGCAP\r\n"
#define FG_CAPFILE_MAGIC_LEN 8
/* The format version this module writes, and the oldest it reads: the
 * framing is the same in both; version 2 records may leave delivered
 * messages to be rebuilt (capture.proto, Call.delivered_from), which a
 * version 1 reader would misread. */
#define FG_CAPFILE_VERSION 2u
#define FG_CAPFILE_VERSION_MIN 1u
/* Magic, version, reserved. */
#define FG_CAPFILE_FILE_HEADER_LEN 16
/* Length and CRC in front of every payload. */
#define FG_CAPFILE_FRAME_HEADER_LEN 8
/* Largest payload (capture.proto: "at most 64 MiB"). */
#define FG_CAPFILE_MAX_RECORD (64u * 1024 * 1024)
/* Largest frame; a reader buffers at most one byte more. */
#define FG_CAPFILE_MAX_FRAME (FG_CAPFILE_FRAME_HEADER_LEN + FG_CAPFILE_MAX_RECORD)
/* The reader's first buffer: large reads for files of many GB; it grows
 * past this only for a larger frame. */
#define FG_CAPFILE_READ_MIN (64 * 1024)

/* Results that are not errors (errors are negative FG_E*).  Each function
 * below lists the ones it returns. */
enum fg_capfile_result {
	FG_CAPFILE_NEED_MORE = 0,       /* parsers: the bytes given do not decide; offer <need> */
	FG_CAPFILE_HEADER = 1,          /* a valid file header */
	FG_CAPFILE_RECORD = 2,          /* a whole frame with a matching CRC */
	FG_CAPFILE_TORN = 3,            /* the rest of the file is a torn tail: skip it */
	FG_CAPFILE_CHECK_TAIL = 4,      /* parser: a bad frame that is torn only if the file is
	                                 * zero after its frame header (see parse_frame) */
	FG_CAPFILE_END = 5,             /* reader: the file ends at a frame boundary */
	FG_CAPFILE_AGAIN = 6,           /* reader, FOLLOW: a partial frame ends the data so far */
};

/* Flags of the parsers and the reader. */
enum fg_capfile_flag {
	FG_CAPFILE_F_EOF = 1u << 0,     /* parsers: the file ends after the bytes given */
	FG_CAPFILE_F_FOLLOW = 1u << 1,  /* reader: the file may still grow (see reader_open) */
};

/* What fg_capfile_parse_frame() found.  Fields not listed for a result are
 * left unspecified. */
struct fg_capfile_frame {
	const uint8_t *payload;         /* RECORD: <len> bytes inside the caller's <p> */
	uint32_t len;                   /* RECORD: payload bytes (0 is a valid record) */
	size_t frame_len;               /* RECORD: FG_CAPFILE_FRAME_HEADER_LEN + <len>, the step
	                                 * to the next frame */
	size_t need;                    /* NEED_MORE: bytes from <p> to offer next time: more
	                                 * than <avail>, at most FG_CAPFILE_MAX_FRAME + 1 */
	const char *why;                /* TORN, CHECK_TAIL, FG_EINVAL: static text for logs */
};

/* A record handed out by the reader. */
struct fg_capfile_record {
	const uint8_t *data;            /* <len> bytes, valid until the next call on the reader */
	uint32_t len;                   /* payload bytes */
	uint64_t offset;                /* file offset of the record's frame header */
};

/* A streaming reader; private to fg_capfile.c. */
struct fg_capfile_reader;

/* ---- writing ---- */

/*
 * fg_capfile_write_file_header - the 16-byte file header of version
 * FG_CAPFILE_VERSION into <out>: the first write(2) of a new file.  Cannot
 * fail.
 */
void fg_capfile_write_file_header(uint8_t out[FG_CAPFILE_FILE_HEADER_LEN]);

/*
 * fg_capfile_write_frame_header - the frame header (length and CRC) of the
 * <len> bytes at <payload> (borrowed; may be NULL when <len> is 0) into
 * <out>, so that the writer sends both with one writev(2) and copies
 * nothing.  A payload serialized into a struct fg_bufq after
 * fg_bufq_headroom(q, FG_CAPFILE_FRAME_HEADER_LEN) can also get the header
 * put in front with fg_bufq_prepend() and go out with one write(2).
 * Returns 0, or FG_ETOOBIG when <len> exceeds FG_CAPFILE_MAX_RECORD
 * (<out> is then untouched): such a record must not be written at all, as
 * every reader would stop at it.
 */
int fg_capfile_write_frame_header(uint8_t out[FG_CAPFILE_FRAME_HEADER_LEN], const uint8_t *payload,
                                  size_t len);

/*
 * fg_capfile_append - append a whole frame for the <len> bytes at
 * <payload> (borrowed; may be NULL when <len> is 0; not in <b>'s memory)
 * to <b>, for a writer that batches frames and sends <b> with one write(2).
 * Returns 0, FG_ETOOBIG (<len> exceeds FG_CAPFILE_MAX_RECORD) or FG_ENOMEM;
 * on error <b> is unchanged in content.
 */
int fg_capfile_append(struct fg_bufq *b, const uint8_t *payload, size_t len);

/* ---- parsing ---- */

/*
 * fg_capfile_parse_file_header - judge the file header from the <avail>
 * bytes at <p> (borrowed; the start of the file).  <flags> is
 * FG_CAPFILE_F_EOF when the file ends after them, else 0.  Reads nothing
 * past <p> + <avail>.  Returns
 *   FG_CAPFILE_HEADER     a valid header; the first frame starts at
 *                         <p> + FG_CAPFILE_FILE_HEADER_LEN;
 *   FG_CAPFILE_NEED_MORE  (only without F_EOF) fewer than
 *                         FG_CAPFILE_FILE_HEADER_LEN bytes, all agreeing
 *                         with the magic;
 *   FG_CAPFILE_TORN       (only with F_EOF) the file is shorter than its
 *                         header and agrees with the magic so far: a file
 *                         its writer has only just created;
 *   FG_EINVAL             "not a feedguard capture file" (the magic differs,
 *                         even within a short file), or "capture format
 *                         version is not supported" (<*version> is then the
 *                         version found, else it is not written).
 * <*why> (when <why> is not NULL) is a static string for logs on TORN and
 * FG_EINVAL.  <version> may be NULL.
 */
int fg_capfile_parse_file_header(const uint8_t *p, size_t avail, unsigned flags, uint32_t *version,
                                 const char **why);

/*
 * fg_capfile_parse_frame - judge the frame at <p> from the <avail> bytes
 * there (borrowed; <p> is at a frame boundary, after the file header), by
 * the rules in the comment at the top of this file.  <flags> is
 * FG_CAPFILE_F_EOF when the file ends after those bytes, else 0; with
 * FG_CAPFILE_F_FOLLOW as well the file may still grow, so a frame that runs
 * past its end is torn (the rest may come) whatever bytes follow its
 * header, never a damaged length.  Reads
 * nothing past <p> + <avail>; fills <*f>.  Returns
 *   FG_CAPFILE_RECORD      <f->payload>, <f->len>, <f->frame_len> describe
 *                          a record whose CRC matches; the next frame is at
 *                          <p> + <f->frame_len>;
 *   FG_CAPFILE_NEED_MORE   (only without F_EOF) the verdict needs more
 *                          bytes: call again with at least <f->need> bytes
 *                          from <p>, or with all that is left and F_EOF;
 *   FG_CAPFILE_TORN        (only with F_EOF) everything from <p> to the end
 *                          of the file is a torn tail (<f->why> says which
 *                          kind);
 *   FG_CAPFILE_CHECK_TAIL  (only without F_EOF) a bad frame (<f->why> says
 *                          why) with bytes after it, and every byte after
 *                          its 8-byte header up to <p> + <avail> is zero.
 *                          Its verdict depends on the rest of the file,
 *                          which can be huge: a caller with bounded memory
 *                          checks the bytes after <p> + <avail> itself, in
 *                          pieces, without offering them all again: all
 *                          zero to the end of the file is a torn tail
 *                          ("zero-filled tail"), any other byte makes the
 *                          frame at <p> corrupt for <f->why>;
 *   FG_EINVAL              the frame is corrupt: "CRC mismatch" or "frame
 *                          length over the maximum" in <f->why>.
 * Given every byte to the end of the file and F_EOF, the result is RECORD,
 * TORN or FG_EINVAL.  Without F_EOF, RECORD and FG_EINVAL are final: more
 * bytes would not change them.
 */
int fg_capfile_parse_frame(const uint8_t *p, size_t avail, unsigned flags, struct fg_capfile_frame *f);

/* ---- reading a file ---- */

/*
 * fg_capfile_reader_open - a reader of the capture file at <path>, opened
 * read-only, returned owned in <*r> (free with fg_capfile_reader_free(),
 * which closes the file).  <flags> is 0 or FG_CAPFILE_F_FOLLOW (other
 * bits are ignored), for a file that a writer may still be appending to:
 * at the end of the data the reader then reports END or AGAIN instead of
 * ending for good, and a later fg_capfile_reader_next() reads what was
 * appended meanwhile (read(2) again from where it stopped).  Nothing is
 * read yet: an empty file, a bad magic or version show in the first
 * fg_capfile_reader_next().  Returns 0, or
 *   FG_EIO     open(2) failed (errno kept); <err> says "<path>: cannot
 *              open: <strerror>";
 *   FG_ENOMEM  (<err> says so).
 * On failure <*r> is NULL.  <err> is <errlen> bytes (may be 0).
 */
int fg_capfile_reader_open(const char *path, unsigned flags, struct fg_capfile_reader **r, char *err,
                           size_t errlen);

/*
 * fg_capfile_reader_open_fd - as fg_capfile_reader_open(), on <fd>
 * (borrowed: the reader never closes it; keep it open until
 * fg_capfile_reader_free()).  Reading starts at <fd>'s current position,
 * which must be the start of the file; offsets count from there.  A pipe
 * works too (the reader never seeks).  Returns 0 or FG_ENOMEM (<*r> is then
 * NULL).
 */
int fg_capfile_reader_open_fd(int fd, unsigned flags, struct fg_capfile_reader **r);

/*
 * fg_capfile_reader_next - the next record of the file into <*rec>.
 * Memory: one buffer of FG_CAPFILE_READ_MIN bytes that grows, when a frame
 * does not fit, by doubling as the frame's bytes arrive, to at most the
 * frame's size plus one byte (a whole bad frame needs one byte more to
 * tell whether it ends the file): never past FG_CAPFILE_MAX_FRAME + 1,
 * however long the file or its zero-filled tail.
 * Returns
 *   FG_CAPFILE_RECORD  <*rec> is filled; <rec->data> is valid until the
 *                      next call on <r>;
 *   FG_CAPFILE_END     the file ends at a frame boundary after its header;
 *   FG_CAPFILE_TORN    the file ends with a torn tail (see the top of this
 *                      file), starting at fg_capfile_reader_offset(); <err>
 *                      says "torn tail at offset X after N records: B bytes
 *                      skipped (<why>)", a warning rather than an error;
 *   FG_CAPFILE_AGAIN   (FOLLOW only, instead of TORN) the data ends inside a
 *                      frame or the file header: call again once the file
 *                      has grown.  With FOLLOW, END is not final either;
 *   FG_EINVAL          the file is not a capture file ("not a feedguard
 *                      capture file"), has another version ("capture format
 *                      version N is not supported"), or is corrupt at
 *                      fg_capfile_reader_offset() ("corrupt frame at offset
 *                      X after N records: CRC mismatch");
 *   FG_EIO             read(2) failed (errno kept; <err> says where);
 *   FG_ENOMEM          growing the buffer failed (<err> says for what).
 * Without FOLLOW, END, TORN and FG_EINVAL are sticky: every later call
 * returns the same code and message.  FG_EINVAL is sticky with FOLLOW too.
 * FG_EIO and FG_ENOMEM are not: a later call retries the same step, losing
 * nothing.  <err> (<errlen> bytes, may be 0) gets a one-line message for
 * TORN and every error; it is not prefixed with the file's name.
 */
int fg_capfile_reader_next(struct fg_capfile_reader *r, struct fg_capfile_record *rec, char *err,
                           size_t errlen);

/*
 * fg_capfile_reader_offset - the file offset where <r> continues: the frame
 * after the last record returned, or where it stopped (the torn tail, the
 * corrupt frame, the partial frame of AGAIN); 0 before the file header is
 * read.
 */
uint64_t fg_capfile_reader_offset(const struct fg_capfile_reader *r);

/* fg_capfile_reader_records - how many records <r> has returned. */
uint64_t fg_capfile_reader_records(const struct fg_capfile_reader *r);

/*
 * fg_capfile_reader_free - release <r>'s memory and close the file it
 * opened (a descriptor given to fg_capfile_reader_open_fd() stays open).
 * Records handed out become invalid.  NULL does nothing.
 */
void fg_capfile_reader_free(struct fg_capfile_reader *r);

#endif /* FG_CAPFILE_H */
