/*
 * fg_redisreply.c - hiredis 0.14 reply objects from a reusable arena
 * (fg_redisreply.h).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_redisreply.h"

/* What of a node came from malloc (the rest is in the arena). */
enum { HEAP_NODE = 1, HEAP_STR = 2, HEAP_ELEM = 4 };

/* A reply object with where its parts came from in front of it: hiredis
 * and the callbacks see only <rep>. */
struct node {
	struct fg_redisreply_arena *arena;
	unsigned heap;                          /* HEAP_* */
	redisReply rep;
};

#define ALIGN _Alignof(max_align_t)

static struct node *node_of(redisReply *r)
{
	return (struct node *)(void *)((char *)r - offsetof(struct node, rep));
}

/* <n> bytes of <a>, or NULL when they do not fit (the caller mallocs). */
static void *take(struct fg_redisreply_arena *a, size_t n)
{
	size_t need = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
	void *p;

	if (need < n || need > sizeof(a->buf) - a->used)
		return NULL;
	p = a->buf + a->used;
	a->used += need;
	return p;
}

/* Count <n> more bytes against the reply's bound: 0, or -1 when they
 * would take it past FG_REDISREPLY_MAX_REPLY (the reply is refused). */
static int charge(struct fg_redisreply_arena *a, size_t n)
{
	if (n > FG_REDISREPLY_MAX_REPLY - a->total)
		return -1;
	a->total += n;
	return 0;
}

static void free_tree(redisReply *r)
{
	struct node *n;

	if (!r)
		return;
	n = node_of(r);
	if (r->type == REDIS_REPLY_ARRAY && r->element) {
		for (size_t j = 0; j < r->elements; j++)
			free_tree(r->element[j]);
		if (n->heap & HEAP_ELEM)
			free(r->element);
	}
	if (n->heap & HEAP_STR)
		free(r->str);
	if (n->heap & HEAP_NODE)
		free(n);
}

/* hiredis frees only whole replies (a complete one after its callback, a
 * partial one when the reader fails or the context goes), and builds the
 * next only after: the arena is empty again. */
static void free_object(void *reply)
{
	struct fg_redisreply_arena *a;

	if (!reply)
		return;
	a = node_of(reply)->arena;
	free_tree(reply);
	a->used = 0;
	a->total = 0;
}

/* A node of <type> linked into its parent array, or NULL (out of memory). */
static redisReply *node_new(const redisReadTask *task, int type)
{
	struct fg_redisreply_arena *a = task->privdata;
	struct node *n;
	unsigned heap = 0;

	if (charge(a, sizeof(*n)) < 0)
		return NULL;
	n = take(a, sizeof(*n));
	if (!n) {
		if (!(n = malloc(sizeof(*n))))
			return NULL;
		heap = HEAP_NODE;
	}
	memset(n, 0, sizeof(*n));
	n->arena = a;
	n->heap = heap;
	n->rep.type = type;
	if (task->parent) {
		redisReply *parent = task->parent->obj;
		parent->element[task->idx] = &n->rep;
	}
	return &n->rep;
}

/* Unlink a node that could not be completed from its parent and free it:
 * the reader then fails and frees the parent tree. */
static void *node_fail(const redisReadTask *task, redisReply *r)
{
	struct fg_redisreply_arena *a = task->privdata;

	if (task->parent) {
		redisReply *parent = task->parent->obj;
		parent->element[task->idx] = NULL;
	}
	free_tree(r);
	if (!task->parent) {
		a->used = 0;    /* a root nobody will free: the arena is empty again */
		a->total = 0;
	}
	return NULL;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
	redisReply *r;
	struct fg_redisreply_arena *a = task->privdata;

	if (len > FG_REDISREPLY_MAX_STRING || !(r = node_new(task, task->type)))
		return NULL;
	if (charge(a, len + 1) < 0)
		return node_fail(task, r);
	if (len == SIZE_MAX || !(r->str = take(a, len + 1))) {
		if (len == SIZE_MAX || !(r->str = malloc(len + 1)))
			return node_fail(task, r);
		node_of(r)->heap |= HEAP_STR;
	}
	memcpy(r->str, str, len);
	r->str[len] = '\0';
	r->len = len;
	return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
	redisReply *r;
	struct fg_redisreply_arena *a = task->privdata;
	size_t bytes;

	if (elements > FG_REDISREPLY_MAX_ELEMENTS || !(r = node_new(task, REDIS_REPLY_ARRAY)))
		return NULL;
	if (elements > 0) {
		bytes = (size_t)elements * sizeof(redisReply *);
		if (charge(a, bytes) < 0)
			return node_fail(task, r);
		if ((r->element = take(a, bytes)) != NULL) {
			memset(r->element, 0, bytes);
		} else {
			if (!(r->element = calloc((size_t)elements, sizeof(redisReply *))))
				return node_fail(task, r);
			node_of(r)->heap |= HEAP_ELEM;
		}
		r->elements = (size_t)elements;
	}
	return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
	redisReply *r = node_new(task, REDIS_REPLY_INTEGER);

	if (r)
		r->integer = value;
	return r;
}

static void *create_nil(const redisReadTask *task)
{
	return node_new(task, REDIS_REPLY_NIL);
}

/* hiredis takes a non-const table; nothing ever writes to it. */
static redisReplyObjectFunctions arena_functions = {
	create_string, create_array, create_integer, create_nil, free_object,
};

void fg_redisreply_arena_init(struct fg_redisreply_arena *a)
{
	a->used = 0;
	a->total = 0;
}

void fg_redisreply_attach(redisReader *reader, struct fg_redisreply_arena *a)
{
	reader->fn = &arena_functions;
	reader->privdata = a;
}
