/*
 * fg_alloc.c - feedguardd's memory allocator: its settings, giving memory
 * back, its name.
 */
#include "config.h"

#include "fg_alloc.h"

#include <stddef.h>
#include <stdio.h>

#ifdef HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

/*
 * jemalloc reads this symbol of the executable at its first allocation,
 * before MALLOC_CONF (which therefore overrides it).
 * - background_thread: purging runs on a thread of jemalloc's own instead
 *   of inside the workers' frees; one is plenty for a few MB a second.
 * - dirty_decay_ms 1000: pages a burst left free go back within about a
 *   second (jemalloc's default, 10 s, spreads it over a slope that the
 *   memory tests' 10 s bound does not see the end of).
 * - muzzy_decay_ms 0: go straight to MADV_DONTNEED; pages given back with
 *   MADV_FREE stay in RSS until the kernel is short of memory, so the
 *   process would look as big as its last burst.
 * Measured with the memory tests (README "Memory"): with jemalloc's own
 * defaults test_memory_goes_back_when_the_calls_end,
 * test_memory_goes_back_after_clients_that_never_read (50 MiB held against
 * a bound of 23) and test_heap_memory_goes_back_after_a_burst_of_large_headers
 * fail; with these, every memory test passes.
 */
#define FG_ALLOC_JEMALLOC_CONF \
	"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0"

const char *malloc_conf = FG_ALLOC_JEMALLOC_CONF;

void fg_alloc_setup(void)
{
}

void fg_alloc_release(void)
{
}

const char *fg_alloc_name(void)
{
	static char name[96];
	const char *version = NULL;
	size_t len = sizeof(version);

	if (!name[0]) {
		if (mallctl("version", &version, &len, NULL, 0) != 0 || !version)
			version = "(version unknown)";
		snprintf(name, sizeof(name), "jemalloc %s", version);
	}
	return name;
}

#else /* glibc */
#include <gnu/libc-version.h>
#include <malloc.h>

/*
 * Buffers of this size and more (a large message being edited, its output)
 * come from mmap and go back to the system when freed.  glibc's default
 * threshold rises with each such free, up to 32 MiB, after which those
 * buffers come from the heaps and stay in the process when their calls
 * end: a client that once held many large streams left the daemon at
 * hundreds of MB with nothing in flight.  Fixing the threshold also fixes
 * when heaps are trimmed.
 */
#define FG_ALLOC_MMAP_MIN (256 * 1024)

/* Free bytes inside the heaps worth a malloc_trim. */
#define FG_ALLOC_TRIM_FREE_MIN (8u << 20)

void fg_alloc_setup(void)
{
	mallopt(M_MMAP_THRESHOLD, FG_ALLOC_MMAP_MIN);
}

/*
 * free() gives back only the top of a heap: a client that held many small
 * buffers (1000 streams of 57 KiB of headers) left them free but in the
 * process, 116 MB of RSS with nothing in flight.  malloc_trim releases the
 * free pages anywhere in every arena; mallinfo2 says first whether there
 * is enough to bother (both walk the arenas under their locks).
 */
void fg_alloc_release(void)
{
	struct mallinfo2 mi = mallinfo2();

	if (mi.fordblks >= FG_ALLOC_TRIM_FREE_MIN)
		malloc_trim(0);
}

const char *fg_alloc_name(void)
{
	static char name[48];

	if (!name[0])
#ifdef __SANITIZE_ADDRESS__
		snprintf(name, sizeof(name), "AddressSanitizer (glibc %s)", gnu_get_libc_version());
#else
		snprintf(name, sizeof(name), "glibc %s", gnu_get_libc_version());
#endif
	return name;
}
#endif
