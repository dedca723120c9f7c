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
	char self[96];          /* a fake /proc/self/cgroup, beside the tree */
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

/* Write <text> as the fake /proc/self/cgroup; <len> lets it hold NULs. */
static void put_self_len(const struct tree *t, const char *text, size_t len)
{
	FILE *f = fopen(t->self, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void put_self(const struct tree *t, const char *text)
{
	put_self_len(t, text, strlen(text));
}

/* A quota of one CPU is only told apart from "no quota" with two CPUs. */
static void need_two_cpus(void)
{
	if (affinity() < 2)
		skip();
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
	snprintf(t->self, sizeof(t->self), "%s.self", t->root);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tree *t = *state;
	int rc = fg_test_rmtree(t->root);

	unlink(t->self);
	free(t);
	return rc;
}

static void test_no_cgroup_files(void **state)
{
	const struct tree *t = *state;

	assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
	assert_int_equal(fg_cpu_count_at("/nonexistent/cgroup/root", NULL), affinity());
}

static void test_v2_no_quota(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "max 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
}

static void test_v2_one_cpu(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "100000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), 1);
}

static void test_v2_never_below_one(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "10000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), 1);
}

/* 1.5 CPUs of quota is work for two workers. */
static void test_v2_rounds_up(void **state)
{
	const struct tree *t = *state;

	if (affinity() < 2)
		skip();
	put(t, "cpu.max", "150000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), 2);
}

static void test_v2_quota_above_affinity(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "100000000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
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
		assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
	}
}

static void test_v1_quota(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "50000\n");
	put(t, "cpu/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), 1);
}

static void test_v1_no_quota(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "-1\n");
	put(t, "cpu/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
}

static void test_v1_cpuacct_dir(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu,cpuacct");
	put(t, "cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
	put(t, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), 1);
}

static void test_v1_missing_period(void **state)
{
	const struct tree *t = *state;

	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
}

/* A cgroup v2 file wins over stale v1 ones (hybrid hosts). */
static void test_v2_before_v1(void **state)
{
	const struct tree *t = *state;

	put(t, "cpu.max", "max 100000\n");
	mkdir_in(t, "cpu");
	put(t, "cpu/cpu.cfs_quota_us", "100000\n");
	put(t, "cpu/cpu.cfs_period_us", "100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, NULL), affinity());
}

/* systemd: the process sits in its unit's cgroup, CPUQuota= puts cpu.max
 * there, and the v2 root has no cpu.max at all. */
static void test_v2_own_cgroup(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	mkdir_in(t, "system.slice");
	mkdir_in(t, "system.slice/fg.service");
	put(t, "system.slice/cpu.max", "max 100000\n");
	put(t, "system.slice/fg.service/cpu.max", "100000 100000\n");
	put_self(t, "0::/system.slice/fg.service\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* A slice's quota limits every unit below it. */
static void test_v2_parent_quota(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	mkdir_in(t, "batch.slice");
	mkdir_in(t, "batch.slice/fg.service");
	put(t, "batch.slice/cpu.max", "50000 100000\n");
	put(t, "batch.slice/fg.service/cpu.max", "max 100000\n");
	put_self(t, "0::/batch.slice/fg.service\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* The tightest level wins, whether it is the nearest or the farthest. */
static void test_v2_tightest_level(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	mkdir_in(t, "a");
	mkdir_in(t, "a/b");
	mkdir_in(t, "a/b/c");
	put_self(t, "0::/a/b/c\n");
	put(t, "a/cpu.max", "100000 100000\n");
	put(t, "a/b/cpu.max", "max 100000\n");
	put(t, "a/b/c/cpu.max", "200000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
	put(t, "a/cpu.max", "200000 100000\n");
	put(t, "a/b/c/cpu.max", "100000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* Inside a cgroup namespace our cgroup is "/", the mount root. */
static void test_v2_namespace_root(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	put(t, "cpu.max", "100000 100000\n");
	put_self(t, "0::/\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* Without a usable /proc/self/cgroup only the mount root is read. */
static void test_self_missing_reads_root(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	put(t, "cpu.max", "100000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, "/nonexistent/cgroup"), 1);
	assert_int_equal(fg_cpu_count_at(t->root, t->root), 1);
	assert_int_equal(fg_cpu_count_at(t->root, "/dev/zero"), 1);
}

/* Nested deeper than the bound: the nearest levels are still read. */
static void test_v2_deep_path(void **state)
{
	const struct tree *t = *state;
	char dir[160] = "", self[170];

	need_two_cpus();
	for (int i = 0; i < 40; i++) {
		strcat(dir, i ? "/d" : "d");
		mkdir_in(t, dir);
	}
	snprintf(self, sizeof(self), "0::/%s\n", dir);
	put_self(t, self);
	put(t, "cpu.max", "100000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), affinity());
	strcat(dir, "/cpu.max");
	put(t, dir, "100000 100000\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* cgroup v1 (or hybrid): the path of the line listing "cpu" is read under
 * the cpu controller's mount, and the "0::" line finds no cpu.max. */
static void test_v1_own_cgroup(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	mkdir_in(t, "cpu,cpuacct");
	mkdir_in(t, "cpu,cpuacct/system.slice");
	mkdir_in(t, "cpu,cpuacct/system.slice/fg.service");
	put(t, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
	put(t, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	put(t, "cpu,cpuacct/system.slice/fg.service/cpu.cfs_quota_us", "100000\n");
	put(t, "cpu,cpuacct/system.slice/fg.service/cpu.cfs_period_us", "100000\n");
	put_self(t, "12:memory:/system.slice/fg.service\n"
		    "5:cpuset:/\n"
		    "4:cpu,cpuacct:/system.slice/fg.service\n"
		    "1:name=systemd:/system.slice/fg.service\n"
		    "0::/system.slice/fg.service\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

static void test_v1_parent_quota(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	mkdir_in(t, "cpu");
	mkdir_in(t, "cpu/batch.slice");
	mkdir_in(t, "cpu/batch.slice/fg.service");
	put(t, "cpu/batch.slice/cpu.cfs_quota_us", "50000\n");
	put(t, "cpu/batch.slice/cpu.cfs_period_us", "100000\n");
	put(t, "cpu/batch.slice/fg.service/cpu.cfs_quota_us", "-1\n");
	put(t, "cpu/batch.slice/fg.service/cpu.cfs_period_us", "100000\n");
	put_self(t, "3:cpuacct,cpu:/batch.slice/fg.service\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* "cpuset" is not "cpu": its path must not be taken for the cpu one. */
static void test_v1_cpuset_is_not_cpu(void **state)
{
	const struct tree *t = *state;

	need_two_cpus();
	mkdir_in(t, "cpu");
	mkdir_in(t, "cpu/right");
	put(t, "cpu/right/cpu.cfs_quota_us", "100000\n");
	put(t, "cpu/right/cpu.cfs_period_us", "100000\n");
	put_self(t, "3:cpu:/right\n6:cpuset:/wrong\n");
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
}

/* Paths that would lead out of the mount (a process outside its cgroup
 * namespace's root sees "/../x") are not followed: only the root is read. */
static void test_self_dotdot_not_followed(void **state)
{
	const struct tree *t = *state;
	static const char *const bad[] = {
		"0::/../x\n", "0::/a/../x\n", "0::/a/./../x\n",
	};
	char mount[96];

	mkdir_in(t, "mnt");
	mkdir_in(t, "mnt/a");
	mkdir_in(t, "x");
	put(t, "x/cpu.max", "100000 100000\n");
	put(t, "mnt/x", "not a directory\n");
	snprintf(mount, sizeof(mount), "%s/mnt", t->root);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_self(t, bad[i]);
		assert_int_equal(fg_cpu_count_at(mount, t->self), affinity());
	}
}

/* Longer than any path the kernel writes (PATH_MAX). */
#define LONG_PATH 20000

/* Garbage in /proc/self/cgroup: never a crash, and the lines that parse
 * are still used. */
static void test_self_garbage(void **state)
{
	const struct tree *t = *state;
	static const char *const bad[] = {
		"", "\n", "garbage\n", "0::\n", "0::relative\n", "0:/a\n", ":::\n",
		"0::/a//\n", "0::/a/\n", "0::a\n", "x:cpu\n", "3:cpu:\n", "3::cpu:/a\n",
	};
	char *line = malloc(LONG_PATH + 64);

	need_two_cpus();
	assert_non_null(line);
	mkdir_in(t, "a");
	put(t, "a/cpu.max", "100000 100000\n");
	put(t, "cpu.max", "max 100000\n");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_self(t, bad[i]);
		assert_int_equal(fg_cpu_count_at(t->root, t->self), affinity());
	}
	put_self_len(t, "0::/a\0\n", 7);
	assert_int_equal(fg_cpu_count_at(t->root, t->self), affinity());
	strcpy(line, "0::/");
	memset(line + 4, 'a', LONG_PATH);
	strcpy(line + 4 + LONG_PATH, "\n");
	put_self(t, line);
	assert_int_equal(fg_cpu_count_at(t->root, t->self), affinity());
	strcat(line, "0::/a\n");
	put_self(t, line);
	assert_int_equal(fg_cpu_count_at(t->root, t->self), 1);
	free(line);
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
	int n = fg_cpu_count_at(t->root, NULL);

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
		TREE_TEST(test_v2_own_cgroup),
		TREE_TEST(test_v2_parent_quota),
		TREE_TEST(test_v2_tightest_level),
		TREE_TEST(test_v2_namespace_root),
		TREE_TEST(test_self_missing_reads_root),
		TREE_TEST(test_v2_deep_path),
		TREE_TEST(test_v1_own_cgroup),
		TREE_TEST(test_v1_parent_quota),
		TREE_TEST(test_v1_cpuset_is_not_cpu),
		TREE_TEST(test_self_dotdot_not_followed),
		TREE_TEST(test_self_garbage),
		TREE_TEST(test_affinity_mask),
		cmocka_unit_test(test_real_system),
	};

	return cmocka_run_group_tests_name("cpu", tests, NULL, NULL);
}
