/*
 * fg_keyring.h - pseudonymous user keys: HMAC-SHA256 of a user id under a
 * ring of secret keys, so feedguard never logs, stores or labels a raw id.
 *
 * The ring lists keys newest first, each with an id.  New state uses the
 * newest key; older keys are still recognised (fg_keyring_pseudonym with
 * their index) until their state expires, so rotating a key on reload does
 * not reset anyone's screen time.  A pseudonym is "<key id>:<64 hex>".
 *
 * The ring is immutable once loaded and shared by all workers.  Computing
 * needs a struct fg_keyring_ctx, one per worker: it holds each key's HMAC
 * inner and outer SHA-256 states, so a pseudonym is two short hashes and
 * no allocation (OpenSSL 3's one-shot HMAC() fetches the digest on every
 * call, and a duplicated EVP_MAC_CTX allocates one).  The states are as
 * secret as the keys: the context wipes them when freed.
 */
#ifndef FG_KEYRING_H
#define FG_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#define FG_KEYRING_MAX_KEYS 8
#define FG_KEYRING_ID_MAX 32
#define FG_KEYRING_MIN_KEY 16        /* bytes: below 128 bits a key is guessable */
#define FG_KEYRING_MAX_KEY 1024
/* "<id>:" + 64 hex digits + NUL */
#define FG_KEYRING_PSEUDONYM_MAX (FG_KEYRING_ID_MAX + 1 + 64 + 1)

struct fg_keyring_key {
	char id[FG_KEYRING_ID_MAX + 1];
	unsigned char secret[FG_KEYRING_MAX_KEY];
	size_t len;
};

struct fg_keyring {
	struct fg_keyring_key keys[FG_KEYRING_MAX_KEYS];   /* newest first */
	size_t n;
};

struct fg_keyring_ctx;

/*
 * fg_keyring_add_file - append the key in file <path> (its whole content,
 * at least FG_KEYRING_MIN_KEY bytes; a trailing newline is kept as part of
 * the key, so write keys with printf, not echo) under <id> to <ring>.
 * Returns 0, FG_EIO (errno kept), FG_EINVAL (too short, too long, bad or
 * duplicate id) or FG_ETOOBIG (ring full); <why> gets a message.
 */
int fg_keyring_add_file(struct fg_keyring *ring, const char *id, const char *path, char *why, size_t whylen);

/* fg_keyring_wipe - overwrite the secrets of <ring> (before freeing it). */
void fg_keyring_wipe(struct fg_keyring *ring);

/*
 * fg_keyring_ctx_new - per-worker HMAC state for <ring> (borrowed: it must
 * outlive the context).  NULL on failure.  Loop thread of its worker only.
 */
struct fg_keyring_ctx *fg_keyring_ctx_new(const struct fg_keyring *ring);

/* fg_keyring_ctx_free - NULL is a no-op. */
void fg_keyring_ctx_free(struct fg_keyring_ctx *ctx);

/*
 * fg_keyring_pseudonym - "<id>:<hex HMAC-SHA256(key, user id)>" of key
 * <index> (0: newest) for the <len> bytes at <user_id>, into <out>
 * (<outlen> >= FG_KEYRING_PSEUDONYM_MAX).  Returns the length, or
 * FG_EINVAL (no such key) / FG_ENOMEM.
 */
int fg_keyring_pseudonym(struct fg_keyring_ctx *ctx, size_t index, const void *user_id, size_t len, char *out,
                         size_t outlen);

/*
 * fg_keyring_pseudonym_bits - the first 64 bits of pseudonym <p>'s HMAC
 * (its first 16 hex digits after "<id>:"), uniform over users and the same
 * for all of one user's calls: what sampling and sharding by user read.
 * Returns 0 with them in <*out>, or FG_EINVAL when <p> is not a pseudonym
 * (empty, no ':').  Pure; any thread.
 */
int fg_keyring_pseudonym_bits(const char *p, uint64_t *out);

#endif /* FG_KEYRING_H */
