/*
 * fg_redisreply.h - hiredis 0.14 reply objects built in an arena that each
 * reply reuses, instead of hiredis's malloc per object.
 *
 * hiredis's default reader functions allocate every reply node, every
 * string and every element vector on its own (a state check's reply, an
 * array of a dozen strings and integers, is two dozen mallocs and frees:
 * ~0.7 µs a call in a profile of the state bench).  A link reads one reply
 * at a time: the reader builds a reply, the callback sees it, hiredis
 * frees it (freeObject on its root) before it parses the next one, and a
 * partial reply is freed the same way when the reader fails or the
 * context goes.  So the objects of the reply being built can come from one
 * buffer that the root's free empties.  A reply larger than the buffer
 * takes the rest of its objects from malloc; each object knows where it
 * came from (a small header in front of it).
 *
 * The arena must outlive every context it is attached to (fg_redis keeps
 * it in the link, which frees its context before itself), and serves one
 * context at a time.  Threading: the loop thread of its link.
 */
#ifndef FG_REDISREPLY_H
#define FG_REDISREPLY_H

#include <stddef.h>

/* Replies larger than anything feedguard asks for (a state check's reply
 * is under 1 KiB: a dozen numbers and counters) are refused as they are
 * parsed: hiredis then fails the reader ("Out of memory") and the link is
 * dropped and reconnected, instead of allocating what a broken or hostile
 * server declares (a "*100000000" array header alone was 800 MB of element
 * pointers). */
#define FG_REDISREPLY_MAX_STRING (1u << 20)     /* bytes of one string, status or error */
#define FG_REDISREPLY_MAX_ELEMENTS 4096         /* elements of one array */
/* Bytes of one whole reply's objects (nodes, strings, element vectors):
 * without it 4096 strings of just under the string bound, or 4096 arrays
 * of 4096 integers, each within the bounds above, held a worker at 962
 * and 134 MB until state.stall_timeout dropped the link. */
#define FG_REDISREPLY_MAX_REPLY ((size_t)FG_REDISREPLY_MAX_STRING + 64 * 1024)

#include <hiredis/hiredis.h>

/* Bytes of an arena: a state check's reply takes well under 1 KiB. */
#define FG_REDISREPLY_ARENA_SIZE 4096

struct fg_redisreply_arena {
	size_t used;                            /* bytes of <buf> the reply being built holds */
	size_t total;                           /* bytes of its objects, in <buf> or not: at most
	                                           FG_REDISREPLY_MAX_REPLY */
	_Alignas(max_align_t) unsigned char buf[FG_REDISREPLY_ARENA_SIZE];
};

/* fg_redisreply_arena_init - an empty arena (no allocation). */
void fg_redisreply_arena_init(struct fg_redisreply_arena *a);

/*
 * fg_redisreply_attach - build the replies of <reader> (a context's
 * c.reader) in <a> (borrowed: it must outlive the reader): sets the
 * reader's object functions and private data.  Call right after the
 * context is created, before any reply is read.  The replies are plain
 * redisReply trees; they must not be kept past their free (for a context,
 * after their callback returns).
 */
void fg_redisreply_attach(redisReader *reader, struct fg_redisreply_arena *a);

#endif
