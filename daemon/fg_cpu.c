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

/* A cgroup path from /proc/self/cgroup, with its "<id>:<controllers>:"
 * prefix (v1 may list several controllers and named hierarchies). */
#define CGROUP_SELF_LINE_MAX (PATH_MAX + 128)

/* /proc/self/cgroup has one line per v1 hierarchy (about 13) plus the v2
 * one; stop reading after this many. */
#define CGROUP_SELF_LINES_MAX 64

/* Levels read, our own cgroup first.  systemd units and Kubernetes
 * containers sit two to five levels deep; a deeper path has its nearest
 * levels read, which is where quotas are set. */
#define CGROUP_DEPTH_MAX 32

/* cgroup v1 mounts the cpu controller under one of these names. */
static const char *const v1_dirs[] = { "cpu", "cpu,cpuacct" };

/* This process's cgroup paths, each "" (the mount root) or "/a/b". */
struct self_cgroup {
	char v2[PATH_MAX];      /* from the "0::<path>" line */
	char v1_cpu[PATH_MAX];  /* from the v1 line that lists "cpu" */
};

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

/* The smaller of two CPU limits, where 0 means "no limit". */
static int tighter(int a, int b)
{
	if (a == 0)
		return b;
	return b > 0 && b < a ? b : a;
}

/* cgroup v2 cpu.max in <dir>: "max 100000" (no quota) or "<quota> <period>".
 * -1 when the file is absent, so the caller can tell v2 from v1. */
static int v2_level(const char *dir, int *cpus)
{
	char line[CGROUP_LINE_MAX], *end;
	int64_t quota, period;

	if (read_line(dir, "cpu.max", line, sizeof(line)))
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

/* cgroup v1 in <dir>: cpu.cfs_quota_us is -1 when there is no quota. */
static int v1_level(const char *dir, int *cpus)
{
	char line[CGROUP_LINE_MAX], *end;
	int64_t quota, period;

	if (read_line(dir, "cpu.cfs_quota_us", line, sizeof(line)))
		return -1;
	*cpus = 0;
	quota = parse_positive(line, &end);
	if (read_line(dir, "cpu.cfs_period_us", line, sizeof(line)))
		return 0;
	period = parse_positive(line, &end);
	*cpus = quota_cpus(quota, period);
	return 0;
}

/* The tightest limit <level> finds in <mount><path> and in each parent up
 * to <mount> itself: the kernel throttles a cgroup by every quota above it,
 * and systemd puts a unit's CPUQuota= on the unit while a slice's sits on
 * the parent.  <path> is "" or "/a/b" (see clean_path).  0 with <*cpus> set
 * (0 for no quota) when some level had the file, -1 when none had. */
static int walk_up(const char *mount, const char *path,
		   int (*level)(const char *dir, int *cpus), int *cpus)
{
	char dir[PATH_MAX];
	size_t mount_len = strlen(mount);
	int found = -1;

	if ((size_t)snprintf(dir, sizeof(dir), "%s%s", mount, path) >= sizeof(dir))
		return -1;
	*cpus = 0;
	for (int depth = 0; depth < CGROUP_DEPTH_MAX; depth++) {
		int here;

		if (level(dir, &here) == 0) {
			found = 0;
			*cpus = tighter(*cpus, here);
		}
		if (strlen(dir) <= mount_len)
			break;
		*strrchr(dir + mount_len, '/') = '\0';
	}
	return found;
}

/* Check that <path> (a cgroup path from /proc/self/cgroup, '\n' already
 * cut) is safe to append to a mount point, and turn "/" into "".  -1 when
 * it is not absolute or has an empty, "." or ".." part: the kernel writes
 * none of those, except "/../x" for a process outside its cgroup
 * namespace's root, which would lead out of the mount. */
static int clean_path(char *path)
{
	size_t len = strlen(path);

	if (path[0] != '/')
		return -1;
	if (len == 1)
		path[0] = '\0';
	for (const char *p = path; *p; ) {
		size_t part = strcspn(++p, "/");

		if (part == 0 || (part == 1 && p[0] == '.') ||
		    (part == 2 && p[0] == '.' && p[1] == '.'))
			return -1;
		p += part;
	}
	return 0;
}

/* Whether the comma-separated <list> names the controller <name>. */
static int has_controller(const char *list, const char *name)
{
	size_t name_len = strlen(name);

	for (;;) {
		size_t part = strcspn(list, ",");

		if (part == name_len && strncmp(list, name, part) == 0)
			return 1;
		if (!list[part])
			return 0;
		list += part + 1;
	}
}

/* One "<id>:<controllers>:<path>" line of /proc/self/cgroup (cgroups(7)).
 * The v2 line is "0::<path>"; the v1 line we want lists "cpu".  Lines that
 * do not parse, or whose path does not clean, are skipped. */
static void parse_self_line(char *line, struct self_cgroup *self)
{
	char *list = strchr(line, ':'), *path, *dest;

	if (!list || !(path = strchr(list + 1, ':')))
		return;
	*list++ = '\0';
	*path++ = '\0';
	path[strcspn(path, "\n")] = '\0';
	if (strcmp(line, "0") == 0 && *list == '\0')
		dest = self->v2;
	else if (has_controller(list, "cpu"))
		dest = self->v1_cpu;
	else
		return;
	if (strlen(path) >= sizeof(self->v2) || clean_path(path))
		return;
	memcpy(dest, path, strlen(path) + 1);
}

/* Fill <self> from <file> (/proc/self/cgroup format).  Paths not found stay
 * "" (the mount root), which is also right inside a cgroup namespace, where
 * the kernel shows our own cgroup as "/".  Lines longer than the buffer are
 * skipped whole, and at most CGROUP_SELF_LINES_MAX reads are made, so a
 * file without newlines (/dev/zero) cannot keep us here. */
static void read_self(const char *file, struct self_cgroup *self)
{
	char line[CGROUP_SELF_LINE_MAX];
	int at_start = 1;
	FILE *f;

	self->v2[0] = '\0';
	self->v1_cpu[0] = '\0';
	if (!file || !(f = fopen(file, "re")))
		return;
	for (int i = 0; i < CGROUP_SELF_LINES_MAX && fgets(line, sizeof(line), f); i++) {
		size_t len = strlen(line);
		int at_end = len > 0 && line[len - 1] == '\n';

		if (at_start && (at_end || feof(f)))
			parse_self_line(line, self);
		at_start = at_end;
	}
	fclose(f);
}

/* CPUs the cgroup quotas allow this process under <root>, 0 when none.
 * v2 first: a hybrid host also has a "0::" line, but no cpu.max under
 * <root>, so the walk finds nothing there and v1 is read. */
static int cgroup_limit(const char *root, const char *self_file)
{
	struct self_cgroup self;
	char mount[PATH_MAX];
	int cpus = 0;

	read_self(self_file, &self);
	if (walk_up(root, self.v2, v2_level, &cpus) == 0)
		return cpus;
	for (size_t i = 0; i < sizeof(v1_dirs) / sizeof(v1_dirs[0]); i++) {
		if ((size_t)snprintf(mount, sizeof(mount), "%s/%s", root, v1_dirs[i]) >= sizeof(mount))
			continue;
		if (walk_up(mount, self.v1_cpu, v1_level, &cpus) == 0)
			return cpus;
	}
	return 0;
}

int fg_cpu_count_at(const char *cgroup_root, const char *self_cgroup)
{
	int n = affinity_count();
	int limit = cgroup_root ? cgroup_limit(cgroup_root, self_cgroup) : 0;

	if (limit > 0 && limit < n)
		n = limit;
	return n > 0 ? n : 1;
}

int fg_cpu_count(void)
{
	return fg_cpu_count_at("/sys/fs/cgroup", "/proc/self/cgroup");
}
