/*
 * fg_clock.h - monotonic time in microseconds, for deadlines, backoff and
 * durations.  Never the wall clock: a clock step (NTP, an operator) must
 * not stretch a backoff or shorten a forwarded grpc-timeout.
 */
#ifndef FG_CLOCK_H
#define FG_CLOCK_H

#include <stdint.h>
#include <time.h>

/* fg_clock_now_us - CLOCK_MONOTONIC in microseconds (a vDSO call, no syscall). */
static inline uint64_t fg_clock_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif /* FG_CLOCK_H */
