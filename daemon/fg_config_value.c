/*
 * fg_config_value.c - the scalar values config sections share: integers,
 * durations and sizes, each checked against the range its key declares
 * (struct fg_config_key) and stored in the snapshot field the key names.
 *
 * Every message names the key in its dotted form and quotes the value as
 * written (fg_yaml_show), with the range in the value's own unit.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fg_config-internal.h"
#include "fg_error.h"
#include "fg_units.h"

/* Room for any duration or size fg_units formats. */
#define UNIT_TEXT_LEN 32

static void *field_of(struct fg_config_loader *l, const struct fg_config_key *k)
{
	return (char *)l->cfg + k->off;
}

int fg_config_value_want(struct fg_config_loader *l, const struct fg_yaml_node *val, const char *what)
{
	if (val->kind != FG_YAML_SCALAR)
		return fg_config_fail(l, val, "%s must be %s, not %s", l->key, what, fg_yaml_kind_name(val));
	if (val->len == 0)
		return fg_config_fail(l, val, "%s needs a value (%s)", l->key, what);
	if (strlen(val->text) != val->len)
		return fg_config_fail(l, val, "%s must not contain a NUL byte", l->key);
	return 0;
}

int fg_config_value_integer(const char *s, int64_t *out)
{
	const char *digits = s[0] == '-' ? s + 1 : s;
	char *end;
	long long v;

	if (*digits < '0' || *digits > '9')
		return FG_EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end != '\0')
		return FG_EINVAL;
	if (errno == ERANGE)
		return FG_ETOOBIG;
	*out = v;
	return 0;
}

static int get_integer(struct fg_config_loader *l, const struct fg_config_key *k,
                       const struct fg_yaml_node *val, int64_t *out)
{
	char buf[FG_YAML_SHOWLEN];
	int rc = fg_config_value_want(l, val, "an integer");

	if (rc)
		return rc;
	rc = fg_config_value_integer(val->text, out);
	if (rc == FG_EINVAL)
		return fg_config_fail(l, val, "%s: '%s' is not an integer", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)));
	if (rc || *out < k->min || *out > k->max)
		return fg_config_fail(l, val, "%s: '%s' is out of range (%lld to %lld)", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)), (long long)k->min, (long long)k->max);
	return 0;
}

int fg_config_value_int(struct fg_config_loader *l, const struct fg_config_key *k,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	int64_t v;
	int rc = get_integer(l, k, val, &v);

	if (rc == 0)
		*(int *)field_of(l, k) = (int)v;
	return rc;
}

int fg_config_value_u32(struct fg_config_loader *l, const struct fg_config_key *k,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	int64_t v;
	int rc = get_integer(l, k, val, &v);

	if (rc == 0)
		*(uint32_t *)field_of(l, k) = (uint32_t)v;
	return rc;
}

int fg_config_value_duration(struct fg_config_loader *l, const struct fg_config_key *k,
                             const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN], lo[UNIT_TEXT_LEN], hi[UNIT_TEXT_LEN];
	const char *why;
	int64_t us;
	int rc = fg_config_value_want(l, val, "a duration such as 5s");

	if (rc)
		return rc;
	rc = fg_units_parse_duration(val->text, &us, &why);
	if (rc == FG_EINVAL)
		return fg_config_fail(l, val, "%s: '%s' is not a duration: %s", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)), why);
	if (rc || us < k->min || us > k->max)
		return fg_config_fail(l, val, "%s: '%s' is out of range (%s to %s%s%s)", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)),
		                      fg_units_format_duration(k->min, lo, sizeof(lo)),
		                      fg_units_format_duration(k->max, hi, sizeof(hi)),
		                      k->note ? "; " : "", k->note ? k->note : "");
	*(int64_t *)field_of(l, k) = us;
	return 0;
}

static int get_size(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *val,
                    uint64_t *out)
{
	char buf[FG_YAML_SHOWLEN], lo[UNIT_TEXT_LEN], hi[UNIT_TEXT_LEN];
	const char *why;
	int rc = fg_config_value_want(l, val, "a size such as 64KiB");

	if (rc)
		return rc;
	rc = fg_units_parse_size(val->text, out, &why);
	if (rc == FG_EINVAL)
		return fg_config_fail(l, val, "%s: '%s' is not a size: %s", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)), why);
	if (rc || *out < (uint64_t)k->min || *out > (uint64_t)k->max)
		return fg_config_fail(l, val, "%s: '%s' is out of range (%s to %s%s%s)", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)),
		                      fg_units_format_size((uint64_t)k->min, lo, sizeof(lo)),
		                      fg_units_format_size((uint64_t)k->max, hi, sizeof(hi)),
		                      k->note ? "; " : "", k->note ? k->note : "");
	return 0;
}

int fg_config_value_size32(struct fg_config_loader *l, const struct fg_config_key *k,
                           const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	uint64_t v;
	int rc = get_size(l, k, val, &v);

	if (rc == 0)
		*(uint32_t *)field_of(l, k) = (uint32_t)v;
	return rc;
}

int fg_config_value_size64(struct fg_config_loader *l, const struct fg_config_key *k,
                           const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	uint64_t v;
	int rc = get_size(l, k, val, &v);

	if (rc == 0)
		*(uint64_t *)field_of(l, k) = v;
	return rc;
}

