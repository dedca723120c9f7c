/*
 * test_cpu.c - cmocka group "cpu": fg_cpu.h through its header, against
 * fake cgroup trees built in a temporary directory.
 */
#include "config.h"

#include <ftw.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_testutil.h"

#include "fg_cpu.h"

struct tree {
	char root[64];          /* the fake cgroup root */
};

/* CPUs in our affinity mask, counted here independently of fg_cpu. */
static int affinity(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	return CPU_COUNT(&set);
}

static void put(const struct tree *t, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", t->root, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void mkdir_in(const struct tree *t, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", t->root, name);
	assert_int_equal(mkdir(path, 0700), 0);
}

static int setup(void **state)
{
	struct tree *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	strcpy(t->root, "/tmp/fg_cpu_test.XXXXXX");
	if (!mkdtemp(t->root)) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tree *t = *state;
	int rc = fg_test_rmtree(t->root);

	free(t);
	return rc;
}

static void test_no_cgroup_files(void **state)
{
	const struct tree *t = *state;

	assert_int_equal(fg_cpu_count_at(t->root), affinity());
	assert_int_equal(fg_cpu_count_at("/nonexistent/cgroup/root"), affinity());
}

static void test_v2_no_quota(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "max 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), affinity());
}

static void test_v2_one_cpu(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "100000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), 1);
}

static void test_v2_never_below_one(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "10000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), 1);
}

/* 1.5 CPUs of quota is work for two workers. */
static void test_v2_rounds_up(void **state)
{
	const struct tree *t = *state;

	if (affinity() < 2)
		skip();
	put(t, "cpu.max", "150000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), 2);
}

static void test_v2_quota_above_affinity(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "100000000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), affinity());
}

static void test_v2_malformed_means_no_quota(void **state)
{
	const struct tree *t = *state;
	static const char *const bad[] = {
		"", "garbage\n", "100000\n", "100000 0\n", "0 100000\n", "-1 100000\n",
		"100000 abc\n", "99999999999999999999999 100000\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put(t, "cpu.max", bad[i]);
		assert_int_equal(fg_cpu_count_at(t->root), affinity());
	}
}

static void test_v1_quota(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "50000\n");
	put(t, "cpu/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), 1);
}

static void test_v1_no_quota(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "-1\n");
	put(t, "cpu/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), affinity());
}

static void test_v1_cpuacct_dir(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu,cpuacct");
	put(t, "cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
	put(t, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), 1);
}

static void test_v1_missing_period(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), affinity());
}

/* A cgroup v2 file wins over stale v1 ones (hybrid hosts). */
static void test_v2_before_v1(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "max 100000\n");
	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "100000\n");
	put(t, "cpu/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root), affinity());
}

/* A narrower affinity mask (cpuset, taskset) lowers the count too. */
static void test_affinity_mask(void **state)
{
	const struct tree *t = *state;
	cpu_set_t saved, one;
	int first = -1;

	assert_int_equal(sched_getaffinity(0, sizeof(saved), &saved), 0);
	for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
		if (CPU_ISSET(i, &saved))
			first = i;
	assert_true(first >= 0);
	CPU_ZERO(&one);
	CPU_SET(first, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	int n = fg_cpu_count_at(t->root);

	assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
	assert_int_equal(n, 1);
}

static void test_real_system(void **state)
{
	int n = fg_cpu_count();

	assert_true(n >= 1);
	assert_true(n <= affinity());
}

#define TREE_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		TREE_TEST(test_no_cgroup_files),
		TREE_TEST(test_v2_no_quota),
		TREE_TEST(test_v2_one_cpu),
		TREE_TEST(test_v2_never_below_one),
		TREE_TEST(test_v2_rounds_up),
		TREE_TEST(test_v2_quota_above_affinity),
		TREE_TEST(test_v2_malformed_means_no_quota),
		TREE_TEST(test_v1_quota),
		TREE_TEST(test_v1_no_quota),
		TREE_TEST(test_v1_cpuacct_dir),
		TREE_TEST(test_v1_missing_period),
		TREE_TEST(test_v2_before_v1),
		TREE_TEST(test_affinity_mask),
		cmocka_unit_test(test_real_system),
	};

	return cmocka_run_group_tests_name("cpu", tests, NULL, NULL);
}
