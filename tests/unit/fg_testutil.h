/*
 * fg_testutil.h - what several unit-test groups need around the module
 * under test: a private temporary directory per test and files written
 * into it.  Header-only (static inline), so each test program stays one
 * source file and test-only link wrappers (--wrap=malloc) see the calls.
 */
#ifndef FG_TESTUTIL_H
#define FG_TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A directory made by fg_test_dir_new, and the path of one file in it. */
struct fg_test_dir {
	char path[64];
	char file[128];         /* <path>/<file name given to fg_test_dir_new> */
};

static inline int fg_test_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* fg_test_rmtree - remove <path> and everything below it.  0 or -1. */
static inline int fg_test_rmtree(const char *path)
{
	return nftw(path, fg_test_remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* fg_test_dir_new - a cmocka setup helper: a new mkdtemp directory in
 * <*state> (struct fg_test_dir), with <file> named inside it.  0 or -1. */
static inline int fg_test_dir_new(void **state, const char *file)
{
	struct fg_test_dir *d = calloc(1, sizeof(*d));

	if (!d)
		return -1;
	strcpy(d->path, "/tmp/fg_test.XXXXXX");
	if (!mkdtemp(d->path)) {
		free(d);
		return -1;
	}
	snprintf(d->file, sizeof(d->file), "%s/%s", d->path, file);
	*state = d;
	return 0;
}

/* fg_test_dir_free - the matching teardown: the directory and all in it. */
static inline int fg_test_dir_free(void **state)
{
	struct fg_test_dir *d = *state;
	int rc = fg_test_rmtree(d->path);

	free(d);
	return rc;
}

/* fg_test_write_file - write <len> bytes at <data> to <path> (created or
 * truncated); fails the test on any error. */
static inline void fg_test_write_file(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

#endif /* FG_TESTUTIL_H */
