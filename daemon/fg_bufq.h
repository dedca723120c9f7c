/*
 * fg_bufq.h - the one growable byte buffer of feedguard: a flat byte queue
 * that appends at the tail, consumes from the head, and keeps its memory
 * for reuse.
 *
 * What a call's body and a connection's output need, without the chain
 * allocations of an evbuffer: in steady state (the same sizes call after
 * call) a queue that was used once never allocates again.  One contiguous
 * block, so the whole pending output of a connection goes out in one
 * write(2).  Writers that produce bytes in place (the wire editor, inflate,
 * deflate) reserve room at the tail, write at fg_bufq_tail() and commit
 * what they wrote; header lists keep their names and values in one.
 *
 * Stateless helpers on a caller-owned struct: no globals, no libevent, no
 * nghttp2, so the codecs (grpcframe, pbwire) use it too.  Any thread, one
 * user at a time.  Memory comes from realloc() only (the allocation-failure
 * tests wrap it); allocation failure is returned as FG_ENOMEM, never
 * aborted.
 *
 * Positions: every offset a caller keeps into a queue should count from
 * fg_bufq_head(), not from <data>: appending or reserving may move the
 * bytes to the front of the memory (or to new memory), which changes every
 * pointer into the queue but no offset from its head.
 */
#ifndef FG_BUFQ_H
#define FG_BUFQ_H

#include <stddef.h>
#include <stdint.h>

/* A queue that grew past this gives its memory back when it empties, so a
 * single large message does not pin memory for the rest of a long call. */
#define FG_BUFQ_KEEP (256 * 1024)

/*
 * All zeroes ({ 0 }) is an empty queue, as after fg_bufq_init().  Readers
 * use fg_bufq_head() and fg_bufq_len(); <cap> may be read to decide whether
 * to keep the memory (pools do).
 */
struct fg_bufq {
	uint8_t *data;          /* <cap> bytes from realloc(), NULL until the first growth */
	size_t off;             /* first unconsumed byte */
	size_t len;             /* unconsumed bytes from <off> */
	size_t cap;             /* bytes allocated at <data> */
};

/* fg_bufq_init - an empty queue; no allocation. */
void fg_bufq_init(struct fg_bufq *q);

/* fg_bufq_free - release the memory; <q> is then as after init.  NULL does
 * nothing. */
void fg_bufq_free(struct fg_bufq *q);

/*
 * fg_bufq_append - copy <n> bytes from <p> (borrowed; may be NULL when <n>
 * is 0; must not point into <q>'s memory) to the tail.  Returns 0, or
 * FG_ENOMEM (the queue's bytes are unchanged).
 */
int fg_bufq_append(struct fg_bufq *q, const void *p, size_t n);

/*
 * fg_bufq_reserve - make room for <n> more bytes at the tail, contiguous
 * after the last one, so a writer can produce them in place at
 * fg_bufq_tail().  Moves the bytes to the front of the memory when that
 * makes enough room, else grows the memory, doubling from 256 bytes until
 * it is large enough (amortized: each growth at least doubles).  When
 * fg_bufq_room() is already at least <n> nothing moves; otherwise pointers
 * into <q> are invalid afterwards (offsets from the head are not).
 * Returns 0, or FG_ENOMEM when realloc() fails or the size overflows; the
 * queue's bytes and length are then unchanged (they may have moved to the
 * front).
 */
int fg_bufq_reserve(struct fg_bufq *q, size_t n);

/*
 * fg_bufq_reserve_exact - as fg_bufq_reserve(), but when the memory must
 * grow it grows to exactly the length plus <n>, with no rounding up: for
 * a writer that bounds its own growth, such as inflate, whose limit on an
 * inflation bomb is a limit on memory and must not be doubled behind its
 * back.  Returns 0 or FG_ENOMEM, as fg_bufq_reserve().
 */
int fg_bufq_reserve_exact(struct fg_bufq *q, size_t n);

/*
 * fg_bufq_take - copy up to <n> bytes from the head into <dst> and consume
 * them.  Returns the number copied.
 */
size_t fg_bufq_take(struct fg_bufq *q, void *dst, size_t n);

/* fg_bufq_consume - drop <n> (at most the length) bytes from the head; an
 * emptied queue is cleared (fg_bufq_clear). */
void fg_bufq_consume(struct fg_bufq *q, size_t n);

/*
 * fg_bufq_truncate - keep the first <len> bytes from the head and drop the
 * rest from the tail (a writer takes back what it wrote after a failure, or
 * shrinks what it wrote in place).  A <len> at or above the length changes
 * nothing.  Keeps the memory, whatever its size; an emptied queue starts
 * again at the front of it.
 */
void fg_bufq_truncate(struct fg_bufq *q, size_t len);

/*
 * fg_bufq_headroom - empty <q> and keep <n> bytes free before its head,
 * so that bytes written later can get a prefix put in front of them with
 * fg_bufq_prepend() without being moved (a gRPC message prefix, once the
 * message's length is known).  Returns 0 or FG_ENOMEM (<q> is then empty
 * with no headroom).
 */
int fg_bufq_headroom(struct fg_bufq *q, size_t n);

/*
 * fg_bufq_prepend - copy <n> bytes from <p> in front of the head, into
 * room kept by fg_bufq_headroom() (a writer that needed more room may have
 * moved its bytes to the front and used it up).  Returns 0, or FG_ESTATE
 * when there is no such room (<q> unchanged).
 */
int fg_bufq_prepend(struct fg_bufq *q, const void *p, size_t n);

/* fg_bufq_clear - drop everything; keeps the memory unless it grew past
 * FG_BUFQ_KEEP. */
void fg_bufq_clear(struct fg_bufq *q);

/* fg_bufq_len / fg_bufq_head - unconsumed bytes and where they start.  The
 * head is valid until the next call that changes <q>; it is NULL while the
 * queue has no memory (its length is then 0). */
static inline size_t fg_bufq_len(const struct fg_bufq *q)
{
	return q->len;
}

static inline const uint8_t *fg_bufq_head(const struct fg_bufq *q)
{
	/* NULL + 0 is undefined in C */
	return q->data ? q->data + q->off : NULL;
}

/* fg_bufq_room - bytes that can be written at the tail without moving or
 * allocating anything: what a writer may check before fg_bufq_reserve(). */
static inline size_t fg_bufq_room(const struct fg_bufq *q)
{
	return q->cap - q->off - q->len;
}

/*
 * fg_bufq_tail - where the next byte goes: fg_bufq_room() writable bytes
 * that are not yet part of the queue.  Valid after a successful
 * fg_bufq_reserve() (or while fg_bufq_room() is not 0) until the next call
 * that changes <q>.  Also the writable end of the queue's bytes: a writer
 * may patch what it committed at fg_bufq_tail() - fg_bufq_len() + <pos>.
 */
static inline uint8_t *fg_bufq_tail(struct fg_bufq *q)
{
	return q->data + q->off + q->len;
}

/*
 * fg_bufq_commit - the <n> bytes written at fg_bufq_tail() become part of
 * the queue, at its end.  <n> must not exceed fg_bufq_room(): reserve
 * first.  Cannot fail.
 */
static inline void fg_bufq_commit(struct fg_bufq *q, size_t n)
{
	q->len += n;
}

#endif /* FG_BUFQ_H */
