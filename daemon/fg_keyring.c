/* fg_keyring.c - HMAC-SHA256 pseudonyms under a key ring; see fg_keyring.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/*
 * HMAC-SHA256 is computed here from SHA-256 states (RFC 2104): the inner
 * and outer hashes with the padded key already absorbed are kept per key,
 * and each pseudonym copies them (a struct copy) and hashes the id.  The
 * low-level SHA256_* calls are deprecated in OpenSSL 3.0 but present in
 * every 3.x; the provider interface (EVP_MAC_CTX_dup per use) allocated
 * and freed a context on every call, about 1 µs of the 1.1 µs a pseudonym
 * cost, and there is one per intercepted call and key of the ring.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "fg_error.h"
#include "fg_file.h"
#include "fg_keyring.h"

#define SHA256_LEN 32
#define SHA256_BLOCK 64

struct keyed {
	SHA256_CTX inner;               /* after SHA-256 of (key ^ ipad): secret, as the key is */
	SHA256_CTX outer;               /* after SHA-256 of (key ^ opad) */
};

struct fg_keyring_ctx {
	struct keyed keyed[FG_KEYRING_MAX_KEYS];
	size_t n;
	const struct fg_keyring *ring;
};

static int id_ok(const char *id)
{
	size_t i, n = strlen(id);

	if (n == 0 || n > FG_KEYRING_ID_MAX)
		return 0;
	/* The id is part of every pseudonym and Redis key: keep it plain. */
	for (i = 0; i < n; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
		      (id[i] >= '0' && id[i] <= '9') || id[i] == '-' || id[i] == '_' || id[i] == '.'))
			return 0;
	return 1;
}

static int read_secret(const char *path, struct fg_keyring_key *k, char *why, size_t whylen)
{
	unsigned char extra;
	ssize_t n;
	int fd = fg_file_open_read(path), err;

	if (fd < 0) {
		err = errno;
		snprintf(why, whylen, "%s: cannot open: %s", path, fg_file_why(err));
		errno = err;
		return FG_EIO;
	}
	k->len = 0;
	while ((n = read(fd, k->secret + k->len, sizeof(k->secret) - k->len)) > 0)
		k->len += (size_t)n;
	err = errno;
	if (n == 0 && k->len == sizeof(k->secret) && read(fd, &extra, 1) > 0)
		n = -2;
	close(fd);
	if (n == -1) {
		snprintf(why, whylen, "%s: cannot read: %s", path, strerror(err));
		errno = err;
		return FG_EIO;
	}
	if (n == -2 || k->len < FG_KEYRING_MIN_KEY) {
		snprintf(why, whylen, "%s: a key must hold %d to %d bytes (it has %s%zu)", path, FG_KEYRING_MIN_KEY,
		         FG_KEYRING_MAX_KEY, n == -2 ? "more than " : "", k->len);
		return FG_EINVAL;
	}
	return 0;
}

int fg_keyring_add_file(struct fg_keyring *ring, const char *id, const char *path, char *why, size_t whylen)
{
	struct fg_keyring_key *k;
	size_t i;
	int rc;

	if (ring->n == FG_KEYRING_MAX_KEYS) {
		snprintf(why, whylen, "at most %d keys", FG_KEYRING_MAX_KEYS);
		return FG_ETOOBIG;
	}
	if (!id_ok(id)) {
		snprintf(why, whylen, "a key id is 1 to %d of [A-Za-z0-9._-]", FG_KEYRING_ID_MAX);
		return FG_EINVAL;
	}
	for (i = 0; i < ring->n; i++)
		if (strcmp(ring->keys[i].id, id) == 0) {
			snprintf(why, whylen, "key id '%s' is used twice", id);
			return FG_EINVAL;
		}
	k = &ring->keys[ring->n];
	rc = read_secret(path, k, why, whylen);
	if (rc) {
		OPENSSL_cleanse(k, sizeof(*k));
		return rc;
	}
	snprintf(k->id, sizeof(k->id), "%s", id);
	ring->n++;
	return 0;
}

void fg_keyring_wipe(struct fg_keyring *ring)
{
	OPENSSL_cleanse(ring, sizeof(*ring));
}

/* The inner and outer states of HMAC-SHA256 under <key> (RFC 2104 2: a
 * key longer than the block is hashed first).  0, or FG_ENOMEM when the
 * hash fails. */
static int keyed_init(struct keyed *k, const unsigned char *key, size_t len)
{
	unsigned char block[SHA256_BLOCK], pad[SHA256_BLOCK];
	size_t i;
	int ok = 1;

	memset(block, 0, sizeof(block));
	if (len > SHA256_BLOCK)
		ok = SHA256(key, len, block) != NULL;
	else
		memcpy(block, key, len);
	for (i = 0; i < SHA256_BLOCK; i++)
		pad[i] = block[i] ^ 0x36;
	ok = ok && SHA256_Init(&k->inner) && SHA256_Update(&k->inner, pad, sizeof(pad));
	for (i = 0; i < SHA256_BLOCK; i++)
		pad[i] = block[i] ^ 0x5c;
	ok = ok && SHA256_Init(&k->outer) && SHA256_Update(&k->outer, pad, sizeof(pad));
	OPENSSL_cleanse(block, sizeof(block));
	OPENSSL_cleanse(pad, sizeof(pad));
	return ok ? 0 : FG_ENOMEM;
}

struct fg_keyring_ctx *fg_keyring_ctx_new(const struct fg_keyring *ring)
{
	struct fg_keyring_ctx *ctx = calloc(1, sizeof(*ctx));
	size_t i;

	if (!ctx)
		return NULL;
	ctx->ring = ring;
	for (i = 0; i < ring->n; i++) {
		ctx->n++;
		if (keyed_init(&ctx->keyed[i], ring->keys[i].secret, ring->keys[i].len) < 0)
			goto fail_free_ctx;
	}
	return ctx;
fail_free_ctx:
	fg_keyring_ctx_free(ctx);
	return NULL;
}

void fg_keyring_ctx_free(struct fg_keyring_ctx *ctx)
{
	if (!ctx)
		return;
	OPENSSL_cleanse(ctx, sizeof(*ctx));
	free(ctx);
}

int fg_keyring_pseudonym(struct fg_keyring_ctx *ctx, size_t index, const void *user_id, size_t len, char *out,
                         size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_LEN];
	SHA256_CTX c;
	size_t i, o;
	int ok;

	if (index >= ctx->n || outlen < FG_KEYRING_PSEUDONYM_MAX)
		return FG_EINVAL;
	/* The keyed states are templates: a copy carries the padded key
	 * without hashing it again, and the template stays ready. */
	c = ctx->keyed[index].inner;
	ok = SHA256_Update(&c, user_id, len) && SHA256_Final(md, &c);
	c = ctx->keyed[index].outer;
	ok = ok && SHA256_Update(&c, md, sizeof(md)) && SHA256_Final(md, &c);
	OPENSSL_cleanse(&c, sizeof(c));
	if (!ok) {
		OPENSSL_cleanse(md, sizeof(md));
		return FG_ENOMEM;
	}
	/* The id was checked by id_ok: at most FG_KEYRING_ID_MAX bytes. */
	o = strlen(ctx->ring->keys[index].id);
	memcpy(out, ctx->ring->keys[index].id, o);
	out[o++] = ':';
	for (i = 0; i < sizeof(md); i++) {
		out[o++] = hex[md[i] >> 4];
		out[o++] = hex[md[i] & 15];
	}
	out[o] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	return (int)o;
}

int fg_keyring_pseudonym_bits(const char *p, uint64_t *out)
{
	const char *hex = p ? strchr(p, ':') : NULL;
	uint64_t v = 0;
	int i;

	if (!hex)
		return FG_EINVAL;
	for (i = 1; i <= 16 && hex[i]; i++)
		v = v << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : (hex[i] | 0x20) - 'a' + 10);
	*out = v;
	return 0;
}
