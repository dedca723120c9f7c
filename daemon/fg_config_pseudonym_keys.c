/*
 * fg_config_pseudonym_keys.c - config section "pseudonym_keys": the key
 * ring for pseudonymous user keys (fg_keyring.h), newest first, each
 * {id, file}.  Reloadable: add a new key first and keep the old ones until
 * their state expires.
 */
#include "config.h"

#include <stdlib.h>

#include "fg_config-internal.h"
#include "fg_error.h"
#include "fg_keyring.h"

/* Room for fg_keyring's reasons, which quote the file's path. */
#define WHY_LEN 256

/* One {id, file}; the file is read now, so a missing or short key fails
 * the load with its position. */
static int parse_item(struct fg_config_loader *l, const struct fg_yaml_node *item)
{
	const struct fg_yaml_node *id, *file;
	char why[WHY_LEN], *path;
	int rc;

	if (item->kind != FG_YAML_MAP || item->nkids != 4 || !(id = fg_yaml_map_get(item, "id")) ||
	    !(file = fg_yaml_map_get(item, "file")) || id->kind != FG_YAML_SCALAR || file->kind != FG_YAML_SCALAR)
		return fg_config_fail(l, item, "pseudonym_keys: each entry is {id: NAME, file: PATH}");
	path = fg_yaml_path_resolve(l->basedir, file->text);
	if (!path)
		return fg_config_fail_nomem(l);
	rc = fg_keyring_add_file(l->cfg->keyring, id->text, path, why, sizeof(why));
	free(path);
	if (rc)
		return fg_config_fail(l, rc == FG_EIO ? file : id, "pseudonym_keys: %s", why);
	return 0;
}

static int parse_keys(struct fg_config_loader *l, const struct fg_yaml_node *key,
                      const struct fg_yaml_node *val)
{
	int rc;

	if (val->kind != FG_YAML_SEQ || val->nkids == 0)
		return fg_config_fail(l, val, "pseudonym_keys must be a list of {id, file}, newest first");
	l->cfg->keyring = calloc(1, sizeof(*l->cfg->keyring));
	if (!l->cfg->keyring)
		return fg_config_fail_nomem(l);
	for (size_t i = 0; i < val->nkids; i++)
		if ((rc = parse_item(l, val->kids[i])))
			return rc;
	return 0;
}

/* The secrets are wiped before their memory goes back. */
static void keys_release(struct fg_config *cfg)
{
	if (cfg->keyring) {
		fg_keyring_wipe(cfg->keyring);
		free(cfg->keyring);
		cfg->keyring = NULL;
	}
}

const struct fg_config_section fg_config_pseudonym_keys_section = {
	.name = "pseudonym_keys",
	.parse = parse_keys,
	.release = keys_release,
};
