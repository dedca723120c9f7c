/*
 * fg_replay_stats.h - what feedguard-replay reports: one row per call,
 * policy and item class (the calls file, CSV or JSON Lines, for pandas or
 * R), and the summary table built from those rows, per policy, band and
 * class.  The summary of several calls files (the shards of one capture)
 * is built by reading the rows back, so `run` and `summary` share one
 * aggregation.
 *
 * A call's items per class come from its Decisions (the filter's fates):
 * shown is KEPT or SURPLUS_END, demoted counts shown items that were
 * demoted; removed, limited, surplus (SURPLUS_DROPPED) and trimmed are
 * fates.  Items the filter did not label are under the class "-".  The
 * exposure of a user-day (UTC date) to a class is the items of it shown to
 * that user on that day; its percentiles run over the user-days with a
 * call in the band (zero when none was shown).
 *
 * One thread; memory grows with the number of distinct (policy, band,
 * class, user, day) keys.
 */
#ifndef FG_REPLAY_STATS_H
#define FG_REPLAY_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "capture.pb-c.h"
#include "fg_tz.h"

/* Fates counted per class. */
enum fg_replay_count {
	FG_REPLAY_SHOWN = 0, FG_REPLAY_REMOVED, FG_REPLAY_DEMOTED, FG_REPLAY_LIMITED, FG_REPLAY_SURPLUS,
	FG_REPLAY_TRIMMED, FG_REPLAY_NCOUNTS,
};

#define FG_REPLAY_MAX_CLASSES 64

/* One call under one policy. */
struct fg_replay_row {
	const char *policy;             /* the policy's label ("A", "B", or the file) */
	uint64_t call;                  /* the call's number in the capture, from 1 */
	int64_t time_ms;
	char date[16];                  /* its local date, YYYY-MM-DD ("-" out of range): in the
	                                   zone its screen-time rules used, else the policy's */
	const char *user, *band, *method;
	int status;
	unsigned answered;              /* feedguard answered or failed it */
	const char *action;             /* "NONE", "NOTICE", "EMPTY", "DENY" */
	char notices[128];              /* notices, '|'-separated, in order */
	unsigned no_upstream;           /* replay had no ranker answer to give this policy */
	size_t nclasses;
	char cls[FG_REPLAY_MAX_CLASSES][64];
	uint32_t n[FG_REPLAY_MAX_CLASSES][FG_REPLAY_NCOUNTS];
};

/* fg_replay_row_of - the row of <call> (a recorded or replayed Call) under
 * <policy> (borrowed for the row's life, as are <call>'s strings); its
 * date in zone <tz> (NULL: UTC), the user's day for the exposure figures
 * as the policy counts days. */
void fg_replay_row_of(struct fg_replay_row *row, const char *policy, uint64_t n, const Feedguard__Capture__V1__Call *call,
                      unsigned no_upstream, const struct fg_tz *tz);

/* fg_replay_printable - control bytes (below 0x20, and 0x7f) in <s>
 * become '?', in place: what run and summary print of a capture's or a
 * calls file's strings reaches a terminal. */
void fg_replay_printable(char *s);

/* Calls file formats. */
enum fg_replay_format { FG_REPLAY_CSV = 0, FG_REPLAY_JSONL };

/* fg_replay_row_header - the CSV header line (nothing for JSON Lines). */
void fg_replay_row_header(FILE *out, enum fg_replay_format f);

/* fg_replay_row_write - <row> as CSV lines (one per class; one with class
 * "" when it has none) or one JSON line.  0, or -1 on a write error. */
int fg_replay_row_write(FILE *out, enum fg_replay_format f, const struct fg_replay_row *row);

struct fg_replay_stats;

/* fg_replay_stats_new - an empty aggregation; NULL: no memory. */
struct fg_replay_stats *fg_replay_stats_new(void);

/* fg_replay_stats_add - count <row>.  0 or FG_ENOMEM. */
int fg_replay_stats_add(struct fg_replay_stats *s, const struct fg_replay_row *row);

/*
 * fg_replay_stats_read_csv - count every row of calls file <in> (CSV, as
 * fg_replay_row_write makes it; <name> for messages).  0, or FG_EINVAL
 * with "<name>:<line>: why" in <err>, or FG_ENOMEM.
 */
int fg_replay_stats_read_csv(struct fg_replay_stats *s, FILE *in, const char *name, char *err, size_t errlen);

/*
 * fg_replay_stats_check_unique - FG_EINVAL, with why in <err>, when the
 * calls files read hold one call (policy label and number) twice: a file
 * given twice, or shards of different runs, would be counted twice.
 * Call it once, after the last fg_replay_stats_read_csv.
 */
int fg_replay_stats_check_unique(struct fg_replay_stats *s, char *err, size_t errlen);

/* fg_replay_stats_print - the summary table, policies side by side. */
void fg_replay_stats_print(FILE *out, struct fg_replay_stats *s);

/* fg_replay_stats_free - NULL is a no-op. */
void fg_replay_stats_free(struct fg_replay_stats *s);

#endif /* FG_REPLAY_STATS_H */
