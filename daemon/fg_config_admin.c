/*
 * fg_config_admin.c - config section "admin": where the admin endpoint
 * (health, readiness, metrics) listens, or "off" (struct fg_config's
 * <admin>).  Not reloadable: the socket is bound once.
 */
#include "config.h"

#include <string.h>

#include "fg_config-internal.h"

#define DEFAULT_ADMIN "127.0.0.1:9901"

/* Numeric hosts only; port 0 lets the kernel pick (the tests use it). */
static int parse_listen(struct fg_config_loader *l, const struct fg_config_key *k,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	int rc;

	if (val->kind == FG_YAML_SCALAR && strcmp(val->text, "off") == 0 && val->len == 3) {
		l->cfg->admin.enabled = 0;
		return 0;
	}
	rc = fg_config_addr_read(l, val, FG_CONFIG_ADDR_F_PORT0, &l->cfg->admin.listen);
	if (rc == 0)
		l->cfg->admin.enabled = 1;
	return rc;
}

static const struct fg_config_key admin_keys[] = {
	{ "listen", parse_listen, 0, 0, 0, NULL },
};

static void admin_defaults(struct fg_config *cfg)
{
	cfg->admin.enabled = 1;
	/* a constant known to parse; a typo here fails every test */
	fg_config_addr_parse(DEFAULT_ADMIN, 0, &cfg->admin.listen);
}

/* Compared as written, as listen is. */
static const char *admin_reload_fixed(const struct fg_config *cur, const struct fg_config *next)
{
	if (cur->admin.enabled != next->admin.enabled ||
	    (cur->admin.enabled && strcmp(cur->admin.listen.text, next->admin.listen.text) != 0))
		return "admin.listen";
	return NULL;
}

const struct fg_config_section fg_config_admin_section = {
	.name = "admin",
	.keys = admin_keys,
	.nkeys = FG_CONFIG_NELEM(admin_keys),
	.defaults = admin_defaults,
	.reload_fixed = admin_reload_fixed,
};
