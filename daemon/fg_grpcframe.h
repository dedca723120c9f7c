/*
 * fg_grpcframe.h - gRPC length-prefixed messages: cutting a stream of DATA
 * bytes into messages, per-message gzip/deflate, and framing messages back.
 *
 * Wire format (grpc/grpc doc/PROTOCOL-HTTP2.md, "Length-Prefixed-Message"):
 * a 1-byte Compressed-Flag (0 or 1), a 4-byte big-endian Message-Length,
 * then that many bytes.  DATA frame boundaries have nothing to do with
 * message boundaries, so a reader assembles messages across chunks.
 * Compression is per message with no context carried between messages
 * (same document; doc/compression.md).
 *
 * Stateless with respect to the network: no libevent, no nghttp2.  Nothing
 * here keeps global state; every object belongs to its caller and may be
 * used from any thread, but by one thread at a time.  In the daemon a
 * reader belongs to one call and a zctx to one worker.
 *
 * Allocation: the reader (only for a message split across chunks),
 * fg_grpcframe_append(), inflate, deflate and fg_grpcframe_zctx_new()
 * allocate; everything else does not.  Output goes to a struct fg_bufq
 * (fg_bufq.h), appended at its tail.  Allocation failure is returned as FG_ENOMEM,
 * never aborted.  Limits (all in bytes):
 *   - a message is at most FG_GRPCFRAME_MAX_LEN (the 32-bit length field);
 *   - a reader copies a message only when it is split across chunks, and
 *     then holds at most max(256, 2x what arrived), capped at the declared
 *     length,
 *     plus up to FG_GRPCFRAME_READER_KEEP kept from an earlier message; a
 *     message longer than its <max_message> is never stored at all;
 *   - inflate never grows its output by more than <max_out> + 1 bytes, and
 *     zlib's own state adds about 7 KiB + a 32 KiB window per z_stream;
 *   - deflate uses zlib's default window and memory level (~256 KiB while
 *     it runs, released before it returns).
 */
#ifndef FG_GRPCFRAME_H
#define FG_GRPCFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"
#include "fg_grpc.h"    /* FG_GRPC_PREFIX_LEN: the 5-byte prefix */

/* Message-Length is a 4-byte unsigned integer. */
#define FG_GRPCFRAME_MAX_LEN UINT32_MAX

/*
 * A reader keeps the buffer of a split message for the next one, unless it
 * grew past this: one large message must not pin memory for the rest of a
 * long streaming call.
 */
#define FG_GRPCFRAME_READER_KEEP (64 * 1024)

/* The Compressed-Flag byte; any other value is malformed. */
enum fg_grpcframe_flag {
	FG_GRPCFRAME_UNCOMPRESSED = 0,  /* Message is the bytes as they are */
	FG_GRPCFRAME_COMPRESSED = 1,    /* Message is compressed with the call's grpc-encoding */
};

/* The Content-Codings feedguard implements (PROTOCOL-HTTP2.md Content-Coding). */
enum fg_grpcframe_enc {
	FG_GRPCFRAME_IDENTITY = 0,      /* no compression */
	FG_GRPCFRAME_GZIP = 1,          /* RFC 1952 gzip (one member) */
	FG_GRPCFRAME_DEFLATE = 2,       /* RFC 1950 zlib format, as grpc-core means "deflate" */
	FG_GRPCFRAME_ENC_COUNT
};

/* Bit of <enc> in an encoding mask. */
#define FG_GRPCFRAME_ENC_BIT(enc) (1u << (enc))
#define FG_GRPCFRAME_ENC_ALL ((1u << FG_GRPCFRAME_ENC_COUNT) - 1)

/* The grpc-accept-encoding value feedguard sends: everything it can inflate. */
#define FG_GRPCFRAME_ACCEPT_ENCODING "identity,deflate,gzip"

/* Return values of fg_grpcframe_reader_feed() that are not errors. */
enum fg_grpcframe_feed {
	FG_GRPCFRAME_NEED_MORE = 0,     /* all input was used; no message is complete */
	FG_GRPCFRAME_MESSAGE = 1,       /* one message is complete (input may be left) */
};

/* One complete message handed out by the reader. */
struct fg_grpcframe_msg {
	const uint8_t *data;            /* <len> bytes, borrowed: see fg_grpcframe_reader_feed() */
	uint32_t len;                   /* Message-Length; 0 is a valid (empty) message */
	enum fg_grpcframe_flag flag;    /* as on the wire */
};

/* Where a reader is in the stream; fields are private to fg_grpcframe.c. */
enum fg_grpcframe_rstate {
	FG_GRPCFRAME_R_PREFIX = 0,      /* collecting the 5-byte prefix */
	FG_GRPCFRAME_R_BODY,            /* collecting the body of a split message */
	FG_GRPCFRAME_R_DELIVERED,       /* a message was handed out; released on the next feed */
	FG_GRPCFRAME_R_FAILED,          /* a protocol error; repeated until reset */
};

struct fg_grpcframe_reader {
	enum fg_grpcframe_rstate state;
	size_t max_message;             /* a longer declared length fails at the prefix */
	uint8_t prefix[FG_GRPC_PREFIX_LEN]; /* prefix bytes received so far */
	size_t prefix_len;              /* 0 .. FG_GRPC_PREFIX_LEN */
	enum fg_grpcframe_flag flag;    /* of the current message, once its first byte is in */
	uint32_t msg_len;               /* declared length of the current message */
	uint8_t *buf;                   /* body of a message split across chunks */
	size_t have;                    /* body bytes in <buf> */
	size_t cap;                     /* bytes allocated at <buf> */
	int err;                        /* FG_E* repeated in state FAILED */
	const char *why;                /* static text for logs, in state FAILED */
};

/* Per-worker inflate context (a z_stream reused with inflateReset). */
struct fg_grpcframe_zctx;

/*
 * fg_grpcframe_reader_init - a reader at a message boundary that refuses
 * messages whose declared length exceeds <max_message> (0 allows only empty
 * messages; values above FG_GRPCFRAME_MAX_LEN allow every length).  Does not
 * allocate and cannot fail.
 */
void fg_grpcframe_reader_init(struct fg_grpcframe_reader *r, size_t max_message);

/*
 * fg_grpcframe_reader_feed - take bytes from <data> (<len> bytes, borrowed)
 * until one message is complete or the input is used up.  <*used> is set to
 * the bytes taken (also on error); the caller continues with <data> + <*used>.
 * On FG_GRPCFRAME_MESSAGE, <*msg> describes the message.  <msg->data> points
 * into <data> (when the whole body lay in this chunk: no copy) or into <r>;
 * either way it is valid until the next call on <r> and no longer than
 * <data>.  Copy what must outlive that.
 *
 * Typical loop over one DATA chunk:
 *   while (len > 0) {
 *       rc = fg_grpcframe_reader_feed(r, data, len, &used, &msg, &why);
 *       if (rc < 0) fail;
 *       data += used; len -= used;
 *       if (rc == FG_GRPCFRAME_MESSAGE) handle(&msg);
 *   }
 *
 * Returns
 *   FG_GRPCFRAME_NEED_MORE  all of <data> was taken, no message is complete;
 *   FG_GRPCFRAME_MESSAGE    <*msg> is filled; <len> - <*used> bytes are left;
 *   FG_EINVAL     a Compressed-Flag other than 0 or 1 (detected at that byte);
 *   FG_ETOOBIG    a Message-Length above <max_message> (detected at the last
 *                 prefix byte, before any of the body is read or stored);
 *   FG_ENOMEM     growing the buffer of a split message failed.  Not sticky:
 *                 the bytes of the failed step are not counted in <*used>;
 *                 feeding them again resumes.
 * FG_EINVAL and FG_ETOOBIG are sticky: every later feed returns the same
 * code, taking nothing, until fg_grpcframe_reader_reset().  On error,
 * <*why> (when <why> is not NULL) is a static string for logs.
 */
int fg_grpcframe_reader_feed(struct fg_grpcframe_reader *r, const uint8_t *data, size_t len,
                             size_t *used, struct fg_grpcframe_msg *msg, const char **why);

/*
 * fg_grpcframe_reader_pending - bytes of a message received but not yet
 * complete (prefix included); 0 at a message boundary.  At end of stream a
 * non-zero value means the peer stopped mid-message: the request or
 * response is malformed.  After a protocol error it stays non-zero.
 */
size_t fg_grpcframe_reader_pending(const struct fg_grpcframe_reader *r);

/*
 * fg_grpcframe_reader_next_compressed - 1 when the message <r> is in the
 * middle of, or else the one the next bytes <data>[0 .. <len>) start, has
 * its compressed flag set (any flag byte but 0 counts); 0 otherwise, and
 * when <len> is 0 between messages.  Lets a caller hold bytes that would
 * inflate to far more than they are.
 */
int fg_grpcframe_reader_next_compressed(const struct fg_grpcframe_reader *r, const uint8_t *data, size_t len);

/*
 * fg_grpcframe_reader_room - how many of the <len> bytes at <data> (the
 * next input) <r> can take without completing a message: all of them, or
 * all but the last byte of the message they would complete.  For a caller
 * that must not see a message yet but would rather have the reader hold
 * the bytes (it keeps a split message's body anyway) than copy them aside.
 * A prefix that the bytes would make invalid is not judged here: the feed
 * refuses it as usual.
 */
size_t fg_grpcframe_reader_room(const struct fg_grpcframe_reader *r, const uint8_t *data, size_t len);

/*
 * fg_grpcframe_reader_reset - back to a message boundary, forgetting a
 * partial message and a sticky error; <max_message> is kept, the buffer too
 * unless it is larger than FG_GRPCFRAME_READER_KEEP.
 */
void fg_grpcframe_reader_reset(struct fg_grpcframe_reader *r);

/*
 * fg_grpcframe_reader_free - release the reader's memory; <r> is then as
 * after fg_grpcframe_reader_init() with the same <max_message>, so freeing
 * twice is harmless.  Messages handed out from <r> become invalid.
 */
void fg_grpcframe_reader_free(struct fg_grpcframe_reader *r);

/*
 * fg_grpcframe_encoding_parse - the coding named by a grpc-encoding value
 * (<len> bytes at <v>, not NUL-terminated) into <*enc>.  Optional spaces and
 * tabs around the name are ignored (PROTOCOL-HTTP2.md: ASCII-Value "may be
 * stripped").  Names are case-sensitive: the spec lists them as lowercase
 * tokens and grpc-core, grpc-go and grpc-java all compare them exactly, so
 * "GZIP" is unknown to the upstream too; folding case here would let
 * feedguard read a message the upstream then reads differently.
 * Returns 0, or
 *   FG_ENOTFOUND  a well-formed name feedguard does not implement ("snappy",
 *                 "zstd", "GZIP"): the call should end with UNIMPLEMENTED;
 *   FG_EINVAL     an empty value or a list (a ',' where one name belongs).
 * A call without the header is identity; that is the caller's business.
 */
int fg_grpcframe_encoding_parse(const char *v, size_t len, enum fg_grpcframe_enc *enc);

/*
 * fg_grpcframe_accept_parse - the mask (FG_GRPCFRAME_ENC_BIT) of the codings
 * named in a grpc-accept-encoding value (<len> bytes at <v>): names
 * separated by ',' with optional spaces and tabs, compared case-sensitively
 * as above.  Unknown names and empty elements are skipped (a peer may list
 * codings feedguard lacks).  Identity is always in the result: every peer
 * must accept a message with flag 0.  Cannot fail, does not allocate.
 */
unsigned fg_grpcframe_accept_parse(const char *v, size_t len);

/*
 * fg_grpcframe_accept_narrow - the grpc-accept-encoding value to send on
 * for a client's value <v> (<len> bytes; NULL: none): "identity" and the
 * codings both the client and feedguard read, so a response stays
 * readable here and an unedited one still reaches the client in a coding
 * it accepts.  Written to <out> (at least FG_GRPCFRAME_ACCEPT_MAX bytes),
 * NUL-terminated; returns its length.
 */
#define FG_GRPCFRAME_ACCEPT_MAX 32
size_t fg_grpcframe_accept_narrow(const char *v, size_t len, char *out);

/* fg_grpcframe_encoding_name - "identity", "gzip", "deflate"; NULL for other values. */
const char *fg_grpcframe_encoding_name(enum fg_grpcframe_enc enc);

/*
 * fg_grpcframe_zctx_new - an inflate context for fg_grpcframe_inflate(),
 * returned owned in <*z> (free with fg_grpcframe_zctx_free).  Keep one per
 * worker: it saves zlib's ~40 KiB of state and window per message.  A zctx
 * is not thread-safe and holds nothing between calls that matters (each
 * inflate starts with a reset, as gRPC keeps no context across messages).
 * Returns 0 or FG_ENOMEM (<*z> is then NULL).
 */
int fg_grpcframe_zctx_new(struct fg_grpcframe_zctx **z);

/* fg_grpcframe_zctx_free - release <z>; NULL does nothing. */
void fg_grpcframe_zctx_free(struct fg_grpcframe_zctx *z);

/*
 * fg_grpcframe_inflate - decompress one message (<len> bytes at <in>,
 * borrowed) compressed with <enc>, appending the result to <out>.  <z> is a
 * context from fg_grpcframe_zctx_new(), or NULL for a one-shot z_stream
 * (allocated and released inside the call).  IDENTITY copies the bytes;
 * note that a message with flag 1 on a call without grpc-encoding (or with
 * "identity") breaks the spec ("the Compressed-Flag must be 0"), and
 * grpc-go fails such a call with INTERNAL: refuse it, do not copy it.
 *
 * <max_out> bounds the bytes this call appends (values above
 * FG_GRPCFRAME_MAX_LEN count as FG_GRPCFRAME_MAX_LEN: the result must fit a
 * message again).  Decoding stops as soon as the output would exceed it,
 * so an inflation bomb costs at most <max_out> + 1 bytes of <out>: its
 * memory grows to exactly what is offered to zlib (fg_bufq_reserve_exact),
 * never rounded up, so to at most its length on entry + <max_out> + 1.
 *
 * gzip must be exactly one member: a second member, or any byte after the
 * end of the compressed stream, is trailing garbage (grpc-core rejects it
 * too).  A preset dictionary (zlib FDICT) is refused: gRPC has no way to
 * agree on one.
 *
 * Returns 0, or
 *   FG_ETOOBIG    the output would exceed <max_out>, or <len> exceeds
 *                 FG_GRPCFRAME_MAX_LEN;
 *   FG_EINVAL     corrupt or truncated data, a bad checksum, trailing bytes;
 *   FG_ENOTFOUND  <enc> is not one of enum fg_grpcframe_enc;
 *   FG_ENOMEM     growing <out> or setting up zlib failed.
 * On error <out>'s length is as it was on entry (its memory may have grown;
 * <out> still owns it) and <*why> (when <why> is not NULL) is a static
 * string for logs.  <z> stays usable after any error.
 */
int fg_grpcframe_inflate(struct fg_grpcframe_zctx *z, enum fg_grpcframe_enc enc,
                         const uint8_t *in, size_t len, size_t max_out,
                         struct fg_bufq *out, const char **why);

/*
 * fg_grpcframe_deflate - compress <len> bytes at <in> with <enc>, appending
 * the result to <out> (a gzip member with no name and mtime 0, so the output
 * depends only on the input).  IDENTITY copies.  feedguard normally sends
 * edited messages uncompressed with flag 0, which the spec allows on any
 * call; this exists for peers and tests that want compression.  Uses a
 * fresh z_stream per call (~256 KiB while it runs).
 * Returns 0, or FG_ETOOBIG (<len> exceeds FG_GRPCFRAME_MAX_LEN, or zlib's
 * worst case for it, deflateBound(), does), FG_ENOTFOUND (<enc> unknown),
 * FG_ENOMEM.  On error <out>'s length is as on entry.
 */
int fg_grpcframe_deflate(enum fg_grpcframe_enc enc, const uint8_t *in, size_t len,
                         struct fg_bufq *out);

/*
 * fg_grpcframe_write_prefix - the 5-byte prefix of a message of <len> bytes
 * with Compressed-Flag <flag> into <out>.  Cannot fail.
 */
void fg_grpcframe_write_prefix(uint8_t out[FG_GRPC_PREFIX_LEN], enum fg_grpcframe_flag flag,
                               uint32_t len);

/*
 * fg_grpcframe_append - append the prefix and the <len> bytes at <msg>
 * (borrowed; may be NULL when <len> is 0; not in <b>'s memory) to <b>.
 * Returns 0, FG_ETOOBIG when <len> exceeds FG_GRPCFRAME_MAX_LEN, or
 * FG_ENOMEM; on error <b> is unchanged in content.
 */
int fg_grpcframe_append(struct fg_bufq *b, enum fg_grpcframe_flag flag,
                        const uint8_t *msg, size_t len);

#endif /* FG_GRPCFRAME_H */
