/* fg_hdrs.c - collected HTTP/2 header lists; see fg_hdrs.h. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_hdrs.h"

/* RFC 9113 §6.5.2: each field costs its octets plus 32. */
#define HDRS_ENTRY_OVERHEAD 32
/* Reserved by the first add: a typical request's headers fit at once. */
#define HDRS_MIN_BUF 512
#define HDRS_MIN_ENTRIES 16

void fg_hdrs_init(struct fg_hdrs *h)
{
	memset(h, 0, sizeof(*h));
}

void fg_hdrs_reset(struct fg_hdrs *h)
{
	fg_bufq_truncate(&h->buf, 0);
	h->n = 0;
	h->list_size = 0;
}

void fg_hdrs_free(struct fg_hdrs *h)
{
	fg_bufq_free(&h->buf);
	free(h->ent);
	free(h->nv);
	fg_hdrs_init(h);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, size_t min)
{
	size_t ncap = *cap ? *cap : min;
	void *np;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	np = realloc(*p, ncap * elem);
	if (!np)
		return FG_ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

int fg_hdrs_add(struct fg_hdrs *h, const uint8_t *name, size_t namelen,
                const uint8_t *value, size_t valuelen, uint8_t flags)
{
	struct fg_hdrs_entry *e;
	size_t len = fg_bufq_len(&h->buf), room = namelen + valuelen;

	if (len + room > UINT32_MAX)
		return FG_ETOOBIG;
	if (len == 0 && room < HDRS_MIN_BUF)
		room = HDRS_MIN_BUF;
	if (fg_bufq_reserve(&h->buf, room) < 0 ||
	    grow((void **)&h->ent, &h->ncap, h->n + 1, sizeof(*h->ent), HDRS_MIN_ENTRIES))
		return FG_ENOMEM;
	e = &h->ent[h->n++];
	e->name_off = (uint32_t)len;
	e->name_len = (uint32_t)namelen;
	e->value_off = (uint32_t)(len + namelen);
	e->value_len = (uint32_t)valuelen;
	/* the room is reserved: these cannot fail */
	(void)fg_bufq_append(&h->buf, name, namelen);
	(void)fg_bufq_append(&h->buf, value, valuelen);
	e->flags = flags & NGHTTP2_NV_FLAG_NO_INDEX;
	h->list_size += namelen + valuelen + HDRS_ENTRY_OVERHEAD;
	return 0;
}

nghttp2_nv *fg_hdrs_nv(struct fg_hdrs *h)
{
	/* nghttp2_nv's pointers are not const, but nghttp2 only reads them */
	uint8_t *bytes = (uint8_t *)fg_bufq_head(&h->buf);
	nghttp2_nv *nv;
	size_t i;

	if (h->n == 0)
		return NULL;
	if (grow((void **)&h->nv, &h->nvcap, h->n, sizeof(*h->nv), HDRS_MIN_ENTRIES))
		return NULL;
	nv = h->nv;
	for (i = 0; i < h->n; i++) {
		const struct fg_hdrs_entry *e = &h->ent[i];
		nv[i].name = bytes + e->name_off;
		nv[i].namelen = e->name_len;
		nv[i].value = bytes + e->value_off;
		nv[i].valuelen = e->value_len;
		nv[i].flags = e->flags;
	}
	return nv;
}

size_t fg_hdrs_remove(struct fg_hdrs *h, const char *name)
{
	const uint8_t *bytes = fg_bufq_head(&h->buf);
	size_t n = strlen(name), i, kept = 0;

	for (i = 0; i < h->n; i++) {
		const struct fg_hdrs_entry *e = &h->ent[i];
		if (e->name_len == n && memcmp(bytes + e->name_off, name, n) == 0) {
			h->list_size -= e->name_len + e->value_len + HDRS_ENTRY_OVERHEAD;
			continue;
		}
		h->ent[kept++] = *e;
	}
	n = h->n - kept;
	h->n = kept;
	return n;
}

const char *fg_hdrs_find(const struct fg_hdrs *h, const char *name, size_t *len)
{
	const char *bytes = (const char *)fg_bufq_head(&h->buf);
	size_t i, nlen = strlen(name);

	for (i = 0; i < h->n; i++) {
		const struct fg_hdrs_entry *e = &h->ent[i];
		if (e->name_len == nlen && memcmp(bytes + e->name_off, name, nlen) == 0) {
			*len = e->value_len;
			return bytes + e->value_off;
		}
	}
	return NULL;
}

const char *fg_hdrs_find_single(const struct fg_hdrs *h, const char *name, size_t *len)
{
	const char *bytes = (const char *)fg_bufq_head(&h->buf), *v = NULL;
	size_t i, n = strlen(name);

	for (i = 0; i < h->n; i++) {
		const struct fg_hdrs_entry *e = &h->ent[i];
		if (e->name_len != n || memcmp(bytes + e->name_off, name, n) != 0)
			continue;
		if (v && (e->value_len != *len || memcmp(bytes + e->value_off, v, *len) != 0))
			return NULL;
		v = bytes + e->value_off;
		*len = e->value_len;
	}
	return v;
}

static int add_str(struct fg_hdrs *h, const char *name, const char *value, size_t len)
{
	return fg_hdrs_add(h, (const uint8_t *)name, strlen(name), (const uint8_t *)value, len, 0);
}

int fg_hdrs_add_grpc_response(struct fg_hdrs *h)
{
	if (add_str(h, ":status", "200", 3) < 0 || add_str(h, "content-type", "application/grpc", 16) < 0)
		return FG_ENOMEM;
	return 0;
}

int fg_hdrs_add_grpc_status(struct fg_hdrs *h, int status, const char *msg)
{
	char code[16], enc[FG_HDRS_GRPC_MESSAGE_MAX];
	size_t enclen = fg_grpc_percent_encode(msg ? msg : "", enc, sizeof(enc));
	int n = snprintf(code, sizeof(code), "%d", status);

	if (add_str(h, "grpc-status", code, (size_t)n) < 0 || add_str(h, "grpc-message", enc, enclen) < 0)
		return FG_ENOMEM;
	return 0;
}
