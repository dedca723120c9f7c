/*
 * fg_cpu.h - how many CPUs this process may really use.
 *
 * feedguard runs one worker per CPU when workers is "auto".  In a container
 * the machine's CPU count is the wrong answer twice over: the affinity mask
 * may be narrower (cpuset), and a CFS quota (Kubernetes "limits.cpu") may
 * allow only part of the CPUs the mask shows.  Workers beyond the quota only
 * add context switches and throttling, so the count is lowered to the quota.
 * The same holds for a systemd unit's CPUQuota=, which is a quota on the
 * unit's cgroup.
 */
#ifndef FG_CPU_H
#define FG_CPU_H

/*
 * fg_cpu_count - the CPUs this process may use: the number of CPUs in its
 * affinity mask (sched_getaffinity), lowered to ceil(quota / period) of the
 * tightest CPU quota on this process's cgroup and its parents.  The cgroup
 * is the one /proc/self/cgroup names: for cgroup v2 the "0::<path>" line,
 * whose cpu.max is read in /sys/fs/cgroup/<path> and in each parent
 * directory up to /sys/fs/cgroup; when no level has a cpu.max (cgroup v1 or
 * a hybrid host), the path of the v1 line that lists the "cpu" controller,
 * with cpu.cfs_quota_us and cpu.cfs_period_us read the same way under
 * /sys/fs/cgroup/cpu, else /sys/fs/cgroup/cpu,cpuacct.  So a systemd unit's
 * CPUQuota=, a slice's, and a container's limit all count; inside a cgroup
 * namespace (Docker, Kubernetes) the path is "/" and the mount root is the
 * container's own cgroup.  At most 32 levels are read, nearest first.
 * Missing, unreadable or malformed files and lines mean "no quota" at that
 * level; a path with "." or ".." parts, or no usable line at all, means
 * only the mount root is read.  Never fails: the result is always >= 1.
 * Reads files, so call it at startup, not on an event loop.  Any thread.
 */
int fg_cpu_count(void);

/*
 * fg_cpu_count_at - as fg_cpu_count, with the cgroup files looked up under
 * <cgroup_root> (a directory path, borrowed) instead of "/sys/fs/cgroup",
 * and this process's cgroup paths read from <self_cgroup> (a file path in
 * the /proc/self/cgroup format, borrowed) instead of "/proc/self/cgroup".
 * A NULL <cgroup_root> reads no quota; a NULL or unreadable <self_cgroup>
 * reads only the mount roots.  For tests.
 */
int fg_cpu_count_at(const char *cgroup_root, const char *self_cgroup);

#endif /* FG_CPU_H */
