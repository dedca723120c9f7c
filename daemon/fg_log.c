/* fg_log.c - logfmt lines on stderr; see fg_log.h. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fg_log.h"

/* The only process-wide mutable value outside main(): set at start and on
 * reload, read by every thread, hence atomic. */
static int log_level = FG_LOG_INFO;

static const char *const level_names[] = {
	[FG_LOG_DEBUG] = "debug",
	[FG_LOG_INFO] = "info",
	[FG_LOG_WARN] = "warn",
	[FG_LOG_ERROR] = "error",
};

void fg_log_set_level(enum fg_log_level level)
{
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

int fg_log_enabled(enum fg_log_level level)
{
	return (int)level >= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

#define LOG_LINE_MAX 4096

/* Format one line and write it with a single write(2). */
static void log_vwrite(int fd, const char *level, const char *event, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	int n, m;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	             ts.tv_nsec / 1000000, level, event);
	if (fmt && *fmt && n < (int)sizeof(line) - 2) {
		line[n++] = ' ';
		m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		if (m > 0)
			n += m;
	}
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2; /* truncated: keep the newline */
	line[n++] = '\n';
	/* One write so lines from several threads never interleave; a failed
	 * write of a log line has nowhere better to be reported. */
	if (write(fd, line, (size_t)n) < 0)
		return;
}

void fg_log(enum fg_log_level level, const char *event, const char *fmt, ...)
{
	va_list ap;

	if (!fg_log_enabled(level))
		return;
	va_start(ap, fmt);
	log_vwrite(STDERR_FILENO, level_names[level], event, fmt, ap);
	va_end(ap);
}

void fg_log_to(int fd, const char *event, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(fd, "info", event, fmt, ap);
	va_end(ap);
}

const char *fg_log_quote(char *buf, size_t len, const char *s)
{
	size_t o = 0;

	if (len < 3) {
		if (len)
			buf[0] = '\0';
		return buf;
	}
	buf[o++] = '"';
	for (; s && *s && o + 5 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

int fg_log_limit_take(struct fg_log_limit *l, uint64_t now_us, uint64_t period_us, uint64_t *unlogged)
{
	if (l->logged_us && now_us - l->logged_us < period_us) {
		l->unlogged++;
		return 0;
	}
	*unlogged = l->unlogged;
	l->logged_us = now_us ? now_us : 1;
	l->unlogged = 0;
	return 1;
}
