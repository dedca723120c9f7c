/* fg_bufq.c - flat byte queue; see fg_bufq.h. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fg_bufq.h"
#include "fg_error.h"

#define BUFQ_MIN 4096

void fg_bufq_init(struct fg_bufq *q)
{
	memset(q, 0, sizeof(*q));
}

void fg_bufq_free(struct fg_bufq *q)
{
	free(q->data);
	fg_bufq_init(q);
}

/* Room for <n> more bytes at the tail: slide the content to the front when
 * that is enough, grow (doubling) otherwise. */
static int bufq_room(struct fg_bufq *q, size_t n)
{
	size_t need, cap;
	uint8_t *p;

	if (q->off + q->len + n <= q->cap)
		return 0;
	need = q->len + n;
	if (need < q->len)
		return FG_ENOMEM;
	if (need <= q->cap) {
		memmove(q->data, q->data + q->off, q->len);
		q->off = 0;
		return 0;
	}
	cap = q->cap ? q->cap : BUFQ_MIN;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			return FG_ENOMEM;
		cap *= 2;
	}
	if (q->off) {
		memmove(q->data, q->data + q->off, q->len);
		q->off = 0;
	}
	p = realloc(q->data, cap);
	if (!p)
		return FG_ENOMEM;
	q->data = p;
	q->cap = cap;
	return 0;
}

int fg_bufq_append(struct fg_bufq *q, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (bufq_room(q, n) < 0)
		return FG_ENOMEM;
	memcpy(q->data + q->off + q->len, p, n);
	q->len += n;
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

void fg_bufq_clear(struct fg_bufq *q)
{
	q->off = 0;
	q->len = 0;
	if (q->cap > FG_BUFQ_KEEP)
		fg_bufq_free(q);
}
