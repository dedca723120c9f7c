/*
 * fuzz_common.h - checks several libFuzzer targets share.  Header-only:
 * each target is one translation unit (see run.sh).
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#include "fg_error.h"

/*
 * An operator-facing error must read "<name>:LINE:COLUMN: text", with a
 * line and column from 1 and some text, and hold no control byte that
 * could break a log line.  Aborts (a finding) otherwise.
 */
static inline void fuzz_check_position_message(const char *err, const char *name)
{
	char fmt[256];
	unsigned line, col;
	int end = 0;

	if (snprintf(fmt, sizeof(fmt), "%s:%%u:%%u: %%n", name) >= (int)sizeof(fmt))
		abort();
	if (sscanf(err, fmt, &line, &col, &end) != 2 || end == 0 || line == 0 || col == 0 || err[end] == '\0')
		abort();
	for (const char *p = err; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
}

/*
 * A load that failed (<rc> < 0): either a bad file, FG_ECONFIG with a
 * position message as above, or FG_ENOMEM (the fuzzer's allocation cap);
 * nothing else.  Aborts otherwise.
 */
static inline void fuzz_check_load_failure(int rc, const char *err, const char *name)
{
	if (rc == FG_ECONFIG)
		fuzz_check_position_message(err, name);
	else if (rc != FG_ENOMEM)
		abort();
}

#endif /* FUZZ_COMMON_H */
