/*
 * fg_config_log.c - config section "log": the log level and where the
 * access log goes (struct fg_config's <log>).  Reloadable.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <strings.h>
#include <unistd.h>

#include "fg_config-internal.h"
#include "fg_file.h"

static int parse_level(struct fg_config_loader *l, const struct fg_config_key *k,
                       const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	static const char *const names[] = {
		[FG_LOG_DEBUG] = "debug", [FG_LOG_INFO] = "info",
		[FG_LOG_WARN] = "warn", [FG_LOG_ERROR] = "error",
	};
	char buf[FG_YAML_SHOWLEN];
	int rc = fg_config_value_want(l, val, "debug, info, warn or error");

	if (rc)
		return rc;
	for (size_t i = 0; i < FG_CONFIG_NELEM(names); i++) {
		if (strcmp(val->text, names[i]) == 0) {
			l->cfg->log.level = (enum fg_log_level)i;
			return 0;
		}
	}
	return fg_config_fail(l, val, "log.level: '%s' is not one of debug, info, warn, error",
	                      fg_yaml_show(val, buf, sizeof(buf)));
}

static const char *const yaml_bools[] = { "false", "true", "no", "yes", "on", "n", "y" };

/* Said at the key, at -t and at reload, rather than at start into the log
 * (the daemon then ran with no access log): <path> is opened for
 * appending, as the workers open it, which finds what permissions alone
 * do not (a directory that is missing, a file system that refuses it).  A
 * file that was not there is made and removed again: `feedguardd -t` run
 * by root must not leave a root-owned log the service user cannot open. */
static int check_writable(struct fg_config_loader *l, const struct fg_yaml_node *val, const char *path)
{
	char buf[FG_YAML_SHOWLEN];
	int fd = fg_file_open_append(path, 0, 0), made = 0;

	if (fd < 0 && errno == ENOENT) {
		fd = fg_file_open_append(path, O_CREAT | O_EXCL, 0640);
		made = fd >= 0;
		if (fd < 0 && errno == EEXIST)
			return 0;       /* made meanwhile, by the workers of a running daemon */
	}
	if (fd < 0)
		return fg_config_fail(l, val, "log.access_log: cannot open '%s' for appending: %s",
		                      fg_yaml_show(val, buf, sizeof(buf)),
		                      errno == EINVAL || errno == ENXIO ? "not a file or a device (a FIFO or a "
		                                                          "socket could stall the workers' writes)"
		                                                        : strerror(errno));
	close(fd);
	if (made)
		unlink(path);
	return 0;
}

/* "off", "-" (stderr) or a path, made absolute now: a reopen on SIGHUP
 * must find the same file whatever the daemon's directory. */
static int parse_access_log(struct fg_config_loader *l, const struct fg_config_key *k,
                            const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	int rc = fg_config_value_want(l, val, "off, - or a file path");

	if (rc)
		return rc;
	if (strcmp(val->text, "off") == 0)
		return 0;
	/* YAML's booleans: `access_log: false` made a file named "false" */
	for (size_t i = 0; i < sizeof(yaml_bools) / sizeof(yaml_bools[0]); i++)
		if (strcasecmp(val->text, yaml_bools[i]) == 0)
			return fg_config_fail(l, val, "log.access_log: '%s' is not off, - or a file path (for a file of "
			                      "that name, write ./%s)", fg_yaml_show(val, buf, sizeof(buf)), val->text);
	if (strcmp(val->text, "-") == 0)
		l->cfg->log.access_log = strdup("-");
	else
		l->cfg->log.access_log = fg_yaml_path_resolve(l->basedir, val->text);
	if (!l->cfg->log.access_log) {
		if (errno == ENOMEM)
			return fg_config_fail_nomem(l);
		return fg_config_fail(l, val, "log.access_log: cannot make '%s' absolute: %s",
		                      fg_yaml_show(val, buf, sizeof(buf)), strerror(errno));
	}
	if (!(l->flags & FG_CONFIG_LOAD_DAEMON) || strcmp(l->cfg->log.access_log, "-") == 0)
		return 0;
	return check_writable(l, val, l->cfg->log.access_log);
}

static const struct fg_config_key log_keys[] = {
	{ "level", parse_level, 0, 0, 0, NULL },
	{ "access_log", parse_access_log, 0, 0, 0, NULL },
};

/* access_log "off" is NULL, the zero of a new snapshot. */
static void log_defaults(struct fg_config *cfg)
{
	cfg->log.level = FG_LOG_INFO;
}

static void log_release(struct fg_config *cfg)
{
	free(cfg->log.access_log);
	cfg->log.access_log = NULL;
}

const struct fg_config_section fg_config_log_section = {
	.name = "log",
	.keys = log_keys,
	.nkeys = FG_CONFIG_NELEM(log_keys),
	.defaults = log_defaults,
	.release = log_release,
};
