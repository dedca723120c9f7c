/*
 * fg_alloc.h - feedguardd's memory allocator: which one the process runs
 * on, its settings, and giving back what a burst left free.
 *
 * feedguardd links jemalloc when configure finds it (--with-jemalloc, the
 * default when libjemalloc-dev is installed; never with sanitizers, whose
 * own allocator must see every block).  Why: calls that wait for Redis
 * keep many calls in flight per worker, and glibc's per-thread cache keeps
 * only 7 free blocks of each size, so a burst's allocations fall through
 * to its bins and malloc_consolidate.  Side by side, jemalloc lowered the
 * screen-time state's CPU a call in most runs (by 0.1 to 7 µs) and left an
 * intercepted call without state as it was (README "Screen time: the cost
 * of the state", session 16).  Its settings are compiled in (fg_alloc.c,
 * FG_ALLOC_JEMALLOC_CONF) so that memory goes back to the system within
 * seconds of a burst, as the memory budget promises; MALLOC_CONF in the
 * environment still overrides them, as jemalloc documents.
 *
 * Only feedguardd links this module: the tools and the unit tests run on
 * the C library's allocator.  Everything here runs on the main thread.
 */
#ifndef FG_ALLOC_H
#define FG_ALLOC_H

/* How often the main loop calls fg_alloc_release(), in seconds; 0: never
 * (jemalloc's background thread gives memory back on its own clock, so a
 * timer would wake the main thread for nothing). */
#ifdef HAVE_JEMALLOC
#define FG_ALLOC_RELEASE_EVERY_S 0
#else
#define FG_ALLOC_RELEASE_EVERY_S 10
#endif

/*
 * Settle the allocator's settings.  Call first thing in main(), before any
 * thread starts.  With glibc: buffers of FG_ALLOC_MMAP_MIN bytes and more
 * come from mmap and go back to the system when freed (fg_alloc.c says
 * why).  With jemalloc: nothing to do (its settings are read at its first
 * allocation).
 */
void fg_alloc_setup(void);

/*
 * Give free memory a burst left inside the heaps back to the system, when
 * there is enough of it to bother.  glibc: malloc_trim.  jemalloc: nothing
 * (FG_ALLOC_RELEASE_EVERY_S is 0 there).  Takes the allocator's locks:
 * call it rarely (every FG_ALLOC_RELEASE_EVERY_S).
 */
void fg_alloc_release(void);

/*
 * The allocator, for `feedguardd -v` and the start-up log: "jemalloc
 * 5.3.0-0-g..." or "glibc 2.36".  A static string; never NULL.
 */
const char *fg_alloc_name(void);

#endif
