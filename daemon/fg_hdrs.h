/*
 * fg_hdrs.h - an HTTP/2 header list collected from one HEADERS frame and
 * handed to nghttp2 for another.
 *
 * Names and values are copied into one byte queue (struct fg_bufq: one
 * allocation for most requests, not two per header) and turned into an
 * nghttp2_nv array only when submitted.  The list also counts the HPACK size
 * (name + value + 32 per RFC 9113 §6.5.2) so callers can enforce
 * SETTINGS_MAX_HEADER_LIST_SIZE.
 */
#ifndef FG_HDRS_H
#define FG_HDRS_H

#include <stddef.h>
#include <stdint.h>
#include <nghttp2/nghttp2.h>

#include "fg_bufq.h"

struct fg_hdrs_entry {
	uint32_t name_off;      /* offset of the name from fg_bufq_head(&<buf>) */
	uint32_t name_len;
	uint32_t value_off;     /* offset of the value from fg_bufq_head(&<buf>) */
	uint32_t value_len;
	uint8_t flags;          /* NGHTTP2_NV_FLAG_NO_INDEX is kept for sensitive headers */
};

struct fg_hdrs {
	struct fg_bufq buf;             /* names and values, back to back (never consumed) */
	struct fg_hdrs_entry *ent;      /* one per header, in arrival order */
	size_t n, ncap;                 /* entries used / allocated */
	nghttp2_nv *nv;                 /* built by fg_hdrs_nv(), valid until the next change */
	size_t nvcap;                   /* entries allocated at <nv> */
	size_t list_size;               /* RFC 9113 §6.5.2 header list size so far */
};

/* fg_hdrs_init - an empty list; no allocation until the first add. */
void fg_hdrs_init(struct fg_hdrs *h);

/* fg_hdrs_reset - forget every header but keep the memory for reuse. */
void fg_hdrs_reset(struct fg_hdrs *h);

/* fg_hdrs_free - release the memory; <h> is then as after fg_hdrs_init.  */
void fg_hdrs_free(struct fg_hdrs *h);

/*
 * fg_hdrs_add - append a copy of <name>/<value> (lengths given, not
 * NUL-terminated).  <flags> is the nghttp2 header flags word as received.
 * Returns 0, or FG_ENOMEM (the list is unchanged), or FG_ETOOBIG when the
 * list would exceed 4 GiB.
 */
int fg_hdrs_add(struct fg_hdrs *h, const uint8_t *name, size_t namelen,
                const uint8_t *value, size_t valuelen, uint8_t flags);

/*
 * fg_hdrs_nv - an nghttp2_nv array of the <h->n> headers, owned by <h>
 * (valid until the next add, reset or free).  NULL on allocation failure
 * or when the list is empty.
 */
nghttp2_nv *fg_hdrs_nv(struct fg_hdrs *h);

/*
 * fg_hdrs_find - the value of the first header named <name> (NUL-terminated,
 * lowercase as HTTP/2 requires), its length in <*len>; NULL if absent.
 * The pointer is into <h> and is not NUL-terminated.
 */
const char *fg_hdrs_find(const struct fg_hdrs *h, const char *name, size_t *len);

/*
 * fg_hdrs_find_single - as fg_hdrs_find, but NULL also when <name> appears
 * more than once with different values: a client that sends its own copy
 * of a header ahead of the one the platform's gateway adds must not pick
 * which one counts, so a conflict reads as malformed.
 */
const char *fg_hdrs_find_single(const struct fg_hdrs *h, const char *name, size_t *len);

/*
 * fg_hdrs_remove - drop every header named <name> (NUL-terminated,
 * lowercase), keeping the order of the others; their bytes stay in <buf>
 * until the next reset.  Returns how many were dropped.
 */
size_t fg_hdrs_remove(struct fg_hdrs *h, const char *name);

/* Longest grpc-message feedguard writes, percent-encoded (longer texts are cut). */
#define FG_HDRS_GRPC_MESSAGE_MAX 512

/*
 * fg_hdrs_add_grpc_response - append the headers that open a gRPC response
 * of feedguard's own: ":status: 200" and "content-type: application/grpc".
 * Returns 0 or FG_ENOMEM.
 */
int fg_hdrs_add_grpc_response(struct fg_hdrs *h);

/*
 * fg_hdrs_add_grpc_status - append "grpc-status: <status>" and
 * "grpc-message: <msg>" (plain text, percent-encoded here, cut to
 * FG_HDRS_GRPC_MESSAGE_MAX; NULL is empty).  Returns 0 or FG_ENOMEM.
 */
int fg_hdrs_add_grpc_status(struct fg_hdrs *h, int status, const char *msg);

#endif /* FG_HDRS_H */
