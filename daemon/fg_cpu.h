/*
 * fg_cpu.h - how many CPUs this process may really use.
 *
 * feedguard runs one worker per CPU when workers is "auto".  In a container
 * the machine's CPU count is the wrong answer twice over: the affinity mask
 * may be narrower (cpuset), and a CFS quota (Kubernetes "limits.cpu") may
 * allow only part of the CPUs the mask shows.  Workers beyond the quota only
 * add context switches and throttling, so the count is lowered to the quota.
 */
#ifndef FG_CPU_H
#define FG_CPU_H

/*
 * fg_cpu_count - the CPUs this process may use: the number of CPUs in its
 * affinity mask (sched_getaffinity), lowered to ceil(quota / period) when
 * the cgroup has a CPU quota.  Reads cgroup v2 /sys/fs/cgroup/cpu.max, or
 * when that file is absent cgroup v1 /sys/fs/cgroup/cpu/cpu.cfs_quota_us and
 * cpu.cfs_period_us.  Only the cgroup mounted there is read, which is the
 * process's own in a container with a cgroup namespace (Docker,
 * Kubernetes); quotas set on parent cgroups are not seen.
 * Missing or unreadable files mean "no quota".  Never fails: the result is
 * always >= 1.  Reads files, so call it at startup, not on an event loop.
 * Any thread.
 */
int fg_cpu_count(void);

/*
 * fg_cpu_count_at - as fg_cpu_count, with the cgroup files looked up under
 * <cgroup_root> (a directory path, borrowed) instead of "/sys/fs/cgroup".
 * For tests.
 */
int fg_cpu_count_at(const char *cgroup_root);

#endif /* FG_CPU_H */
