/*
 * fg_config_workers.c - config section "workers": how many worker threads,
 * "auto" (0 in struct fg_config: one per usable CPU) or a number.  Not
 * reloadable: the threads start once.
 */
#include "config.h"

#include <string.h>

#include "fg_config-internal.h"
#include "fg_error.h"

#define WORKERS_MIN 1
#define WORKERS_MAX 1024

static int parse_workers(struct fg_config_loader *l, const struct fg_yaml_node *key,
                         const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	int64_t v;
	int rc = fg_config_value_want(l, val, "auto or a number of threads");

	if (rc)
		return rc;
	if (strcmp(val->text, "auto") == 0) {
		l->cfg->workers = 0;
		return 0;
	}
	rc = fg_config_value_integer(val->text, &v);
	if (rc == FG_EINVAL)
		return fg_config_fail(l, val, "workers: '%s' is neither auto nor an integer",
		                      fg_yaml_show(val, buf, sizeof(buf)));
	if (rc || v < WORKERS_MIN || v > WORKERS_MAX)
		return fg_config_fail(l, val, "workers: '%s' is out of range (auto, or %lld to %lld)",
		                      fg_yaml_show(val, buf, sizeof(buf)), (long long)WORKERS_MIN,
		                      (long long)WORKERS_MAX);
	l->cfg->workers = (int)v;
	return 0;
}

static const char *workers_reload_fixed(const struct fg_config *cur, const struct fg_config *next)
{
	return cur->workers != next->workers ? "workers" : NULL;
}

/* The default, auto, is the zero of a new snapshot. */
const struct fg_config_section fg_config_workers_section = {
	.name = "workers",
	.parse = parse_workers,
	.reload_fixed = workers_reload_fixed,
};
