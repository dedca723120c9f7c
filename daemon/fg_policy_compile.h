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

#endif /* FG_POLICY_COMPILE_H */
