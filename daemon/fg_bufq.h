/*
 * fg_bufq.h - a flat byte queue: append at the tail, consume from the head,
 * memory kept for reuse.
 *
 * What a call's body and a connection's output need, without the chain
 * allocations of an evbuffer: in steady state (the same sizes call after
 * call) a queue that was used once never allocates again.  One contiguous
 * block, so the whole pending output of a connection goes out in one
 * write(2).  Stateless helpers on a caller-owned struct; no thread rules
 * beyond "one user at a time".
 */
#ifndef FG_BUFQ_H
#define FG_BUFQ_H

#include <stddef.h>
#include <stdint.h>

/* A queue that grew past this gives its memory back when it empties, so a
 * single large message does not pin memory for the rest of a long call. */
#define FG_BUFQ_KEEP (256 * 1024)

struct fg_bufq {
	uint8_t *data;          /* <cap> bytes, NULL until the first append */
	size_t off;             /* first unconsumed byte */
	size_t len;             /* unconsumed bytes from <off> */
	size_t cap;
};

/* fg_bufq_init - an empty queue; no allocation. */
void fg_bufq_init(struct fg_bufq *q);

/* fg_bufq_free - release the memory; <q> is then as after init. */
void fg_bufq_free(struct fg_bufq *q);

/*
 * fg_bufq_append - copy <n> bytes from <p> to the tail.  Returns 0, or
 * FG_ENOMEM (the queue is unchanged).
 */
int fg_bufq_append(struct fg_bufq *q, const void *p, size_t n);

/* fg_bufq_take - copy up to <n> bytes from the head into <dst> and consume
 * them.  Returns the number copied. */
size_t fg_bufq_take(struct fg_bufq *q, void *dst, size_t n);

/* fg_bufq_consume - drop <n> (at most the length) bytes from the head. */
void fg_bufq_consume(struct fg_bufq *q, size_t n);

/* fg_bufq_clear - drop everything; keeps the memory unless it grew past FG_BUFQ_KEEP. */
void fg_bufq_clear(struct fg_bufq *q);

/* fg_bufq_len / fg_bufq_head - unconsumed bytes and where they start. */
static inline size_t fg_bufq_len(const struct fg_bufq *q)
{
	return q->len;
}

static inline const uint8_t *fg_bufq_head(const struct fg_bufq *q)
{
	return q->data + q->off;
}

#endif /* FG_BUFQ_H */
