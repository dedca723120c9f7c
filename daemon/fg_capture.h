/*
 * fg_capture.h - the capture writer: one thread per process that appends
 * the records the workers' capture stages build (fg_stage_capture.c) to
 * capture files (fg_capfile.h), rotates them by size, age and SIGUSR1, and
 * deletes old ones (retention).
 *
 * Workers never wait for it and never take a lock: each worker has its
 * own single-producer ring of finished records, which the writer drains.
 * Every byte of capture is counted against capture.queue from the moment
 * a record starts growing (fg_capture_reserve) until the writer has
 * written it: past the budget a worker leaves messages out of its record,
 * and a record that finds its ring full is dropped and counted.
 *
 * Files: <directory>/feedguard-<host>-<pid>-<UTC time>-<seq>.fgcap.open
 * while written, renamed to .fgcap when closed.  Each starts with the
 * file header and a FileInfo record.  Retention only ever deletes closed
 * files of that name pattern.
 *
 * Threads: fg_capture_new, _configure, _reopen and _free on the main
 * thread; fg_capture_attach, _reserve, _release, _submit and _spare on a worker
 * (each worker its own ring); counters may be read from any thread.
 */
#ifndef FG_CAPTURE_H
#define FG_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"

struct fg_config;
struct fg_capture;
struct fg_capture_ring;

/* Capture file names: feedguard-<host>-<pid>-<UTC time>-<seq>.fgcap, with
 * ".open" after it while a writer has it. */
#define FG_CAPTURE_FILE_PREFIX "feedguard-"
#define FG_CAPTURE_FILE_SUFFIX ".fgcap"
#define FG_CAPTURE_OPEN_SUFFIX ".open"

enum fg_capture_file {
	FG_CAPTURE_NOT_OURS = 0,        /* not a name a writer gives */
	FG_CAPTURE_CLOSED,              /* feedguard-*.fgcap */
	FG_CAPTURE_OPEN,                /* feedguard-*.fgcap.open */
};

/* fg_capture_file_of - what the directory entry named <name> is.  Pure;
 * any thread. */
enum fg_capture_file fg_capture_file_of(const char *name);

/* Counters, written with atomics by the workers and the writer. */
enum fg_capture_drop {
	FG_CAPTURE_DROP_QUEUE_FULL = 0,         /* the worker's ring was full */
	FG_CAPTURE_DROP_WRITE_ERROR,            /* the file could not be opened or written, or capture is off */
	FG_CAPTURE_DROP_BUDGET,                 /* the record could not be finished within capture.queue,
	                                           capture.max_record_size or memory */
	FG_CAPTURE_NDROPS
};
enum fg_capture_omit {
	FG_CAPTURE_OMIT_RECORD_SIZE = 0,        /* over capture.max_record_size */
	FG_CAPTURE_OMIT_QUEUE,                  /* over capture.queue, or memory */
	FG_CAPTURE_OMIT_USER_ID,                /* it held a copy of the call's raw user id */
	FG_CAPTURE_NOMITS
};
enum fg_capture_file_event { FG_CAPTURE_FILE_OPENED = 0, FG_CAPTURE_FILE_ROTATED, FG_CAPTURE_FILE_DELETED,
                             FG_CAPTURE_FILE_FAILED, FG_CAPTURE_NFILE_EVENTS };

struct fg_capture_counters {
	uint64_t records;                       /* written */
	uint64_t bytes;                         /* written, frames included */
	uint64_t dropped[FG_CAPTURE_NDROPS];
	uint64_t omitted[FG_CAPTURE_NOMITS];    /* messages left out of records */
	uint64_t files[FG_CAPTURE_NFILE_EVENTS];
	uint64_t held;                          /* bytes held now (a gauge) */
};

/*
 * fg_capture_new - a writer for up to <nworkers> workers, idle until a
 * config turns capture on.  Returns 0 with it in <*out>, or FG_ENOMEM.
 */
int fg_capture_new(struct fg_capture **out, unsigned nworkers);

/*
 * fg_capture_configure - apply <cfg>'s capture section (borrowed; what is
 * needed is copied): the first config with capture on starts the thread;
 * a new directory or key id starts a new file; capture off closes the
 * file once the records already queued are written.  Returns 0, or
 * FG_ENOMEM / FG_EIO (the thread could not start: records submitted from
 * then on are dropped and counted as write errors, until a later
 * configure starts it).
 */
int fg_capture_configure(struct fg_capture *c, const struct fg_config *cfg);

/* fg_capture_reopen - close the current file and start a new one at the
 * next record (SIGUSR1, for logrotate). */
void fg_capture_reopen(struct fg_capture *c);

/* fg_capture_free - write what is queued, close the file, stop the thread
 * and free <c>, after every worker is gone.  NULL is a no-op. */
void fg_capture_free(struct fg_capture *c);

/* fg_capture_counters - the counters (read them with atomic loads). */
const struct fg_capture_counters *fg_capture_counters(const struct fg_capture *c);

/*
 * fg_capture_attach - the ring of worker <worker> (< nworkers), made on
 * first use; NULL when out of memory or out of range (the worker then
 * captures nothing).  The ring lives as long as <c>.  Any thread, but one
 * caller per worker index (the worker's own).
 */
struct fg_capture_ring *fg_capture_attach(struct fg_capture *c, unsigned worker);

/*
 * fg_capture_reserve - count <n> more bytes of capture against the
 * budget <limit> (capture.queue of the caller's snapshot): 0, or
 * FG_ETOOBIG when they would pass it (nothing counted).
 */
int fg_capture_reserve(struct fg_capture *c, uint64_t n, uint64_t limit);

/* fg_capture_release - give back <n> bytes counted by fg_capture_reserve. */
void fg_capture_release(struct fg_capture *c, uint64_t n);

/* fg_capture_omitted - count <n> messages left out of a record for <why>. */
void fg_capture_omitted(struct fg_capture *c, enum fg_capture_omit why, uint64_t n);

/* fg_capture_dropped - count a record a worker could not finish (<why>). */
void fg_capture_dropped(struct fg_capture *c, enum fg_capture_drop why);

/*
 * fg_capture_submit - queue finished record <rec> for the writer: its
 * bytes are a serialized feedguard.capture.v1.Record (the writer puts
 * the frame header in front with writev); <reserved> bytes were
 * counted for it and are released once it is written.  Takes <rec>'s
 * memory in every case (<rec> is left empty): 0, FG_EBUSY when the ring
 * is full, or FG_EUNAVAIL when capture is on but its writer thread could
 * not start (fg_capture_configure); either way the record is dropped and
 * counted, its bytes released.
 */
int fg_capture_submit(struct fg_capture_ring *r, struct fg_bufq *rec, uint64_t reserved);

/* The largest record buffer the writer hands back to its worker (and a
 * worker keeps for its next records) instead of freeing it. */
#define FG_CAPTURE_SPARE_MAX_CAP (32u * 1024)

/*
 * fg_capture_spare - an empty buffer with memory (at most 32 KiB) that
 * the writer gave back after writing one of this ring's records, moved
 * into <out> (freed first): 1, or 0 when there is none (<out> untouched).
 * The ring's worker only.  Up to 64 such buffers wait per ring.
 */
int fg_capture_spare(struct fg_capture_ring *r, struct fg_bufq *out);

/*
 * fg_capture_take - for a tool that runs the capture stage with no writer
 * thread (feedguard-replay, which never calls fg_capture_configure): the
 * oldest record queued by any worker, moved into <out> (emptied first; its
 * bytes a serialized Record, its reserved bytes released).  1 when one was
 * there, 0 when none.  Must not be used while a writer thread runs.
 */
int fg_capture_take(struct fg_capture *c, struct fg_bufq *out);

#endif /* FG_CAPTURE_H */
