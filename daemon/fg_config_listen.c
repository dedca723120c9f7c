/*
 * fg_config_listen.c - config section "listen": the client-facing
 * addresses, one "host:port" or a list of them (struct fg_config's
 * <listen>).  Not reloadable: the sockets are bound once.
 */
#include "config.h"

#include <string.h>

#include "fg_config-internal.h"

#define DEFAULT_LISTEN "*:8080"

/* With SO_REUSEPORT a second bind to the same address succeeds and quietly
 * splits its connections, so a repeated listen address is refused here.
 * Port 0 is exempt: each bind gets a port of its own. */
static int check_unique(struct fg_config_loader *l, const struct fg_yaml_node *const *items)
{
	const struct fg_config *cfg = l->cfg;

	for (int i = 1; i < cfg->nlisten; i++) {
		for (int j = 0; j < i; j++) {
			if (fg_config_addr_port(&cfg->listen[i]) != 0 && cfg->listen[i].salen == cfg->listen[j].salen &&
			    memcmp(&cfg->listen[i].sa, &cfg->listen[j].sa, cfg->listen[i].salen) == 0)
				return fg_config_fail(l, items[i], "listen: '%s' is the same address as '%s' (%u:%u)",
				                      cfg->listen[i].text, cfg->listen[j].text, items[j]->line,
				                      items[j]->col);
		}
	}
	return 0;
}

static int parse_listen(struct fg_config_loader *l, const struct fg_yaml_node *key,
                        const struct fg_yaml_node *val)
{
	const struct fg_yaml_node *const *items = (const struct fg_yaml_node *const *)&val;
	size_t n = 1;
	int rc;

	if (val->kind == FG_YAML_MAP)
		return fg_config_fail(l, val, "listen must be a host:port string or a list of them, not a mapping");
	if (val->kind == FG_YAML_SEQ) {
		items = (const struct fg_yaml_node *const *)val->kids;
		n = val->nkids;
	}
	if (n == 0)
		return fg_config_fail(l, val, "listen needs at least one address");
	if (n > FG_CONFIG_MAX_LISTEN)
		return fg_config_fail(l, items[FG_CONFIG_MAX_LISTEN], "listen: more than %d addresses",
		                      FG_CONFIG_MAX_LISTEN);
	l->cfg->nlisten = 0;
	for (size_t i = 0; i < n; i++) {
		rc = fg_config_addr_read(l, items[i], FG_CONFIG_ADDR_F_NAMES | FG_CONFIG_ADDR_F_PORT0,
		                         &l->cfg->listen[i]);
		if (rc)
			return rc;
		l->cfg->nlisten++;
	}
	return check_unique(l, items);
}

static void listen_defaults(struct fg_config *cfg)
{
	/* a constant known to parse; a typo here fails every test */
	fg_config_addr_parse(DEFAULT_LISTEN, FG_CONFIG_ADDR_F_NAMES | FG_CONFIG_ADDR_F_PORT0, &cfg->listen[0]);
	cfg->nlisten = 1;
}

/* Compared as written, so "*:8080" to "0.0.0.0:8080" is a change. */
static const char *listen_reload_fixed(const struct fg_config *cur, const struct fg_config *next)
{
	int same = cur->nlisten == next->nlisten;

	for (int i = 0; same && i < cur->nlisten; i++)
		same = strcmp(cur->listen[i].text, next->listen[i].text) == 0;
	return same ? NULL : "listen";
}

const struct fg_config_section fg_config_listen_section = {
	.name = "listen",
	.parse = parse_listen,
	.defaults = listen_defaults,
	.reload_fixed = listen_reload_fixed,
};
