/*
 * fg_intercept.h - the policy stage of a call whose method the policy
 * names: it learns the caller's age band and pseudonymous user key, fixes
 * the request headers, and turns the request and response byte streams
 * into edited gRPC messages.
 *
 * The call module (fg_call) owns the HTTP/2 side and flow control and
 * calls in here with bytes as they arrive; this module owns the gRPC side:
 * message framing and compression (fg_grpcframe), the policy program
 * (fg_policy_eval) and the key ring (fg_keyring).  A message goes out as
 * its original bytes when the policy changed nothing in it, and otherwise
 * edited and uncompressed (flag 0, which gRPC allows on any call).
 *
 * Failures carry the gRPC status the client should get and a message.
 * Loop thread of the owning worker only.
 */
#ifndef FG_INTERCEPT_H
#define FG_INTERCEPT_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"
#include "fg_config.h"
#include "fg_grpcframe.h"
#include "fg_hdrs.h"
#include "fg_keyring.h"
#include "fg_pbwire.h"
#include "fg_policy-t.h"

#define FG_INTERCEPT_MSG_MAX 256

/* Why a call failed in the stage: what the client is told. */
struct fg_intercept_err {
	int status;                         /* gRPC status code */
	char msg[FG_INTERCEPT_MSG_MAX];     /* plain text (encoded for grpc-message by the caller) */
};

/*
 * Ended stages a worker keeps for its next intercepted calls, with their
 * message buffers (each up to FG_GRPCFRAME_READER_KEEP): in steady state
 * an intercepted call allocates nothing, and a message split across DATA
 * frames is assembled into memory that already has its size.
 */
#define FG_INTERCEPT_SPARE_MAX 32

struct fg_intercept;

/* What a worker lends every intercepted call (reused, never shared across threads). */
struct fg_intercept_env {
	struct fg_intercept *spare;         /* ended stages kept for reuse (linked by <next_spare>) */
	size_t nspare;                      /* at most FG_INTERCEPT_SPARE_MAX */
	struct fg_grpcframe_zctx *zctx;     /* inflate state */
	struct fg_grpcframe_buf plain;      /* scratch: the inflated message being edited */
	struct fg_pbwire_buf edited;        /* scratch: the edited message */
	struct fg_keyring_ctx *keys;        /* HMAC contexts of the worker's key ring; NULL without keys */
	size_t slot;                        /* the worker's counter slot */
};

struct fg_intercept {
	struct fg_config *cfg;                  /* reference held for the call: the policy lives in it */
	const struct fg_policy *pol;
	const struct fg_policy_method *m;
	struct fg_intercept_env *env;        /* the worker's: scratch buffers shared by its calls, one at a time */
	size_t band;                            /* valid once <band_known> */
	unsigned band_known;
	enum fg_grpcframe_enc req_enc;          /* the request's grpc-encoding */
	enum fg_grpcframe_enc resp_enc;         /* the response's, from its headers */
	struct fg_grpcframe_reader req;         /* request messages being assembled */
	struct fg_grpcframe_reader resp;
	unsigned req_messages;                  /* request messages seen */
	char user[FG_KEYRING_PSEUDONYM_MAX];    /* pseudonymous user key; "" when the call carries none */
	struct fg_intercept *next_spare;        /* in <env>->spare once ended */
};

/*
 * fg_intercept_begin - start the stage for a call to <path> (<len> bytes)
 * with request headers <h> under <cfg>.  Stores NULL in <*out> and returns
 * 0 when the policy does not intercept the method, or when the headers
 * already tell a band for which the policy edits nothing (the call is
 * counted, then passes through untouched).  Otherwise stores a new stage (returned owned:
 * fg_intercept_free; it holds a reference on <cfg>) and returns 0, or
 * returns FG_EINVAL with <err> filled (an unreadable grpc-encoding:
 * UNIMPLEMENTED) or FG_ENOMEM.
 */
int fg_intercept_begin(struct fg_intercept **out, struct fg_config *cfg, struct fg_intercept_env *env,
                       const char *path, size_t len, const struct fg_hdrs *h, struct fg_intercept_err *err);

/*
 * fg_intercept_ready - 1 when the band is decided and the request headers
 * can go upstream; 0 while the band (or user id) must be read from the
 * first request message.
 */
int fg_intercept_ready(const struct fg_intercept *ic);

/*
 * fg_intercept_headers - the request headers to send upstream, built from
 * <in> into <out> (reset first): the band's remove_headers and
 * content-length (edited messages change the length) dropped, and
 * grpc-accept-encoding narrowed to the codings both the client and
 * feedguard read, so responses stay editable and an unedited one still
 * reaches the client in a coding it accepts.  Only once
 * fg_intercept_ready().  Returns 0 or FG_ENOMEM.
 */
int fg_intercept_headers(const struct fg_intercept *ic, const struct fg_hdrs *in, struct fg_hdrs *out);

/* fg_intercept_trailers - request trailers <in> into <out> without the
 * band's remove_headers.  Returns 0 or FG_ENOMEM. */
int fg_intercept_trailers(const struct fg_intercept *ic, const struct fg_hdrs *in, struct fg_hdrs *out);

/*
 * fg_intercept_request - take request body bytes from the <len> at <data>;
 * each complete message is edited and appended, framed, to <out>.  Stops
 * after a message once <out> holds more than <limit> bytes; <*taken> says
 * how many bytes were used (the caller keeps the rest for later).  Returns
 * 0, or a negative FG_E* with <err> filled: INVALID_ARGUMENT (not a valid
 * message, bad flag), RESOURCE_EXHAUSTED (over limits.max_message_size,
 * also after inflating), INTERNAL (out of memory).
 */
int fg_intercept_request(struct fg_intercept *ic, const uint8_t *data, size_t len, struct fg_bufq *out,
                         size_t limit, size_t *taken, struct fg_intercept_err *err);

/* fg_intercept_request_end - the request ended; a partial message is
 * INVALID_ARGUMENT.  Decides the band if no message did. */
int fg_intercept_request_end(struct fg_intercept *ic, struct fg_intercept_err *err);

/*
 * fg_intercept_response_headers - the upstream's response headers <h>:
 * reads its grpc-encoding (one feedguard cannot read is INTERNAL: it was
 * told what to use).  Returns 0 or FG_EINVAL with <err>.
 */
int fg_intercept_response_headers(struct fg_intercept *ic, const struct fg_hdrs *h, struct fg_intercept_err *err);

/* fg_intercept_response - as fg_intercept_request for response bytes
 * (a malformed response message is INTERNAL). */
int fg_intercept_response(struct fg_intercept *ic, const uint8_t *data, size_t len, struct fg_bufq *out,
                          size_t limit, size_t *taken, struct fg_intercept_err *err);

/* fg_intercept_response_end - the response ended; a partial message is INTERNAL. */
int fg_intercept_response_end(struct fg_intercept *ic, struct fg_intercept_err *err);

/* fg_intercept_streaming_response - 1 for server-streaming methods, whose
 * response headers are forwarded at once (added metadata goes in the
 * trailers); 0 for unary responses, whose headers wait for the edited
 * message. */
int fg_intercept_streaming_response(const struct fg_intercept *ic);

/* fg_intercept_free - end the stage: it drops its reference on the config
 * and goes back to its env's spares (or is freed when they are full).
 * NULL is a no-op. */
void fg_intercept_free(struct fg_intercept *ic);

/* fg_intercept_env_release - free <env>'s spare stages and scratch
 * buffers, at worker exit, after its last call has ended. */
void fg_intercept_env_release(struct fg_intercept_env *env);

#endif /* FG_INTERCEPT_H */
