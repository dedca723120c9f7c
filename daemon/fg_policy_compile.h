/*
 * fg_policy_compile.h - a YAML policy, checked against the platform's
 * descriptor set and compiled into an immutable struct fg_policy.
 *
 * Every field path is resolved to field numbers and types at load; a path
 * that does not exist, a type that does not fit its action, a method that
 * is not in the descriptor set, a band that is not declared: each is an
 * error at "file:line:column", and nothing is half-loaded.  The format is
 * documented in README.md ("Policy").  Safe on any thread (no global state);
 * the result is shared read-only by every worker.
 */
#ifndef FG_POLICY_COMPILE_H
#define FG_POLICY_COMPILE_H

#include <stddef.h>

#include "fg_policy-t.h"

/* A policy is a few pages; anything larger is a mistake or an attack. */
#define FG_POLICY_MAX_BYTES (4 << 20)

/*
 * fg_policy_compile_load - read, parse and compile the policy file at
 * <path> (relative paths inside it, such as descriptor_set, are relative to
 * its directory), with counter slots for <nslots> workers
 * (1 .. FG_POLICY_MAX_WORKERS).  On success stores the policy in <*out>
 * (returned owned: fg_policy_compile_free) and returns 0.  On failure
 * returns FG_ECONFIG (or FG_EIO, FG_ENOMEM), leaves <*out> NULL and writes
 * "file:line:column: message" into <err>.
 */
int fg_policy_compile_load(const char *path, size_t nslots, struct fg_policy **out, char *err, size_t errlen);

/*
 * fg_policy_compile_load_string - as fg_policy_compile_load from <len>
 * bytes at <text>, named <name> in messages, with relative paths resolved
 * against <basedir>.  For tests and the fuzzer.
 */
int fg_policy_compile_load_string(const char *name, const char *basedir, const char *text, size_t len,
                                  size_t nslots, struct fg_policy **out, char *err, size_t errlen);

/* fg_policy_compile_free - free a policy.  NULL is a no-op. */
void fg_policy_compile_free(struct fg_policy *p);

/* What fg_policy_compile_keys_each says about a key, in its <flags>. */
#define FG_POLICY_COMPILE_KEY_REQUEST 0x1   /* a rule block key allowed in request blocks only */
#define FG_POLICY_COMPILE_KEY_RESPONSE 0x2  /* ... in response blocks only */

/* The longest path fg_policy_compile_keys_each gives, its NUL included. */
#define FG_POLICY_COMPILE_KEY_PATH_MAX 128

/* fg_policy_compile_keys_each's callback: <path> is valid during the call only. */
typedef void (*fg_policy_compile_key_cb)(const char *path, unsigned flags, void *arg);

/*
 * fg_policy_compile_keys_each - call <cb>(path, flags, <arg>) once for
 * every key the compiler accepts, wherever it may be written, read from
 * the compiler's own key tables (so what it lists is what a policy may
 * say; tests/unit/test_reference.c checks the README's tables against
 * it).  A path names the keys from the top of the file down, joined by
 * '.':
 *   "descriptor_set", "methods"   a top-level key;
 *   "bands[].name"                "[]" after a key: each element of its
 *                                 list ("limits[].daily.cap");
 *   "methods.<method>.feed"       "<method>": a method's path, the key
 *                                 the policy chooses under methods;
 *   "methods.<method>.<direction>[].keep_only"
 *                                 "<direction>": request or response,
 *                                 where both take the same keys (a rule
 *                                 block; capture_redact's two sides).
 *                                 A rule block key that one direction
 *                                 only takes has FG_POLICY_COMPILE_KEY_REQUEST
 *                                 (or _RESPONSE) in <flags>; else 0.
 * A key whose value maps names the policy chooses (label_maps,
 * rule_sets, a filter block's thresholds) has nothing listed below it,
 * and a rule set holds rule blocks, listed once under <direction>.  Each
 * key comes once, with the keys of a mapping after the key that holds it.
 * Allocates nothing; any thread.
 */
void fg_policy_compile_keys_each(fg_policy_compile_key_cb cb, void *arg);

#endif /* FG_POLICY_COMPILE_H */
