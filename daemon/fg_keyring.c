/* fg_keyring.c - HMAC-SHA256 pseudonyms under a key ring; see fg_keyring.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "fg_error.h"
#include "fg_keyring.h"

#define SHA256_LEN 32

struct fg_keyring_ctx {
	EVP_MAC *mac;
	EVP_MAC_CTX *keyed[FG_KEYRING_MAX_KEYS];   /* initialised with each key; duplicated per use */
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
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0) {
		err = errno;
		snprintf(why, whylen, "%s: cannot open: %s", path, strerror(err));
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

struct fg_keyring_ctx *fg_keyring_ctx_new(const struct fg_keyring *ring)
{
	struct fg_keyring_ctx *ctx = calloc(1, sizeof(*ctx));
	OSSL_PARAM params[2];
	size_t i;

	if (!ctx)
		return NULL;
	ctx->ring = ring;
	ctx->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!ctx->mac)
		goto fail_free_ctx;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	for (i = 0; i < ring->n; i++) {
		ctx->keyed[i] = EVP_MAC_CTX_new(ctx->mac);
		if (!ctx->keyed[i])
			goto fail_free_ctx;
		ctx->n++;
		if (!EVP_MAC_init(ctx->keyed[i], ring->keys[i].secret, ring->keys[i].len, params))
			goto fail_free_ctx;
	}
	return ctx;
fail_free_ctx:
	fg_keyring_ctx_free(ctx);
	return NULL;
}

void fg_keyring_ctx_free(struct fg_keyring_ctx *ctx)
{
	size_t i;

	if (!ctx)
		return;
	for (i = 0; i < ctx->n; i++)
		EVP_MAC_CTX_free(ctx->keyed[i]);
	EVP_MAC_free(ctx->mac);
	free(ctx);
}

int fg_keyring_pseudonym(struct fg_keyring_ctx *ctx, size_t index, const void *user_id, size_t len, char *out,
                         size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_LEN];
	size_t mdlen = 0, i, o;
	EVP_MAC_CTX *c;
	int ok;

	if (index >= ctx->n || outlen < FG_KEYRING_PSEUDONYM_MAX)
		return FG_EINVAL;
	/* The keyed context is a template: a copy carries the key schedule
	 * without redoing it, and the template stays ready for the next call. */
	c = EVP_MAC_CTX_dup(ctx->keyed[index]);
	if (!c)
		return FG_ENOMEM;
	ok = EVP_MAC_update(c, user_id, len) && EVP_MAC_final(c, md, &mdlen, sizeof(md));
	EVP_MAC_CTX_free(c);
	if (!ok || mdlen != SHA256_LEN)
		return FG_ENOMEM;
	o = (size_t)snprintf(out, outlen, "%s:", ctx->ring->keys[index].id);
	for (i = 0; i < mdlen; i++) {
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
