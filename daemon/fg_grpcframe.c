/* fg_grpcframe.c - gRPC message framing and per-message compression; see fg_grpcframe.h. */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
/* next_in as a const pointer: the input is borrowed and never written */
#define ZLIB_CONST 1
#include <zlib.h>

#include "fg_error.h"
#include "fg_grpcframe.h"

/* First allocation of the reader's buffer and least room offered to
 * inflate: small messages need one realloc. */
#define BUF_MIN 256
/* Offsets in the prefix (PROTOCOL-HTTP2.md Length-Prefixed-Message). */
#define PREFIX_FLAG 0
#define PREFIX_LENGTH 1
/* zlib window bits: 15 is the zlib format (RFC 1950), +16 asks for gzip. */
#define ZLIB_WBITS MAX_WBITS
#define GZIP_WBITS (16 + MAX_WBITS)
/* zlib's default memory level for deflateInit2 (zconf.h DEF_MEM_LEVEL). */
#define DEFLATE_MEMLEVEL 8
/* Guess of the compression ratio for the first output allocation. */
#define INFLATE_RATIO_GUESS 4

struct fg_grpcframe_zctx {
	z_stream zs;                    /* initialised for inflate; reset per message */
};

static void set_why(const char **why, const char *text)
{
	if (why)
		*why = text;
}

/* ---- framing ---- */

void fg_grpcframe_write_prefix(uint8_t out[FG_GRPC_PREFIX_LEN], enum fg_grpcframe_flag flag,
                               uint32_t len)
{
	out[PREFIX_FLAG] = flag == FG_GRPCFRAME_UNCOMPRESSED ? 0 : 1;
	out[PREFIX_LENGTH] = (uint8_t)(len >> 24);
	out[PREFIX_LENGTH + 1] = (uint8_t)(len >> 16);
	out[PREFIX_LENGTH + 2] = (uint8_t)(len >> 8);
	out[PREFIX_LENGTH + 3] = (uint8_t)len;
}

int fg_grpcframe_append(struct fg_bufq *b, enum fg_grpcframe_flag flag,
                        const uint8_t *msg, size_t len)
{
	uint8_t *p;
	int rc;

	if (len > FG_GRPCFRAME_MAX_LEN)
		return FG_ETOOBIG;
	rc = fg_bufq_reserve(b, FG_GRPC_PREFIX_LEN + len);
	if (rc)
		return rc;
	p = fg_bufq_tail(b);
	fg_grpcframe_write_prefix(p, flag, (uint32_t)len);
	if (len)
		memcpy(p + FG_GRPC_PREFIX_LEN, msg, len);
	fg_bufq_commit(b, FG_GRPC_PREFIX_LEN + len);
	return 0;
}

/* ---- reader ---- */

void fg_grpcframe_reader_init(struct fg_grpcframe_reader *r, size_t max_message)
{
	memset(r, 0, sizeof(*r));
	r->state = FG_GRPCFRAME_R_PREFIX;
	r->max_message = max_message;
}

void fg_grpcframe_reader_free(struct fg_grpcframe_reader *r)
{
	free(r->buf);
	fg_grpcframe_reader_init(r, r->max_message);
}

/* Back to a message boundary, dropping a buffer that one big message grew. */
static void reader_rewind(struct fg_grpcframe_reader *r)
{
	if (r->cap > FG_GRPCFRAME_READER_KEEP) {
		free(r->buf);
		r->buf = NULL;
		r->cap = 0;
	}
	r->state = FG_GRPCFRAME_R_PREFIX;
	r->prefix_len = 0;
	r->have = 0;
	r->msg_len = 0;
	r->flag = FG_GRPCFRAME_UNCOMPRESSED;
}

void fg_grpcframe_reader_reset(struct fg_grpcframe_reader *r)
{
	reader_rewind(r);
	r->err = 0;
	r->why = NULL;
}

size_t fg_grpcframe_reader_room(const struct fg_grpcframe_reader *r, const uint8_t *data, size_t len)
{
	uint8_t pre[FG_GRPC_PREFIX_LEN];
	size_t have = 0, need;
	uint32_t body;

	switch (r->state) {
	case FG_GRPCFRAME_R_BODY:
		need = r->msg_len - r->have;
		return len < need ? len : need - 1;
	case FG_GRPCFRAME_R_FAILED:
		return 0;
	case FG_GRPCFRAME_R_PREFIX:
		have = r->prefix_len;
		memcpy(pre, r->prefix, have);
		break;
	case FG_GRPCFRAME_R_DELIVERED:
		break;
	}
	need = FG_GRPC_PREFIX_LEN - have;
	if (len < need)
		return len;             /* the prefix stays incomplete */
	memcpy(pre + have, data, need);
	body = (uint32_t)pre[1] << 24 | (uint32_t)pre[2] << 16 | (uint32_t)pre[3] << 8 | pre[4];
	/* everything but the message's last byte (its last prefix byte when
	 * the body is empty) */
	return len < need + body ? len : need + body - 1;
}

int fg_grpcframe_reader_next_compressed(const struct fg_grpcframe_reader *r, const uint8_t *data, size_t len)
{
	if ((r->state == FG_GRPCFRAME_R_PREFIX && r->prefix_len > 0) || r->state == FG_GRPCFRAME_R_BODY)
		return r->flag != FG_GRPCFRAME_UNCOMPRESSED;
	return len > 0 && data[0] != 0;
}

size_t fg_grpcframe_reader_pending(const struct fg_grpcframe_reader *r)
{
	switch (r->state) {
	case FG_GRPCFRAME_R_PREFIX:
		return r->prefix_len;
	case FG_GRPCFRAME_R_BODY:
		return FG_GRPC_PREFIX_LEN + r->have;
	case FG_GRPCFRAME_R_DELIVERED:
		return 0;
	case FG_GRPCFRAME_R_FAILED:
		break;
	}
	/* the bytes of the refused prefix, at least the flag byte: never 0 */
	return r->prefix_len;
}

static int reader_fail(struct fg_grpcframe_reader *r, int err, const char *text)
{
	r->state = FG_GRPCFRAME_R_FAILED;
	r->err = err;
	r->why = text;
	return err;
}

static int reader_deliver(struct fg_grpcframe_reader *r, const uint8_t *body,
                          struct fg_grpcframe_msg *msg)
{
	static const uint8_t empty[1];

	msg->data = r->msg_len ? body : empty;
	msg->len = r->msg_len;
	msg->flag = r->flag;
	r->state = FG_GRPCFRAME_R_DELIVERED;
	return FG_GRPCFRAME_MESSAGE;
}

static uint32_t prefix_length(const uint8_t *p)
{
	return (uint32_t)p[PREFIX_LENGTH] << 24 | (uint32_t)p[PREFIX_LENGTH + 1] << 16 |
	       (uint32_t)p[PREFIX_LENGTH + 2] << 8 | (uint32_t)p[PREFIX_LENGTH + 3];
}

/*
 * State PREFIX: take up to the rest of the 5 bytes.  The flag is judged at
 * its own byte and the length at the last one, so a bad or oversized
 * message is refused before any of its body is read, let alone stored.
 */
static int read_prefix(struct fg_grpcframe_reader *r, const uint8_t *data, size_t len,
                       size_t *n, struct fg_grpcframe_msg *msg)
{
	size_t take = FG_GRPC_PREFIX_LEN - r->prefix_len;

	if (take > len)
		take = len;
	*n = take;
	if (take == 0)
		return FG_GRPCFRAME_NEED_MORE;
	memcpy(r->prefix + r->prefix_len, data, take);
	if (r->prefix_len == 0) {
		if (data[0] > FG_GRPCFRAME_COMPRESSED) {
			r->prefix_len = 1;
			*n = 1;
			return reader_fail(r, FG_EINVAL, "compressed flag is neither 0 nor 1");
		}
		r->flag = data[0];
	}
	r->prefix_len += take;
	if (r->prefix_len < FG_GRPC_PREFIX_LEN)
		return FG_GRPCFRAME_NEED_MORE;
	r->msg_len = prefix_length(r->prefix);
	if (r->msg_len > r->max_message)
		return reader_fail(r, FG_ETOOBIG, "message longer than the limit");
	r->state = FG_GRPCFRAME_R_BODY;
	if (r->msg_len == 0)
		return reader_deliver(r, NULL, msg);
	return FG_GRPCFRAME_NEED_MORE;
}

/*
 * Grow the body buffer for <need> bytes.  Geometric, but never past the
 * declared length and never ahead of what arrived by more than 2x: a peer
 * that declares 4 MiB and sends 5 bytes does not get 4 MiB reserved.
 */
static int reader_grow(struct fg_grpcframe_reader *r, size_t need)
{
	size_t cap = r->cap ? r->cap * 2 : BUF_MIN;
	uint8_t *p;

	if (need <= r->cap)
		return 0;
	if (cap < need)
		cap = need <= SIZE_MAX / 2 ? need * 2 : need;
	if (cap > r->msg_len)
		cap = r->msg_len;
	p = realloc(r->buf, cap);
	if (!p)
		return FG_ENOMEM;
	r->buf = p;
	r->cap = cap;
	return 0;
}

/* State BODY: hand the body out in place when it is all here, else collect it. */
static int read_body(struct fg_grpcframe_reader *r, const uint8_t *data, size_t len,
                     size_t *n, struct fg_grpcframe_msg *msg)
{
	size_t take = r->msg_len - r->have;

	*n = 0;
	if (r->have == 0 && len >= take) {
		*n = take;
		return reader_deliver(r, data, msg);
	}
	if (take > len)
		take = len;
	if (take == 0)
		return FG_GRPCFRAME_NEED_MORE;
	if (reader_grow(r, r->have + take))
		return FG_ENOMEM;
	memcpy(r->buf + r->have, data, take);
	r->have += take;
	*n = take;
	if (r->have < r->msg_len)
		return FG_GRPCFRAME_NEED_MORE;
	return reader_deliver(r, r->buf, msg);
}

static int reader_step(struct fg_grpcframe_reader *r, const uint8_t *data, size_t len,
                       size_t *n, struct fg_grpcframe_msg *msg)
{
	switch (r->state) {
	case FG_GRPCFRAME_R_PREFIX:
		return read_prefix(r, data, len, n, msg);
	case FG_GRPCFRAME_R_BODY:
		return read_body(r, data, len, n, msg);
	case FG_GRPCFRAME_R_DELIVERED:
		/* the message handed out last time is released only now */
		reader_rewind(r);
		*n = 0;
		return FG_GRPCFRAME_NEED_MORE;
	case FG_GRPCFRAME_R_FAILED:
		break;
	}
	*n = 0;
	return r->err;
}

int fg_grpcframe_reader_feed(struct fg_grpcframe_reader *r, const uint8_t *data, size_t len,
                             size_t *used, struct fg_grpcframe_msg *msg, const char **why)
{
	size_t off = 0, n;
	int rc;

	/* one step even for empty input: it releases the message handed out last */
	do {
		/* NULL + 0 is undefined in C: (NULL, 0) is valid input */
		rc = reader_step(r, off ? data + off : data, len - off, &n, msg);
		off += n;
	} while (rc == FG_GRPCFRAME_NEED_MORE && off < len);
	*used = off;
	if (rc == FG_ENOMEM)
		set_why(why, "out of memory assembling a message");
	else if (rc < 0)
		set_why(why, r->why);
	return rc;
}

/* ---- encodings ---- */

static const char *const enc_names[FG_GRPCFRAME_ENC_COUNT] = {
	[FG_GRPCFRAME_IDENTITY] = "identity",
	[FG_GRPCFRAME_GZIP] = "gzip",
	[FG_GRPCFRAME_DEFLATE] = "deflate",
};

const char *fg_grpcframe_encoding_name(enum fg_grpcframe_enc enc)
{
	if ((unsigned)enc >= FG_GRPCFRAME_ENC_COUNT)
		return NULL;
	return enc_names[enc];
}

/* HTTP optional whitespace (RFC 9110 §5.6.3): SP and HTAB. */
static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static void trim_ows(const char **v, size_t *len)
{
	while (*len > 0 && is_ows((*v)[0])) {
		(*v)++;
		(*len)--;
	}
	while (*len > 0 && is_ows((*v)[*len - 1]))
		(*len)--;
}

/* The coding named exactly <v>/<len>, or -1. */
static int enc_lookup(const char *v, size_t len)
{
	int i;

	for (i = 0; i < FG_GRPCFRAME_ENC_COUNT; i++)
		if (strlen(enc_names[i]) == len && memcmp(enc_names[i], v, len) == 0)
			return i;
	return -1;
}

int fg_grpcframe_encoding_parse(const char *v, size_t len, enum fg_grpcframe_enc *enc)
{
	int e;

	trim_ows(&v, &len);
	if (len == 0 || memchr(v, ',', len))
		return FG_EINVAL;
	e = enc_lookup(v, len);
	if (e < 0)
		return FG_ENOTFOUND;
	*enc = (enum fg_grpcframe_enc)e;
	return 0;
}

/* The mask bit of one list element (spaces around it allowed), or 0. */
static unsigned accept_one(const char *v, size_t len)
{
	int e;

	trim_ows(&v, &len);
	e = enc_lookup(v, len);
	return e < 0 ? 0 : FG_GRPCFRAME_ENC_BIT(e);
}

unsigned fg_grpcframe_accept_parse(const char *v, size_t len)
{
	unsigned mask = FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_IDENTITY);
	const char *comma;
	size_t n;

	for (;;) {
		comma = len ? memchr(v, ',', len) : NULL;
		n = comma ? (size_t)(comma - v) : len;
		mask |= accept_one(v, n);
		if (!comma)
			return mask;
		v += n + 1;
		len -= n + 1;
	}
}

/* ---- compression ---- */

/*
 * zlib allocates through these rather than its built-in malloc so that its
 * memory is ours to account for (and to fail, in tests) like the rest.
 */
static voidpf zalloc_cb(voidpf opaque, uInt items, uInt size)
{
	if (size != 0 && items > SIZE_MAX / size)
		return Z_NULL;
	return malloc((size_t)items * size);
}

static void zfree_cb(voidpf opaque, voidpf p)
{
	free(p);
}

static void zstream_prepare(z_stream *zs)
{
	memset(zs, 0, sizeof(*zs));
	zs->zalloc = zalloc_cb;
	zs->zfree = zfree_cb;
}

static int enc_wbits(enum fg_grpcframe_enc enc)
{
	return enc == FG_GRPCFRAME_GZIP ? GZIP_WBITS : ZLIB_WBITS;
}

int fg_grpcframe_zctx_new(struct fg_grpcframe_zctx **out)
{
	struct fg_grpcframe_zctx *z;

	*out = NULL;
	z = malloc(sizeof(*z));
	if (!z)
		return FG_ENOMEM;
	zstream_prepare(&z->zs);
	/* Z_MEM_ERROR, or Z_VERSION_ERROR from a libz of another major
	 * version: neither leaves a usable context, both are fatal */
	if (inflateInit2(&z->zs, GZIP_WBITS) != Z_OK)
		goto fail_free_ctx;
	*out = z;
	return 0;

fail_free_ctx:
	free(z);
	return FG_ENOMEM;
}

void fg_grpcframe_zctx_free(struct fg_grpcframe_zctx *z)
{
	if (!z)
		return;
	inflateEnd(&z->zs);
	free(z);
}

/* Append <len> bytes, allocating exactly what they need. */
static int append_copy(struct fg_bufq *out, const uint8_t *in, size_t len)
{
	if (len == 0)
		return 0;
	if (len > SIZE_MAX - fg_bufq_len(out))
		return FG_ETOOBIG;
	if (fg_bufq_reserve_exact(out, len))
		return FG_ENOMEM;
	memcpy(fg_bufq_tail(out), in, len);
	fg_bufq_commit(out, len);
	return 0;
}

/*
 * Point zlib's output at free space in <out>.  The space offered never
 * reaches past <max_out> + 1 bytes of output: the extra byte is how a
 * stream that is exactly <max_out> long is told apart from a bomb, and it
 * is the only slack an attacker gets.  Growth doubles what was produced so
 * far, starting from a guess from the input size.
 */
static int inflate_room(z_stream *zs, struct fg_bufq *out, size_t produced,
                        size_t max_out, size_t in_len)
{
	size_t left = max_out - produced + 1;
	size_t room = fg_bufq_room(out);

	if (room == 0) {
		room = produced ? produced : in_len < SIZE_MAX / INFLATE_RATIO_GUESS ?
		       in_len * INFLATE_RATIO_GUESS : SIZE_MAX;
		if (room < BUF_MIN)
			room = BUF_MIN;
		if (room > left)
			room = left;
		if (room > SIZE_MAX - fg_bufq_len(out))
			return FG_ETOOBIG;
		if (fg_bufq_reserve_exact(out, room))
			return FG_ENOMEM;
	}
	if (room > left)
		room = left;
	if (room > UINT_MAX)
		room = UINT_MAX;
	zs->next_out = fg_bufq_tail(out);
	zs->avail_out = (uInt)room;
	return 0;
}

/* What one inflate() result means: 1 to go on, 0 done, or an FG_E*. */
static int inflate_verdict(z_stream *zs, int zrc, const char **why)
{
	switch (zrc) {
	case Z_OK:
		return 1;
	case Z_STREAM_END:
		if (zs->avail_in == 0)
			return 0;
		set_why(why, "trailing bytes after the compressed stream");
		return FG_EINVAL;
	case Z_BUF_ERROR:
		/* output space was offered, so zlib is starved of input */
		set_why(why, "truncated compressed stream");
		return FG_EINVAL;
	case Z_NEED_DICT:
		set_why(why, "compressed stream needs a preset dictionary");
		return FG_EINVAL;
	case Z_MEM_ERROR:
		set_why(why, "out of memory inflating a message");
		return FG_ENOMEM;
	default:
		/* zlib's messages are string literals, fine to keep */
		set_why(why, zs->msg ? zs->msg : "corrupt compressed stream");
		return FG_EINVAL;
	}
}

static int run_inflate(z_stream *zs, const uint8_t *in, size_t len, size_t max_out,
                       struct fg_bufq *out, const char **why)
{
	size_t start = fg_bufq_len(out);
	uInt given;
	int rc, zrc;

	zs->next_in = in;
	zs->avail_in = (uInt)len;
	do {
		rc = inflate_room(zs, out, fg_bufq_len(out) - start, max_out, len);
		if (rc) {
			set_why(why, rc == FG_ENOMEM ? "out of memory inflating a message" :
			             "output buffer would overflow");
			goto fail_rewind;
		}
		given = zs->avail_out;
		zrc = inflate(zs, Z_NO_FLUSH);
		fg_bufq_commit(out, given - zs->avail_out);
		rc = inflate_verdict(zs, zrc, why);
		if (rc >= 0 && fg_bufq_len(out) - start > max_out) {
			set_why(why, "inflated message longer than the limit");
			rc = FG_ETOOBIG;
		}
	} while (rc == 1);
	if (rc < 0)
		goto fail_rewind;
	return 0;

fail_rewind:
	fg_bufq_truncate(out, start);
	return rc;
}

int fg_grpcframe_inflate(struct fg_grpcframe_zctx *z, enum fg_grpcframe_enc enc,
                         const uint8_t *in, size_t len, size_t max_out,
                         struct fg_bufq *out, const char **why)
{
	z_stream one;
	int rc;

	if ((unsigned)enc >= FG_GRPCFRAME_ENC_COUNT) {
		set_why(why, "unknown message encoding");
		return FG_ENOTFOUND;
	}
	/* the output must fit a message again; SIZE_MAX - 1 keeps + 1 safe on ILP32 */
	if (max_out > FG_GRPCFRAME_MAX_LEN)
		max_out = FG_GRPCFRAME_MAX_LEN;
	if (max_out > SIZE_MAX - 1)
		max_out = SIZE_MAX - 1;
	if (len > FG_GRPCFRAME_MAX_LEN || (enc == FG_GRPCFRAME_IDENTITY && len > max_out)) {
		set_why(why, "message longer than the limit");
		return FG_ETOOBIG;
	}
	if (enc == FG_GRPCFRAME_IDENTITY)
		return append_copy(out, in, len);
	if (z) {
		/* cannot fail for valid window bits; the window is kept when its size does not change */
		inflateReset2(&z->zs, enc_wbits(enc));
		return run_inflate(&z->zs, in, len, max_out, out, why);
	}
	zstream_prepare(&one);
	if (inflateInit2(&one, enc_wbits(enc)) != Z_OK) {
		set_why(why, "out of memory inflating a message");
		return FG_ENOMEM;
	}
	rc = run_inflate(&one, in, len, max_out, out, why);
	inflateEnd(&one);
	return rc;
}

/* One deflate(Z_FINISH) into deflateBound() bytes: zlib promises it completes. */
static int run_deflate(z_stream *zs, const uint8_t *in, size_t len, struct fg_bufq *out)
{
	uLong bound = deflateBound(zs, (uLong)len);
	int rc;

	if (bound > FG_GRPCFRAME_MAX_LEN)
		return FG_ETOOBIG;
	rc = fg_bufq_reserve(out, bound);
	if (rc)
		return rc;
	zs->next_in = in;
	zs->avail_in = (uInt)len;
	zs->next_out = fg_bufq_tail(out);
	zs->avail_out = (uInt)bound;
	rc = deflate(zs, Z_FINISH);
	if (rc != Z_STREAM_END)
		return rc == Z_MEM_ERROR ? FG_ENOMEM : FG_EINVAL;
	fg_bufq_commit(out, bound - zs->avail_out);
	return 0;
}

int fg_grpcframe_deflate(enum fg_grpcframe_enc enc, const uint8_t *in, size_t len,
                         struct fg_bufq *out)
{
	z_stream zs;
	int rc;

	if ((unsigned)enc >= FG_GRPCFRAME_ENC_COUNT)
		return FG_ENOTFOUND;
	if (len > FG_GRPCFRAME_MAX_LEN)
		return FG_ETOOBIG;
	if (enc == FG_GRPCFRAME_IDENTITY)
		return append_copy(out, in, len);
	zstream_prepare(&zs);
	if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, enc_wbits(enc), DEFLATE_MEMLEVEL,
	                 Z_DEFAULT_STRATEGY) != Z_OK)
		return FG_ENOMEM;
	rc = run_deflate(&zs, in, len, out);
	deflateEnd(&zs);
	return rc;
}

size_t fg_grpcframe_accept_narrow(const char *v, size_t len, char *out)
{
	unsigned mask = v ? fg_grpcframe_accept_parse(v, len) : 0;

	strcpy(out, "identity");
	if (mask & FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_DEFLATE))
		strcat(out, ",deflate");
	if (mask & FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_GZIP))
		strcat(out, ",gzip");
	return strlen(out);
}
