/*
 * fg_capture_erase.h - data-subject erasure in captures: every closed
 * capture file of a directory rewritten without one user's records
 * (feedguardctl capture-erase).
 *
 * A file is rewritten only when it holds a record of the user: the kept
 * frames are copied byte for byte into a temporary file in the same
 * directory, which is synced and renamed over the original (a crash leaves
 * the old file or the new one, never half of either).  Files still being
 * written (".fgcap.open") are not touched: the daemon closes them at
 * rotation or on SIGUSR1.  Records made under another capture key (their
 * pseudonym's key id) cannot be matched (the user's pseudonym under that
 * key is not known): the files holding any are counted.  A rewritten file
 * keeps its times, so retention still sees its age.  A torn tail is dropped by a rewrite; a corrupt file is left as
 * it is and counted.
 *
 * Blocking file I/O: tools only.
 */
#ifndef FG_CAPTURE_ERASE_H
#define FG_CAPTURE_ERASE_H

#include <stddef.h>
#include <stdint.h>

struct fg_capture_erase_result {
	uint64_t files;                 /* closed capture files looked at */
	uint64_t rewritten;             /* files rewritten without the user */
	uint64_t records;               /* the user's records removed */
	uint64_t open_files;            /* files still being written: not searched */
	uint64_t other_key;             /* files holding records under another capture key */
	uint64_t failed;                /* files that could not be read or rewritten */
};

/*
 * fg_capture_erase - remove the records whose user_key is <pseudonym>
 * ("<key id>:<64 hex>", under the capture key <key_id>) from every closed
 * capture file (feedguard-*.fgcap) of <dir>; counts into <res>.  Returns 0
 * when every file was handled (see <res>), FG_EIO when <dir> cannot be
 * read, or FG_ENOMEM; <err> (<errlen> bytes) says why, and for each
 * file that failed, one line goes to stderr naming it.
 */
int fg_capture_erase(const char *dir, const char *key_id, const char *pseudonym,
                     struct fg_capture_erase_result *res, char *err, size_t errlen);

#endif /* FG_CAPTURE_ERASE_H */
