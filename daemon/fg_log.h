/*
 * fg_log.h - one logfmt line per event, on stderr.
 *
 * Lines look like
 *   ts=2026-11-23T01:02:03.456Z level=info event=listening addr=127.0.0.1:8080
 * Each line is written with a single write(2), so lines from different
 * threads never interleave.  The level is process-wide and may change on
 * reload; it is read and written atomically.
 *
 * Never log a raw user id: callers pass pseudonymous keys only.
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <stddef.h>
#include <stdint.h>
#include "fg_config.h"

/* fg_log_set_level - lines below <level> are dropped from now on.  Any thread. */
void fg_log_set_level(enum fg_log_level level);

/* fg_log_enabled - 1 if a line at <level> would be written. */
int fg_log_enabled(enum fg_log_level level);

/*
 * fg_log - write "ts=... level=... event=<event>" followed by the logfmt
 * pairs that <fmt> produces (already "key=value key2=value2").  Free text
 * goes through fg_log_quote.  Any thread.
 */
void fg_log(enum fg_log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * fg_log_quote - <s> as a logfmt value: double-quoted, with '"' and '\'
 * escaped and control bytes as \xNN, truncated to fit <buf> of <len> bytes.
 * Returns <buf>.
 */
const char *fg_log_quote(char *buf, size_t len, const char *s);

/*
 * fg_log_to - as fg_log, to <fd> (an access log), whatever the level.
 * Lines over 4 KiB are truncated.  Any thread.
 */
void fg_log_to(int fd, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * A line a client can provoke at will (a connection refused, a bad answer
 * at the clients' rate) goes through a limit: at most one line per period,
 * and the next line says how many were not written, so a flood costs a
 * line a period, not a line per event.  One per call site and worker:
 * never shared between threads.
 */
struct fg_log_limit {
	uint64_t logged_us;         /* when the last line went; 0: never */
	uint64_t unlogged;          /* events since, not written */
};

/*
 * fg_log_limit_take - 1 when an event at <now_us> may be written (at most
 * one per <period_us>): <*unlogged> is then the count of events not written
 * since the previous line, and the count starts again.  0 when it must not
 * (counted).
 */
int fg_log_limit_take(struct fg_log_limit *l, uint64_t now_us, uint64_t period_us, uint64_t *unlogged);

#define fg_log_debug(ev, ...) do { if (fg_log_enabled(FG_LOG_DEBUG)) fg_log(FG_LOG_DEBUG, ev, __VA_ARGS__); } while (0)

#endif /* FG_LOG_H */
