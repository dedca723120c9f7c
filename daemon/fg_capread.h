/*
 * fg_capread.h - the records of a capture file, decoded: the framed file
 * (fg_capfile.h) and each frame's payload unpacked as a
 * feedguard.capture.v1.Record (protobuf-c, capture.pb-c.h), for the tools
 * (feedguard-replay, feedguardctl).
 *
 * A payload that is a whole frame with a good CRC but does not unpack is
 * corruption, reported like a bad frame: with its offset and the count of
 * records read before it.  Blocking file I/O: tools only, never a worker.
 */
#ifndef FG_CAPREAD_H
#define FG_CAPREAD_H

#include <stddef.h>
#include <stdint.h>

#include "capture.pb-c.h"
#include "fg_bufq.h"

struct fg_capread;

/* What a record may take in memory once unpacked, at most (protobuf-c's
 * structs, repeated arrays, strings and unknown fields): a frame of 64 MiB
 * of empty repeated entries would otherwise unpack to ~55 times its size
 * (3.3 GB measured for 30 million empty items).  A record the daemon
 * writes takes a few times its size; one over this is corruption. */
#define FG_CAPREAD_MAX_UNPACKED ((uint64_t)256 << 20)

/*
 * fg_capread_unpack - the Record in the <len> bytes at <data> (a frame's
 * payload), returned owned in <*out>
 * (feedguard__capture__v1__record__free_unpacked, NULL allocator), after
 * checking, without allocating, that it unpacks within
 * FG_CAPREAD_MAX_UNPACKED.  Returns 0, or FG_EINVAL with <*why> saying
 * what is wrong (not a Record, or larger than that once unpacked).
 * Version 2's delivered pages are not rebuilt here (fg_capread_next does).
 */
int fg_capread_unpack(size_t len, const uint8_t *data, Feedguard__Capture__V1__Record **out, const char **why);

/* What fg_capread_next() found. */
enum fg_capread_result {
	FG_CAPREAD_RECORD = 1,      /* a record */
	FG_CAPREAD_END = 2,         /* the file ends cleanly */
	FG_CAPREAD_TORN = 3,        /* the file ends with a torn tail (a warning; <err> says where) */
	FG_CAPREAD_AGAIN = 4,       /* FOLLOW: the data ends inside a frame; call again later */
};

/* Flags of fg_capread_open. */
#define FG_CAPREAD_F_FOLLOW 1u      /* the file may still grow (a daemon writes it) */

/*
 * fg_capread_open - a reader of the capture file <path> (<flags>: 0 or
 * FG_CAPREAD_F_FOLLOW), returned owned in <*out> (fg_capread_free).
 * Returns 0, or FG_EIO / FG_ENOMEM with a message in <err> (<errlen>
 * bytes).
 */
int fg_capread_open(struct fg_capread **out, const char *path, unsigned flags, char *err, size_t errlen);

/*
 * fg_capread_next - the next record into <*rec>, valid until the next call
 * or fg_capread_free (owned by the reader).  Returns a result above, or
 * FG_EINVAL (not a capture file, another version, corruption: <err> says
 * "corrupt frame at offset X after N records: why"), FG_EIO, FG_ENOMEM.
 * <err> gets a one-line message for TORN and every error.
 */
int fg_capread_next(struct fg_capread *r, Feedguard__Capture__V1__Record **rec, char *err, size_t errlen);

/* fg_capread_offset - the offset of the frame of the last record returned
 * (or where the reader stopped). */
uint64_t fg_capread_offset(const struct fg_capread *r);

/* fg_capread_records - records returned so far. */
uint64_t fg_capread_records(const struct fg_capread *r);

/*
 * fg_capread_record_at - the record whose frame starts at <offset> of the
 * capture file open on <fd> (an offset fg_capread_offset gave), read with
 * pread(2) into <buf> (reused across calls) and returned owned in <*rec>
 * (feedguard__capture__v1__record__free_unpacked).  Returns 0, FG_EIO, or
 * FG_EINVAL (no whole frame with a good CRC there, or no Record in it).
 */
int fg_capread_record_at(int fd, uint64_t offset, struct fg_bufq *buf, Feedguard__Capture__V1__Record **rec);

/* fg_capread_free - close the file and free <r>.  NULL is a no-op. */
void fg_capread_free(struct fg_capread *r);

#endif /* FG_CAPREAD_H */
