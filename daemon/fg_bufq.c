/* fg_bufq.c - the one growable byte buffer; see fg_bufq.h. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fg_bufq.h"
#include "fg_error.h"

/* First allocation: a small gRPC message or header list fits, and a queue
 * that needs more reaches it in one realloc per doubling. */
#define BUFQ_MIN 256

/* How bufq_room() sizes new memory. */
enum bufq_grow {
	GROW_DOUBLE,            /* the capacity doubles until it is enough */
	GROW_EXACT,             /* exactly what is asked for */
};

void fg_bufq_init(struct fg_bufq *q)
{
	memset(q, 0, sizeof(*q));
}

void fg_bufq_free(struct fg_bufq *q)
{
	if (!q)
		return;
	free(q->data);
	fg_bufq_init(q);
}

static int bufq_grow(struct fg_bufq *q, size_t need, enum bufq_grow how)
{
	size_t cap = need;
	uint8_t *p;

	if (how == GROW_DOUBLE) {
		cap = q->cap ? q->cap : BUFQ_MIN;
		while (cap < need) {
			if (cap > SIZE_MAX / 2)
				return FG_ENOMEM;
			cap *= 2;
		}
	}
	p = realloc(q->data, cap);
	if (!p)
		return FG_ENOMEM;
	q->data = p;
	q->cap = cap;
	return 0;
}

/* Room for <n> more bytes at the tail: slide the content to the front when
 * that is enough, grow otherwise. */
static int bufq_room(struct fg_bufq *q, size_t n, enum bufq_grow how)
{
	size_t need;

	/* not off + len + n <= cap: that sum can wrap */
	if (n <= fg_bufq_room(q))
		return 0;
	if (n > SIZE_MAX - q->len)
		return FG_ENOMEM;
	need = q->len + n;
	if (q->off) {
		memmove(q->data, q->data + q->off, q->len);
		q->off = 0;
	}
	if (need <= q->cap)
		return 0;
	return bufq_grow(q, need, how);
}

int fg_bufq_reserve(struct fg_bufq *q, size_t n)
{
	return bufq_room(q, n, GROW_DOUBLE);
}

int fg_bufq_reserve_exact(struct fg_bufq *q, size_t n)
{
	return bufq_room(q, n, GROW_EXACT);
}

int fg_bufq_append(struct fg_bufq *q, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (bufq_room(q, n, GROW_DOUBLE) < 0)
		return FG_ENOMEM;
	memcpy(fg_bufq_tail(q), p, n);
	fg_bufq_commit(q, n);
	return 0;
}

void fg_bufq_consume(struct fg_bufq *q, size_t n)
{
	if (n >= q->len) {
		fg_bufq_clear(q);
		return;
	}
	q->off += n;
	q->len -= n;
}

size_t fg_bufq_take(struct fg_bufq *q, void *dst, size_t n)
{
	if (n > q->len)
		n = q->len;
	if (n)
		memcpy(dst, q->data + q->off, n);
	fg_bufq_consume(q, n);
	return n;
}

void fg_bufq_truncate(struct fg_bufq *q, size_t len)
{
	if (len >= q->len)
		return;
	q->len = len;
	if (len == 0)
		q->off = 0;
}

void fg_bufq_clear(struct fg_bufq *q)
{
	q->off = 0;
	q->len = 0;
	if (q->cap > FG_BUFQ_KEEP)
		fg_bufq_free(q);
}

int fg_bufq_headroom(struct fg_bufq *q, size_t n)
{
	q->off = 0;
	q->len = 0;
	if (fg_bufq_reserve(q, n) < 0)
		return FG_ENOMEM;
	q->off = n;
	return 0;
}

int fg_bufq_prepend(struct fg_bufq *q, const void *p, size_t n)
{
	if (q->off < n)
		return FG_ESTATE;
	q->off -= n;
	q->len += n;
	memcpy(q->data + q->off, p, n);
	return 0;
}
