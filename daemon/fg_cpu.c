/*
 * fg_cpu.c - CPUs usable by this process: affinity mask and cgroup quota.
 */
#include "config.h"

#include "fg_cpu.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* cpu.max and the v1 files are one short line; anything longer is not ours. */
#define CGROUP_LINE_MAX 64

/* sched_getaffinity fails with EINVAL while the mask is smaller than the
 * kernel's; double it up to this many CPUs before giving up. */
#define AFFINITY_MAX_CPUS (1 << 16)

/* cgroup v1 mounts the cpu controller under one of these names. */
static const char *const v1_dirs[] = { "cpu", "cpu,cpuacct" };

static int online_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 && n < INT_MAX ? (int)n : 1;
}

/* CPUs in our affinity mask read with room for <ncpu> CPUs; -EINVAL when
 * the kernel's mask is larger than that, another negative errno otherwise. */
static int affinity_count_sized(int ncpu)
{
	cpu_set_t *set = CPU_ALLOC(ncpu);
	size_t size = CPU_ALLOC_SIZE(ncpu);
	int n;

	if (!set)
		return -ENOMEM;
	CPU_ZERO_S(size, set);
	n = sched_getaffinity(0, size, set) == 0 ? CPU_COUNT_S(size, set) : -errno;
	CPU_FREE(set);
	return n;
}

static int affinity_count(void)
{
	for (int ncpu = 1024; ncpu <= AFFINITY_MAX_CPUS; ncpu *= 2) {
		int n = affinity_count_sized(ncpu);

		if (n > 0)
			return n;
		if (n != -EINVAL)
			break;
	}
	return online_count();
}

/* Read <root>/<name> into <buf>; 0 on success, -1 if absent or unreadable. */
static int read_line(const char *root, const char *name, char *buf, size_t len)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, name) >= sizeof(path))
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* A positive decimal that fits in int64 and ends at <*end>; -1 otherwise. */
static int64_t parse_positive(const char *s, char **end)
{
	long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, end, 10);
	if (errno || v <= 0)
		return -1;
	return v;
}

/* CPUs allowed by a quota, rounded up: 150ms of CPU per 100ms is two
 * workers' worth of work, not one.  0 means no quota. */
static int quota_cpus(int64_t quota, int64_t period)
{
	int64_t n;

	if (quota <= 0 || period <= 0)
		return 0;
	n = quota / period + (quota % period != 0);
	return n > INT_MAX ? INT_MAX : (int)n;
}

/* cgroup v2 cpu.max: "max 100000" (no quota) or "<quota> <period>". */
static int v2_limit(const char *root, int *cpus)
{
	char line[CGROUP_LINE_MAX], *end;
	int64_t quota, period;

	if (read_line(root, "cpu.max", line, sizeof(line)))
		return -1;
	*cpus = 0;
	if (strncmp(line, "max", 3) == 0)
		return 0;
	quota = parse_positive(line, &end);
	if (quota < 0 || *end != ' ')
		return 0;
	period = parse_positive(end + 1, &end);
	if (period < 0)
		return 0;
	*cpus = quota_cpus(quota, period);
	return 0;
}

/* cgroup v1: cpu.cfs_quota_us is -1 when there is no quota. */
static int v1_limit(const char *root, const char *dir, int *cpus)
{
	char path[PATH_MAX], line[CGROUP_LINE_MAX], *end;
	int64_t quota, period;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, dir) >= sizeof(path))
		return -1;
	if (read_line(path, "cpu.cfs_quota_us", line, sizeof(line)))
		return -1;
	*cpus = 0;
	quota = parse_positive(line, &end);
	if (read_line(path, "cpu.cfs_period_us", line, sizeof(line)))
		return 0;
	period = parse_positive(line, &end);
	*cpus = quota_cpus(quota, period);
	return 0;
}

/* CPUs the cgroup quota allows under <root>, 0 when there is none. */
static int cgroup_limit(const char *root)
{
	int cpus = 0;

	if (v2_limit(root, &cpus) == 0)
		return cpus;
	for (size_t i = 0; i < sizeof(v1_dirs) / sizeof(v1_dirs[0]); i++)
		if (v1_limit(root, v1_dirs[i], &cpus) == 0)
			return cpus;
	return 0;
}

int fg_cpu_count_at(const char *cgroup_root)
{
	int n = affinity_count();
	int limit = cgroup_root ? cgroup_limit(cgroup_root) : 0;

	if (limit > 0 && limit < n)
		n = limit;
	return n > 0 ? n : 1;
}

int fg_cpu_count(void)
{
	return fg_cpu_count_at("/sys/fs/cgroup");
}
