/*
 * fg_error.h - the one error convention of feedguard.
 *
 * Every function that can fail returns int: 0 is success, a negative FG_E*
 * is failure.  Codes below FG_E_FATAL_BASE are stream-level (one call fails,
 * the connection and the daemon keep going); codes at or above it in
 * magnitude are connection- or process-level.  fg_err_is_fatal() tells them
 * apart so callers never compare ranges by hand.
 */
#ifndef FG_ERROR_H
#define FG_ERROR_H

enum fg_error {
	FG_OK = 0,
	/* stream-level: fail one call */
	FG_EINVAL = -1,      /* malformed input from a peer or a file */
	FG_ETOOBIG = -2,     /* a size limit was exceeded */
	FG_ENOTFOUND = -3,   /* a named thing does not exist */
	FG_ETIMEOUT = -4,    /* a deadline passed */
	FG_EUNAVAIL = -5,    /* a dependency (upstream) cannot be reached */
	FG_ESTATE = -6,      /* call made in a state that does not allow it */
	FG_EBUSY = -7,       /* a bound on work in flight was reached; try later */
	/* connection- or process-level */
	FG_E_FATAL_BASE = -100,
	FG_ENOMEM = -100,    /* allocation failed */
	FG_EIO = -101,       /* a system call failed; errno was saved by the caller */
	FG_EPROTO = -102,    /* the peer broke HTTP/2; the connection must close */
	FG_ECONFIG = -103,   /* a config file is invalid */
};

/* fg_err_is_fatal - 1 if <err> ends more than one call, 0 otherwise. */
static inline int fg_err_is_fatal(int err)
{
	return err <= FG_E_FATAL_BASE;
}

#endif /* FG_ERROR_H */
