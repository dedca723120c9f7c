/*
 * fg_units.h - parse durations and sizes written with units.
 *
 * Stateless, no allocation.  Config values always carry a unit so that a
 * reader never has to guess whether "30" meant seconds or milliseconds.
 */
#ifndef FG_UNITS_H
#define FG_UNITS_H

#include <stdint.h>

/*
 * fg_units_parse_duration - parse "<digits>[.<digits>]<unit>" into
 * microseconds.  Units: us, ms, s, m, h.  "0" alone is not accepted: zero
 * needs a unit too ("0s").
 * A fraction must come to a whole number of microseconds ("1.5s" and
 * "0.25h" are fine, "1.5us" is not).  No sign, no spaces.
 * <text> is a NUL-terminated string.  On success stores the value in
 * <*usec> and returns 0.  Returns FG_EINVAL for a missing/unknown unit,
 * no digits, trailing garbage or a fraction finer than 1us, and FG_ETOOBIG
 * when the value does not fit in int64 microseconds.  <*why> (may be NULL)
 * gets a static message on failure and is left alone on success.
 */
int fg_units_parse_duration(const char *text, int64_t *usec, const char **why);

/*
 * fg_units_parse_size - parse "<digits><unit>" into bytes.  Units: B, KiB,
 * MiB, GiB (powers of 1024); no fraction.  Same return codes as the
 * duration parser; FG_ETOOBIG when the value does not fit in uint64.
 */
int fg_units_parse_size(const char *text, uint64_t *bytes, const char **why);

/*
 * fg_units_format_duration - write <usec> as a whole number of the largest
 * unit that divides it exactly ("250ms", "2s", "90s", "5m"; zero is "0s",
 * a negative value gets a '-'), text that fg_units_parse_duration reads
 * back to the same value.  Writes into <buf> of <len> bytes, truncating if
 * needed; NUL-terminates whenever <len> > 0 (24 bytes always suffice).
 * Returns <buf>.
 */
char *fg_units_format_duration(int64_t usec, char *buf, unsigned len);

/*
 * fg_units_format_size - write <bytes> as a whole number of the largest
 * unit that divides it exactly ("4MiB", "1536B") into <buf> of <len>
 * bytes; always NUL-terminates.  Returns <buf>.
 */
char *fg_units_format_size(uint64_t bytes, char *buf, unsigned len);

#endif /* FG_UNITS_H */
