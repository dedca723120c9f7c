/*
 * fg_policy_eval.h - applying a compiled policy to one call: which method
 * entry applies, which band the caller is in, and the edited bytes of a
 * message.  Pure functions of the policy and their arguments (plus the
 * caller's own counter slot); no I/O, no libevent, no nghttp2.
 */
#ifndef FG_POLICY_EVAL_H
#define FG_POLICY_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "fg_pbwire.h"
#include "fg_policy-t.h"

/* Longest user id or band value read from a message or a header. */
#define FG_POLICY_VALUE_MAX 512
/* Longest user id, from a field or a header: a longer one is no id (the
 * call carries none), so that every id feedguardd keys state or a capture
 * under is one feedguardctl takes to show and erase. */
#define FG_USER_ID_MAX (FG_POLICY_VALUE_MAX - 1)

/* fg_policy_find_method - the entry for gRPC path <path> (<len> bytes), or NULL. */
const struct fg_policy_method *fg_policy_find_method(const struct fg_policy *p, const char *path, size_t len);

/*
 * fg_policy_grpc_path - 1 when <path> (<len> bytes) is a gRPC method path
 * as the protocol writes one, "/" service "/" method: letters, digits and
 * "_.-", one '/' before each part, no part empty or starting with '.'.
 * Anything else (a query string, a fragment, percent-escapes, "//", dot
 * segments, a trailing '/') no gRPC client sends, and a router that
 * normalises paths could take it to an intercepted method.
 */
int fg_policy_grpc_path(const char *path, size_t len);

/*
 * fg_policy_band - the band selected by value <v> (<len> bytes), or the
 * policy's unknown_band when <v> is NULL, empty or matches no band; then
 * <*why> (when not NULL) is set to FG_POLICY_U_ABSENT or
 * FG_POLICY_U_UNMATCHED, else left alone.
 */
size_t fg_policy_band(const struct fg_policy *p, const char *v, size_t len, enum fg_policy_unknown_reason *why);

/*
 * fg_policy_read_field - the value of FIELD source <s> in request message
 * <msg> (<len> bytes) as text into <buf> (<buflen> bytes, NUL-terminated;
 * integers as decimal).  Returns the text length, 0 when the field is
 * absent, or FG_EINVAL when the message is malformed or the value does not
 * fit (the caller treats that as absent: malformed input never selects a
 * less protective band).
 */
int fg_policy_read_field(const struct fg_policy_source *s, const uint8_t *msg, size_t len, char *buf,
                         size_t buflen);

/*
 * fg_policy_edit - run <e>'s program over message <msg> (<len> bytes) and
 * append the result to <out>.  Counts what was stripped in <p>'s counters
 * for <band> and counter slot <slot> (the worker's id).  <*changed> is 0
 * when the output is byte-identical to the input (then the caller may send
 * the original bytes).  Returns 0, FG_EINVAL (malformed message, <why> set)
 * or FG_ENOMEM.  A NULL program copies the message.
 */
int fg_policy_edit(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band, size_t slot,
                   const uint8_t *msg, size_t len, struct fg_bufq *out, int *changed, const char **why);

/*
 * fg_policy_edit_call - fg_policy_edit() with the call's own values for the
 * program's REPLACE rules: <user_key> (borrowed, NUL-terminated) is the
 * call's pseudonymous user key, which pseudonymized fields become; NULL or
 * "" when the call has none, and then those fields are removed (the value
 * the client sent never reaches the ranker).  fg_policy_edit() is this
 * with <user_key> NULL.
 */
int fg_policy_edit_call(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band, size_t slot,
                        const char *user_key, const uint8_t *msg, size_t len, struct fg_bufq *out, int *changed,
                        const char **why);

/*
 * fg_policy_edit_tally - fg_policy_edit_call() that also adds what the
 * edit removed or changed, per stat (fg_policy.stat_names), to <tally>
 * (<p->nstats> counters, saturating; NULL: not kept): one call's own
 * count, for its capture record.
 */
int fg_policy_edit_tally(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band, size_t slot,
                         const char *user_key, const uint8_t *msg, size_t len, struct fg_bufq *out, int *changed,
                         const char **why, uint32_t *tally);

/*
 * fg_policy_need_user - 1 when a call of <m> needs its pseudonymous user
 * key: its band (<band>, when <band_known>) pseudonymizes request fields,
 * or, the band not known yet (it comes from the request message, read
 * with the user id), some band of <m> does.  <nbands>: the policy's.
 */
int fg_policy_need_user(const struct fg_policy_method *m, size_t nbands, int band_known, size_t band);

/* fg_policy_zone - the zone named <v> (<len> bytes) when the policy's
 * time_zones lists it (a request may name only those), else the policy's
 * time_zone; <v> NULL: the policy's. */
const struct fg_tz *fg_policy_zone(const struct fg_policy *p, const char *v, size_t len);

/* fg_policy_count_call - one intercepted call of <m> in <band>, in slot <slot>. */
void fg_policy_count_call(const struct fg_policy *p, const struct fg_policy_method *m, size_t band, size_t slot);

/* fg_policy_count_unknown - one call of <m> in the unknown_band for
 * <why> (fg_policy_band's), in slot <slot>. */
void fg_policy_count_unknown(const struct fg_policy *p, const struct fg_policy_method *m,
                             enum fg_policy_unknown_reason why, size_t slot);

#endif /* FG_POLICY_EVAL_H */
