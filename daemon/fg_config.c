/*
 * fg_config.c - a YAML file turned into an immutable fg_config snapshot.
 *
 * Two passes.  First fg_yaml reads the file into a small tree of nodes that
 * keep their positions (within this file's size, depth and node limits);
 * then one table of keys per section walks the tree and fills the snapshot.
 * This file holds only the schema: the keys, their value parsers and the
 * cross-key checks.
 *
 * This parser reads operator files and is fuzzed: every input must end in
 * a snapshot or a message, never a crash or a leak, so every value is
 * checked for type, syntax and range.
 */
#include "config.h"

#include "fg_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_cpu.h"
#include "fg_error.h"
#include "fg_keyring.h"
#include "fg_policy_compile.h"
#include "fg_units.h"
#include "fg_yaml.h"

/* A config is a page of text; anything larger is a mistake or an attack. */
#define CONFIG_MAX_BYTES (1 << 20)
/* The schema nests three deep (root, section, value); allow some slack for
 * a misplaced block so the error is about the key, not the depth. */
#define CONFIG_MAX_DEPTH 16
/* Bounds the tree's memory whatever the input. */
#define CONFIG_MAX_NODES 10000
/* Keys per section, the size of the duplicate-key table. */
#define SECTION_MAX_KEYS 16

#define USEC_PER_MS 1000LL
#define USEC_PER_SEC 1000000LL
#define USEC_PER_MIN (60 * USEC_PER_SEC)
#define USEC_PER_HOUR (60 * USEC_PER_MIN)
#define KIB 1024LL
#define MIB (1024 * KIB)

/* RFC 9113 section 6.9.1: a flow-control window never exceeds 2^31-1, and
 * section 6.9.2: every window starts at 65535, so a smaller one is useless. */
#define H2_MAX_WINDOW 2147483647LL
#define H2_INITIAL_WINDOW 65535LL
/* gRPC's message prefix carries a 32-bit length. */
#define GRPC_MAX_MESSAGE 4294967295LL
#define MAX_PORT 65535

#define DEFAULT_LISTEN "*:8080"
#define DEFAULT_ADMIN "127.0.0.1:9901"

/* Flags for parse_addr(): what a given kind of address may be. */
#define ADDR_F_NAMES 0x1        /* "*" and "localhost" as hosts */
#define ADDR_F_PORT0 0x2        /* port 0: the kernel picks one */

static const struct fg_yaml_limits config_limits = {
	.max_bytes = CONFIG_MAX_BYTES,
	.max_depth = CONFIG_MAX_DEPTH,
	.max_nodes = CONFIG_MAX_NODES,
};

/* Where errors about the file as a whole point, as editors count. */
static const struct fg_yaml_node file_start = { .kind = FG_YAML_MAP, .line = 1, .col = 1 };

struct load_ctx {
	const char *name;           /* file name in messages */
	char *basedir;              /* absolute; relative paths in values start here */
	char *err;                  /* caller's message buffer, may be NULL */
	size_t errlen;
	struct fg_config *cfg;      /* the snapshot being filled */
	unsigned policy_line, policy_col;  /* where the policy key's value is, for load errors */
	char key[64];               /* dotted name of the key being parsed */
};

struct key_spec;

struct section_spec {
	const char *name;           /* prefix of its keys in messages; NULL at the top */
	const struct key_spec *keys;
	size_t nkeys;
	/* cross-key checks once the section is read; <seen> holds each key's
	 * node or NULL, indexed like <keys>; <where> is the section's key */
	int (*check)(struct load_ctx *c, const struct fg_yaml_node *where,
	             const struct fg_yaml_node *const *seen);
};

struct key_spec {
	const char *name;
	int (*parse)(struct load_ctx *c, const struct key_spec *k, const struct fg_yaml_node *key,
	             const struct fg_yaml_node *val);
	size_t off;                 /* the field in struct fg_config */
	int64_t min, max;           /* allowed values, in the field's unit */
	const char *note;           /* the reason for the range, for messages */
	const struct section_spec *sub;
};

#define CFG_OFF(field) offsetof(struct fg_config, field)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* --- messages -------------------------------------------------------- */

/* Report an error at <at>'s position; returns FG_ECONFIG. */
__attribute__((format(printf, 3, 4)))
static int fail(struct load_ctx *c, const struct fg_yaml_node *at, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = fg_yaml_vfail(c->err, c->errlen, c->name, at, fmt, ap);
	va_end(ap);
	return rc;
}

static int fail_nomem(struct load_ctx *c)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: out of memory", c->name);
	return FG_ENOMEM;
}

/* --- values ------------------------------------------------------------ */

static void *field_of(struct load_ctx *c, const struct key_spec *k)
{
	return (char *)c->cfg + k->off;
}

/* <val> must be a non-empty scalar without NUL bytes; <what> names what
 * was wanted, for the message. */
static int want_scalar(struct load_ctx *c, const struct fg_yaml_node *val, const char *what)
{
	if (val->kind != FG_YAML_SCALAR)
		return fail(c, val, "%s must be %s, not %s", c->key, what, fg_yaml_kind_name(val));
	if (val->len == 0)
		return fail(c, val, "%s needs a value (%s)", c->key, what);
	if (strlen(val->text) != val->len)
		return fail(c, val, "%s must not contain a NUL byte", c->key);
	return 0;
}

/* Decimal integer with an optional '-', nothing else. */
static int parse_integer(const char *s, int64_t *out)
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

static int get_integer(struct load_ctx *c, const struct key_spec *k, const struct fg_yaml_node *val,
                       int64_t *out)
{
	char buf[FG_YAML_SHOWLEN];
	int rc = want_scalar(c, val, "an integer");

	if (rc)
		return rc;
	rc = parse_integer(val->text, out);
	if (rc == FG_EINVAL)
		return fail(c, val, "%s: '%s' is not an integer", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)));
	if (rc || *out < k->min || *out > k->max)
		return fail(c, val, "%s: '%s' is out of range (%lld to %lld)", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)), (long long)k->min, (long long)k->max);
	return 0;
}

static int parse_int_key(struct load_ctx *c, const struct key_spec *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	int64_t v;
	int rc = get_integer(c, k, val, &v);

	if (rc == 0)
		*(int *)field_of(c, k) = (int)v;
	return rc;
}

static int parse_u32_key(struct load_ctx *c, const struct key_spec *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	int64_t v;
	int rc = get_integer(c, k, val, &v);

	if (rc == 0)
		*(uint32_t *)field_of(c, k) = (uint32_t)v;
	return rc;
}

static int parse_duration_key(struct load_ctx *c, const struct key_spec *k,
                              const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN], lo[24], hi[24];
	const char *why;
	int64_t us;
	int rc = want_scalar(c, val, "a duration such as 5s");

	if (rc)
		return rc;
	rc = fg_units_parse_duration(val->text, &us, &why);
	if (rc == FG_EINVAL)
		return fail(c, val, "%s: '%s' is not a duration: %s", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)), why);
	if (rc || us < k->min || us > k->max)
		return fail(c, val, "%s: '%s' is out of range (%s to %s%s%s)", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)),
		            fg_units_format_duration(k->min, lo, sizeof(lo)),
		            fg_units_format_duration(k->max, hi, sizeof(hi)),
		            k->note ? "; " : "", k->note ? k->note : "");
	*(int64_t *)field_of(c, k) = us;
	return 0;
}

static int get_size(struct load_ctx *c, const struct key_spec *k, const struct fg_yaml_node *val,
                    uint64_t *out)
{
	char buf[FG_YAML_SHOWLEN], lo[32], hi[32];
	const char *why;
	int rc = want_scalar(c, val, "a size such as 64KiB");

	if (rc)
		return rc;
	rc = fg_units_parse_size(val->text, out, &why);
	if (rc == FG_EINVAL)
		return fail(c, val, "%s: '%s' is not a size: %s", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)), why);
	if (rc || *out < (uint64_t)k->min || *out > (uint64_t)k->max)
		return fail(c, val, "%s: '%s' is out of range (%s to %s%s%s)", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)), fg_units_format_size((uint64_t)k->min, lo, sizeof(lo)),
		            fg_units_format_size((uint64_t)k->max, hi, sizeof(hi)),
		            k->note ? "; " : "", k->note ? k->note : "");
	return 0;
}

static int parse_size32_key(struct load_ctx *c, const struct key_spec *k,
                            const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	uint64_t v;
	int rc = get_size(c, k, val, &v);

	if (rc == 0)
		*(uint32_t *)field_of(c, k) = (uint32_t)v;
	return rc;
}

static int parse_size64_key(struct load_ctx *c, const struct key_spec *k,
                            const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	uint64_t v;
	int rc = get_size(c, k, val, &v);

	if (rc == 0)
		*(uint64_t *)field_of(c, k) = v;
	return rc;
}

static int parse_workers(struct load_ctx *c, const struct key_spec *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	int64_t v;
	int rc = want_scalar(c, val, "auto or a number of threads");

	if (rc)
		return rc;
	if (strcmp(val->text, "auto") == 0) {
		c->cfg->workers = 0;
		return 0;
	}
	rc = parse_integer(val->text, &v);
	if (rc == FG_EINVAL)
		return fail(c, val, "workers: '%s' is neither auto nor an integer",
		            fg_yaml_show(val, buf, sizeof(buf)));
	if (rc || v < k->min || v > k->max)
		return fail(c, val, "workers: '%s' is out of range (auto, or %lld to %lld)",
		            fg_yaml_show(val, buf, sizeof(buf)), (long long)k->min, (long long)k->max);
	c->cfg->workers = (int)v;
	return 0;
}

static int parse_log_level(struct load_ctx *c, const struct key_spec *k,
                           const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	static const char *const names[] = {
		[FG_LOG_DEBUG] = "debug", [FG_LOG_INFO] = "info",
		[FG_LOG_WARN] = "warn", [FG_LOG_ERROR] = "error",
	};
	char buf[FG_YAML_SHOWLEN];
	int rc = want_scalar(c, val, "debug, info, warn or error");

	if (rc)
		return rc;
	for (size_t i = 0; i < NELEM(names); i++) {
		if (strcmp(val->text, names[i]) == 0) {
			c->cfg->log.level = (enum fg_log_level)i;
			return 0;
		}
	}
	return fail(c, val, "log.level: '%s' is not one of debug, info, warn, error",
	            fg_yaml_show(val, buf, sizeof(buf)));
}

static int parse_access_log(struct load_ctx *c, const struct key_spec *k,
                            const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	int rc = want_scalar(c, val, "off, - or a file path");

	if (rc)
		return rc;
	if (strcmp(val->text, "off") == 0)
		return 0;
	if (strcmp(val->text, "-") == 0)
		c->cfg->log.access_log = strdup("-");
	else
		c->cfg->log.access_log = fg_yaml_path_resolve(c->basedir, val->text);
	if (c->cfg->log.access_log)
		return 0;
	if (errno == ENOMEM)
		return fail_nomem(c);
	return fail(c, val, "log.access_log: cannot make '%s' absolute: %s",
	            fg_yaml_show(val, buf, sizeof(buf)), strerror(errno));
}

/* --- addresses ---------------------------------------------------------- */

/* "0".."65535" (or from 1 without ADDR_F_PORT0) into <*port>. */
static const char *parse_port(const char *s, unsigned flags, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = 0;

	for (; s[n] >= '0' && s[n] <= '9' && n < 6; n++)
		v = v * 10 + (unsigned long)(s[n] - '0');
	if (n == 0 || s[n] != '\0' || v > MAX_PORT)
		return flags & ADDR_F_PORT0 ? "the port must be a number from 0 to 65535"
		                            : "the port must be a number from 1 to 65535";
	if (v == 0 && !(flags & ADDR_F_PORT0))
		return "port 0 is not allowed here";
	*port = (uint16_t)v;
	return NULL;
}

static const char *fill_v6(const char *host, uint16_t port, struct fg_config_addr *out)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;

	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
		return "not a numeric IPv6 address";
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	out->salen = sizeof(*sin6);
	return NULL;
}

/* "*" (all IPv4 addresses) and "localhost" are the only names, and only
 * where <flags> allow them: a blocking resolver has no place in a worker. */
static const char *fill_v4(const char *host, unsigned flags, uint16_t port, struct fg_config_addr *out)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;

	if ((flags & ADDR_F_NAMES) && strcmp(host, "*") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if ((flags & ADDR_F_NAMES) && strcmp(host, "localhost") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return flags & ADDR_F_NAMES
		       ? "the host must be a numeric IP address, * or localhost (names are never resolved)"
		       : "the host must be a numeric IP address (names are never resolved)";
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	out->salen = sizeof(*sin);
	return NULL;
}

/* Split "host:port" or "[v6]:port" in <s> (modified in place). */
static const char *split_hostport(char *s, char **host, char **port, int *v6)
{
	char *colon;

	*v6 = s[0] == '[';
	if (*v6) {
		char *bracket = strchr(s, ']');

		if (!bracket)
			return "missing ']' after the IPv6 address";
		if (bracket[1] != ':')
			return "missing :port after ']'";
		*bracket = '\0';
		*host = s + 1;
		*port = bracket + 2;
		return NULL;
	}
	colon = strrchr(s, ':');
	if (!colon)
		return "missing :port";
	*colon = '\0';
	if (strchr(s, ':'))
		return "an IPv6 address needs brackets, as in [::1]:8080";
	if (s[0] == '\0')
		return "missing host before ':' (use *:PORT for all addresses)";
	*host = s;
	*port = colon + 1;
	return NULL;
}

/* Resolve "host:port" <text> into <out>; NULL on success, else why not. */
static const char *parse_addr(const char *text, unsigned flags, struct fg_config_addr *out)
{
	char copy[sizeof(out->text)], *host, *port;
	const char *why;
	uint16_t portnum;
	int v6;

	if (strlen(text) >= sizeof(out->text))
		return "too long for an address";
	memcpy(copy, text, strlen(text) + 1);
	memset(out, 0, sizeof(*out));
	why = split_hostport(copy, &host, &port, &v6);
	if (!why)
		why = parse_port(port, flags, &portnum);
	if (!why)
		why = v6 ? fill_v6(host, portnum, out) : fill_v4(host, flags, portnum, out);
	if (!why)
		memcpy(out->text, text, strlen(text) + 1);
	return why;
}

static int get_addr(struct load_ctx *c, const struct fg_yaml_node *val, unsigned flags,
                    struct fg_config_addr *out)
{
	char buf[FG_YAML_SHOWLEN];
	const char *why;
	int rc = want_scalar(c, val, "a host:port string");

	if (rc)
		return rc;
	why = parse_addr(val->text, flags, out);
	if (why)
		return fail(c, val, "%s: '%s' is not a usable host:port: %s", c->key,
		            fg_yaml_show(val, buf, sizeof(buf)), why);
	return 0;
}

static int sockaddr_port(const struct fg_config_addr *a)
{
	if (a->sa.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

/* With SO_REUSEPORT a second bind to the same address succeeds and quietly
 * splits its connections, so a repeated listen address is refused here.
 * Port 0 is exempt: each bind gets a port of its own. */
static int check_listen_unique(struct load_ctx *c, const struct fg_yaml_node *const *items)
{
	const struct fg_config *cfg = c->cfg;

	for (int i = 1; i < cfg->nlisten; i++) {
		for (int j = 0; j < i; j++) {
			if (sockaddr_port(&cfg->listen[i]) != 0 && cfg->listen[i].salen == cfg->listen[j].salen &&
			    memcmp(&cfg->listen[i].sa, &cfg->listen[j].sa, cfg->listen[i].salen) == 0)
				return fail(c, items[i], "listen: '%s' is the same address as '%s' (%u:%u)",
				            cfg->listen[i].text, cfg->listen[j].text, items[j]->line, items[j]->col);
		}
	}
	return 0;
}

static int parse_listen(struct load_ctx *c, const struct key_spec *k,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	const struct fg_yaml_node *const *items = (const struct fg_yaml_node *const *)&val;
	size_t n = 1;
	int rc;

	if (val->kind == FG_YAML_MAP)
		return fail(c, val, "listen must be a host:port string or a list of them, not a mapping");
	if (val->kind == FG_YAML_SEQ) {
		items = (const struct fg_yaml_node *const *)val->kids;
		n = val->nkids;
	}
	if (n == 0)
		return fail(c, val, "listen needs at least one address");
	if (n > FG_CONFIG_MAX_LISTEN)
		return fail(c, items[FG_CONFIG_MAX_LISTEN], "listen: more than %d addresses",
		            FG_CONFIG_MAX_LISTEN);
	c->cfg->nlisten = 0;
	for (size_t i = 0; i < n; i++) {
		rc = get_addr(c, items[i], ADDR_F_NAMES | ADDR_F_PORT0, &c->cfg->listen[i]);
		if (rc)
			return rc;
		c->cfg->nlisten++;
	}
	return check_listen_unique(c, items);
}

static int parse_upstream_addr(struct load_ctx *c, const struct key_spec *k,
                               const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	return get_addr(c, val, 0, &c->cfg->upstream.addr);
}

static int parse_admin_listen(struct load_ctx *c, const struct key_spec *k,
                              const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	int rc;

	if (val->kind == FG_YAML_SCALAR && strcmp(val->text, "off") == 0 && val->len == 3) {
		c->cfg->admin.enabled = 0;
		return 0;
	}
	rc = get_addr(c, val, ADDR_F_PORT0, &c->cfg->admin.listen);
	if (rc == 0)
		c->cfg->admin.enabled = 1;
	return rc;
}

/* --- metrics.methods ---------------------------------------------------- */

/* Characters of a protobuf package-qualified service name, and of a method
 * name.  Only what gRPC itself puts in :path is accepted: the value is
 * matched byte for byte and printed into Prometheus label values, where a
 * quote or backslash would need escaping. */
#define SERVICE_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."
#define METHOD_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

/* 1 if <s> is "/<service>/<method>" (gRPC PROTOCOL-HTTP2.md, Path). */
static int method_path_ok(const char *s)
{
	size_t n;

	if (*s++ != '/')
		return 0;
	n = strspn(s, SERVICE_CHARS);
	if (n == 0 || s[n] != '/')
		return 0;
	s += n + 1;
	n = strspn(s, METHOD_CHARS);
	return n > 0 && s[n] == '\0';
}

/* Check item <i> of <items> and append it to metrics.methods. */
static int add_method(struct load_ctx *c, const struct fg_yaml_node *const *items, size_t i)
{
	struct fg_config *cfg = c->cfg;
	const struct fg_yaml_node *val = items[i];
	char buf[FG_YAML_SHOWLEN];
	int rc = want_scalar(c, val, "a method path such as /pkg.Service/Method");

	if (rc)
		return rc;
	if (!method_path_ok(val->text))
		return fail(c, val, "metrics.methods: '%s' is not a gRPC method path "
		            "(/package.Service/Method)", fg_yaml_show(val, buf, sizeof(buf)));
	for (size_t j = 0; j < i; j++)
		if (strcmp(items[j]->text, val->text) == 0)
			return fail(c, val, "metrics.methods: '%s' is listed twice (first at %u:%u)",
			            fg_yaml_show(val, buf, sizeof(buf)), items[j]->line, items[j]->col);
	cfg->metrics.methods[cfg->metrics.nmethods] = strdup(val->text);
	if (!cfg->metrics.methods[cfg->metrics.nmethods])
		return fail_nomem(c);
	cfg->metrics.nmethods++;
	return 0;
}

static int parse_methods(struct load_ctx *c, const struct key_spec *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	const struct fg_yaml_node *const *items = (const struct fg_yaml_node *const *)val->kids;
	int rc;

	if (val->kind != FG_YAML_SEQ)
		return fail(c, val, "metrics.methods must be a list of method paths, not %s",
		            fg_yaml_kind_name(val));
	if (val->nkids > FG_CONFIG_MAX_METHODS)
		return fail(c, items[FG_CONFIG_MAX_METHODS], "metrics.methods: more than %d methods",
		            FG_CONFIG_MAX_METHODS);
	for (size_t i = 0; i < val->nkids; i++) {
		rc = add_method(c, items, i);
		if (rc)
			return rc;
	}
	return 0;
}

/* --- sections ----------------------------------------------------------- */

static int walk_map(struct load_ctx *c, const struct section_spec *s,
                    const struct fg_yaml_node *map, const struct fg_yaml_node *where);

static int parse_section(struct load_ctx *c, const struct key_spec *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	if (val->kind != FG_YAML_MAP)
		return fail(c, val, "%s must be a mapping of keys, not %s", k->name,
		            fg_yaml_kind_name(val));
	return walk_map(c, k->sub, val, key);
}

static int find_key(const struct section_spec *s, const struct fg_yaml_node *key)
{
	for (size_t i = 0; i < s->nkeys; i++)
		if (strlen(s->keys[i].name) == key->len && memcmp(s->keys[i].name, key->text, key->len) == 0)
			return (int)i;
	return -1;
}

static int fail_unknown(struct load_ctx *c, const struct section_spec *s,
                        const struct fg_yaml_node *key)
{
	char list[256], buf[FG_YAML_SHOWLEN];
	size_t n = 0;

	list[0] = '\0';
	for (size_t i = 0; i < s->nkeys && n < sizeof(list); i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", s->keys[i].name);
	if (s->name)
		return fail(c, key, "unknown key '%s' in %s; valid keys: %s",
		            fg_yaml_show(key, buf, sizeof(buf)), s->name, list);
	return fail(c, key, "unknown key '%s'; valid keys: %s", fg_yaml_show(key, buf, sizeof(buf)), list);
}

static void set_key_name(struct load_ctx *c, const struct section_spec *s, const struct key_spec *k)
{
	if (s->name)
		snprintf(c->key, sizeof(c->key), "%s.%s", s->name, k->name);
	else
		snprintf(c->key, sizeof(c->key), "%s", k->name);
}

/* Fill the fields of section <s> from <map>; <where> is the node that
 * "required" errors point at. */
static int walk_map(struct load_ctx *c, const struct section_spec *s,
                    const struct fg_yaml_node *map, const struct fg_yaml_node *where)
{
	const struct fg_yaml_node *seen[SECTION_MAX_KEYS] = { NULL };
	int rc;

	for (size_t i = 0; i + 1 < map->nkids; i += 2) {
		const struct fg_yaml_node *key = map->kids[i], *val = map->kids[i + 1];
		int idx = find_key(s, key);

		if (idx < 0)
			return fail_unknown(c, s, key);
		set_key_name(c, s, &s->keys[idx]);
		if (seen[idx])
			return fail(c, key, "duplicate key '%s' (first at %u:%u)", c->key,
			            seen[idx]->line, seen[idx]->col);
		seen[idx] = key;
		rc = s->keys[idx].parse(c, &s->keys[idx], key, val);
		if (rc)
			return rc;
	}
	return s->check ? s->check(c, where, seen) : 0;
}

/* --- the schema --------------------------------------------------------- */

enum { UP_ADDRESS, UP_CONNECT_TIMEOUT, UP_MAX_CONNECTIONS, UP_MAX_PENDING, UP_KEEPALIVE_TIME,
       UP_KEEPALIVE_TIMEOUT, UP_BACKOFF_INITIAL, UP_BACKOFF_MAX, UP_NKEYS };

static const struct key_spec upstream_keys[] = {
	[UP_ADDRESS] = { "address", parse_upstream_addr, 0, 0, 0, NULL, NULL },
	[UP_CONNECT_TIMEOUT] = { "connect_timeout", parse_duration_key,
		CFG_OFF(upstream.connect_timeout_us), USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	[UP_MAX_CONNECTIONS] = { "max_connections", parse_int_key,
		CFG_OFF(upstream.max_connections), 1, 1024, NULL, NULL },
	[UP_MAX_PENDING] = { "max_pending", parse_int_key,
		CFG_OFF(upstream.max_pending), 0, 1000000, NULL, NULL },
	[UP_KEEPALIVE_TIME] = { "keepalive_time", parse_duration_key,
		CFG_OFF(upstream.keepalive_time_us), 10 * USEC_PER_SEC, 24 * USEC_PER_HOUR,
		"gRPC clients never ping more often than every 10s", NULL },
	[UP_KEEPALIVE_TIMEOUT] = { "keepalive_timeout", parse_duration_key,
		CFG_OFF(upstream.keepalive_timeout_us), USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	[UP_BACKOFF_INITIAL] = { "backoff_initial", parse_duration_key,
		CFG_OFF(upstream.backoff_initial_us), USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	[UP_BACKOFF_MAX] = { "backoff_max", parse_duration_key,
		CFG_OFF(upstream.backoff_max_us), USEC_PER_MS, 24 * USEC_PER_HOUR, NULL, NULL },
};

enum { LIM_MAX_CONCURRENT_STREAMS, LIM_MAX_HEADER_LIST_SIZE, LIM_MAX_MESSAGE_SIZE,
       LIM_STREAM_WINDOW, LIM_CONNECTION_WINDOW, LIM_MAX_CONNECTIONS, LIM_NKEYS };

static const struct key_spec limits_keys[] = {
	[LIM_MAX_CONCURRENT_STREAMS] = { "max_concurrent_streams", parse_u32_key,
		CFG_OFF(limits.max_concurrent_streams), 1, INT32_MAX, NULL, NULL },
	[LIM_MAX_HEADER_LIST_SIZE] = { "max_header_list_size", parse_size32_key,
		CFG_OFF(limits.max_header_list_size), KIB, UINT32_MAX, NULL, NULL },
	[LIM_MAX_MESSAGE_SIZE] = { "max_message_size", parse_size64_key,
		CFG_OFF(limits.max_message_size), 1, GRPC_MAX_MESSAGE,
		"the gRPC length prefix is 32 bits", NULL },
	[LIM_STREAM_WINDOW] = { "stream_window", parse_size32_key,
		CFG_OFF(limits.stream_window), H2_INITIAL_WINDOW, H2_MAX_WINDOW,
		"RFC 9113 section 6.9.1", NULL },
	[LIM_CONNECTION_WINDOW] = { "connection_window", parse_size32_key,
		CFG_OFF(limits.connection_window), H2_INITIAL_WINDOW, H2_MAX_WINDOW,
		"RFC 9113 section 6.9.1", NULL },
	[LIM_MAX_CONNECTIONS] = { "max_connections", parse_int_key,
		CFG_OFF(limits.max_connections), 1, INT_MAX, NULL, NULL },
};

static const struct key_spec timeouts_keys[] = {
	{ "idle", parse_duration_key, CFG_OFF(timeouts.idle_us),
	  USEC_PER_SEC, 24 * USEC_PER_HOUR, NULL, NULL },
	{ "drain", parse_duration_key, CFG_OFF(timeouts.drain_us),
	  0, USEC_PER_HOUR, NULL, NULL },
	{ "readiness_delay", parse_duration_key, CFG_OFF(timeouts.readiness_delay_us),
	  0, USEC_PER_HOUR, NULL, NULL },
	{ "write", parse_duration_key, CFG_OFF(timeouts.write_us),
	  10 * USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	{ "stalled_stream", parse_duration_key, CFG_OFF(timeouts.stalled_stream_us),
	  10 * USEC_PER_MS, 24 * USEC_PER_HOUR, NULL, NULL },
};

static const struct key_spec admin_keys[] = {
	{ "listen", parse_admin_listen, 0, 0, 0, NULL, NULL },
};

static const struct key_spec metrics_keys[] = {
	{ "methods", parse_methods, 0, 0, 0, NULL, NULL },
};

static const struct key_spec log_keys[] = {
	{ "level", parse_log_level, 0, 0, 0, NULL, NULL },
	{ "access_log", parse_access_log, 0, 0, 0, NULL, NULL },
};

static int check_upstream(struct load_ctx *c, const struct fg_yaml_node *where,
                          const struct fg_yaml_node *const *seen);
/* policy: a path; compiled after the whole file is read (see load()),
 * when the worker count its counters need is known. */
static int parse_policy(struct load_ctx *c, const struct key_spec *k, const struct fg_yaml_node *key,
                        const struct fg_yaml_node *val)
{
	int rc = want_scalar(c, val, "the path of a policy file");

	if (rc)
		return rc;
	c->policy_line = val->line;
	c->policy_col = val->col;
	c->cfg->policy_path = fg_yaml_path_resolve(c->basedir, val->text);
	return c->cfg->policy_path ? 0 : fail_nomem(c);
}

/* pseudonym_keys: a list of {id, file}, newest first; each file is read now,
 * so a missing or short key fails the load with its position. */
static int parse_key_item(struct load_ctx *c, const struct fg_yaml_node *item)
{
	const struct fg_yaml_node *id, *file;
	char why[256], *path;
	int rc;

	if (item->kind != FG_YAML_MAP || item->nkids != 4 || !(id = fg_yaml_map_get(item, "id")) ||
	    !(file = fg_yaml_map_get(item, "file")) || id->kind != FG_YAML_SCALAR || file->kind != FG_YAML_SCALAR)
		return fail(c, item, "pseudonym_keys: each entry is {id: NAME, file: PATH}");
	path = fg_yaml_path_resolve(c->basedir, file->text);
	if (!path)
		return fail_nomem(c);
	rc = fg_keyring_add_file(c->cfg->keyring, id->text, path, why, sizeof(why));
	free(path);
	if (rc)
		return fail(c, rc == FG_EIO ? file : id, "pseudonym_keys: %s", why);
	return 0;
}

static int parse_keys(struct load_ctx *c, const struct key_spec *k, const struct fg_yaml_node *key,
                      const struct fg_yaml_node *val)
{
	size_t i;
	int rc;

	if (val->kind != FG_YAML_SEQ || val->nkids == 0)
		return fail(c, val, "pseudonym_keys must be a list of {id, file}, newest first");
	c->cfg->keyring = calloc(1, sizeof(*c->cfg->keyring));
	if (!c->cfg->keyring)
		return fail_nomem(c);
	for (i = 0; i < val->nkids; i++)
		if ((rc = parse_key_item(c, val->kids[i])))
			return rc;
	return 0;
}

static int check_top(struct load_ctx *c, const struct fg_yaml_node *where,
                     const struct fg_yaml_node *const *seen);

static const struct section_spec upstream_section = {
	"upstream", upstream_keys, NELEM(upstream_keys), check_upstream };
static const struct section_spec limits_section = {
	"limits", limits_keys, NELEM(limits_keys), NULL };
static const struct section_spec timeouts_section = {
	"timeouts", timeouts_keys, NELEM(timeouts_keys), NULL };
static const struct section_spec admin_section = {
	"admin", admin_keys, NELEM(admin_keys), NULL };
static const struct section_spec metrics_section = {
	"metrics", metrics_keys, NELEM(metrics_keys), NULL };
static const struct section_spec log_section = {
	"log", log_keys, NELEM(log_keys), NULL };

enum { TOP_LISTEN, TOP_WORKERS, TOP_UPSTREAM, TOP_LIMITS, TOP_TIMEOUTS, TOP_ADMIN, TOP_METRICS,
       TOP_LOG, TOP_POLICY, TOP_KEYS, TOP_NKEYS };

static const struct key_spec top_keys[] = {
	[TOP_LISTEN] = { "listen", parse_listen, 0, 0, 0, NULL, NULL },
	[TOP_WORKERS] = { "workers", parse_workers, 0, 1, 1024, NULL, NULL },
	[TOP_UPSTREAM] = { "upstream", parse_section, 0, 0, 0, NULL, &upstream_section },
	[TOP_LIMITS] = { "limits", parse_section, 0, 0, 0, NULL, &limits_section },
	[TOP_TIMEOUTS] = { "timeouts", parse_section, 0, 0, 0, NULL, &timeouts_section },
	[TOP_ADMIN] = { "admin", parse_section, 0, 0, 0, NULL, &admin_section },
	[TOP_METRICS] = { "metrics", parse_section, 0, 0, 0, NULL, &metrics_section },
	[TOP_LOG] = { "log", parse_section, 0, 0, 0, NULL, &log_section },
	[TOP_POLICY] = { "policy", parse_policy, 0, 0, 0, NULL, NULL },
	[TOP_KEYS] = { "pseudonym_keys", parse_keys, 0, 0, 0, NULL, NULL },
};

static const struct section_spec top_section = {
	NULL, top_keys, NELEM(top_keys), check_top };

_Static_assert(NELEM(upstream_keys) == UP_NKEYS && UP_NKEYS <= SECTION_MAX_KEYS, "upstream table");
_Static_assert(NELEM(limits_keys) == LIM_NKEYS && LIM_NKEYS <= SECTION_MAX_KEYS, "limits table");
_Static_assert(NELEM(top_keys) == TOP_NKEYS && TOP_NKEYS <= SECTION_MAX_KEYS, "top table");

static int check_upstream(struct load_ctx *c, const struct fg_yaml_node *where,
                          const struct fg_yaml_node *const *seen)
{
	const struct fg_config *cfg = c->cfg;
	char lo[24], hi[24];

	if (!seen[UP_ADDRESS])
		return fail(c, where, "upstream.address is required");
	if (cfg->upstream.backoff_max_us < cfg->upstream.backoff_initial_us)
		return fail(c, seen[UP_BACKOFF_MAX] ? seen[UP_BACKOFF_MAX] : seen[UP_BACKOFF_INITIAL],
		            "upstream.backoff_max (%s) is below upstream.backoff_initial (%s)",
		            fg_units_format_duration(cfg->upstream.backoff_max_us, lo, sizeof(lo)),
		            fg_units_format_duration(cfg->upstream.backoff_initial_us, hi, sizeof(hi)));
	return 0;
}

static int check_top(struct load_ctx *c, const struct fg_yaml_node *where,
                     const struct fg_yaml_node *const *seen)
{
	if (!seen[TOP_UPSTREAM])
		return fail(c, where, "upstream.address is required");
	return 0;
}

/* --- snapshots ---------------------------------------------------------- */

/* The defaults documented next to each field in fg_config.h. */
static void set_defaults(struct fg_config *cfg)
{
	/* constants known to parse; a typo here fails every test */
	parse_addr(DEFAULT_LISTEN, ADDR_F_NAMES | ADDR_F_PORT0, &cfg->listen[0]);
	cfg->nlisten = 1;
	cfg->workers = 0;
	cfg->upstream.connect_timeout_us = 2 * USEC_PER_SEC;
	cfg->upstream.max_connections = 8;
	cfg->upstream.max_pending = 1024;
	cfg->upstream.keepalive_time_us = 5 * USEC_PER_MIN;
	cfg->upstream.keepalive_timeout_us = 20 * USEC_PER_SEC;
	cfg->upstream.backoff_initial_us = 100 * USEC_PER_MS;
	cfg->upstream.backoff_max_us = 10 * USEC_PER_SEC;
	cfg->limits.max_concurrent_streams = 1000;
	cfg->limits.max_header_list_size = 64 * KIB;
	cfg->limits.max_message_size = 4 * MIB;
	cfg->limits.stream_window = 1 * MIB;
	cfg->limits.connection_window = 16 * MIB;
	cfg->limits.connection_buffer = MIB;
	cfg->limits.worker_buffer = 64 * MIB;
	cfg->limits.max_connections = 100000;
	cfg->timeouts.idle_us = 5 * USEC_PER_MIN;
	cfg->timeouts.drain_us = 30 * USEC_PER_SEC;
	cfg->timeouts.readiness_delay_us = 0;
	cfg->timeouts.write_us = 30 * USEC_PER_SEC;
	cfg->timeouts.stalled_stream_us = 5 * USEC_PER_MIN;
	cfg->admin.enabled = 1;
	parse_addr(DEFAULT_ADMIN, 0, &cfg->admin.listen);
	cfg->log.level = FG_LOG_INFO;
	cfg->log.access_log = NULL;
}

static void config_free(struct fg_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	for (int i = 0; i < cfg->metrics.nmethods; i++)
		free(cfg->metrics.methods[i]);
	free(cfg->log.access_log);
	free(cfg->policy_path);
	fg_policy_compile_free(cfg->policy);
	if (cfg->keyring) {
		fg_keyring_wipe(cfg->keyring);
		free(cfg->keyring);
	}
	free(cfg);
}

/* Parse <len> bytes at <text> into a new snapshot; takes <path> (absolute, owned). */
static int load(struct load_ctx *c, const char *text, size_t len, char *path,
                struct fg_config **out)
{
	struct fg_yaml_node *root = NULL;
	int rc;

	c->cfg = calloc(1, sizeof(*c->cfg));
	if (!c->cfg) {
		free(path);
		return fail_nomem(c);
	}
	c->cfg->path = path;
	c->cfg->refcount = 1;
	set_defaults(c->cfg);
	rc = fg_yaml_parse(c->name, text, len, &config_limits, &root, c->err, c->errlen);
	if (rc)
		goto out_free_cfg;
	rc = walk_map(c, &top_section, root, root);
	fg_yaml_free(root);
	if (rc == 0 && c->cfg->policy_path) {
		/* One counter slot per worker (workers: auto counts CPUs the way
		 * the daemon will). */
		size_t slots = c->cfg->workers ? (size_t)c->cfg->workers : (size_t)fg_cpu_count();
		char why[FG_CONFIG_ERRLEN];
		rc = fg_policy_compile_load(c->cfg->policy_path, slots, &c->cfg->policy, why, sizeof(why));
		/* A policy that cannot be read is an error of this file, at the
		 * key naming it; errors inside the policy carry its own position. */
		if (rc == FG_EIO) {
			struct fg_yaml_node at = { .line = c->policy_line, .col = c->policy_col };
			rc = fail(c, &at, "policy: %s", why);
		}
		else if (rc && c->err && c->errlen)
			snprintf(c->err, c->errlen, "%s", why);
	}
	if (rc)
		goto out_free_cfg;
	*out = c->cfg;
	return 0;

out_free_cfg:
	config_free(c->cfg);
	c->cfg = NULL;
	return rc;
}

static void ctx_init(struct load_ctx *c, const char *name, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->name = name ? name : "<string>";
	c->err = err;
	c->errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
}

int fg_config_load_string(const char *name, const char *basedir, const char *text, size_t len,
                          struct fg_config **out, char *err, size_t errlen)
{
	struct load_ctx c;
	char *path;
	int rc;

	*out = NULL;
	ctx_init(&c, name, err, errlen);
	c.basedir = basedir ? fg_yaml_path_resolve(NULL, basedir) : getcwd(NULL, 0);
	if (!c.basedir)
		return errno == ENOMEM ? fail_nomem(&c)
		       : fail(&c, &file_start, "cannot resolve the base directory: %s", strerror(errno));
	path = fg_yaml_path_resolve(c.basedir, c.name);
	rc = path ? load(&c, text, len, path, out) : fail_nomem(&c);
	free(c.basedir);
	return rc;
}

/* The current directory is gone or unreadable: <path> has no absolute form. */
static int fail_resolve(struct load_ctx *c, int errnum)
{
	if (errnum == ENOMEM)
		return fail_nomem(c);
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: cannot resolve its directory: %s", c->name,
		         strerror(errnum));
	errno = errnum;
	return FG_EIO;
}

int fg_config_load(const char *path, struct fg_config **out, char *err, size_t errlen)
{
	struct load_ctx c;
	char *text, *abspath;
	size_t len;
	int rc;

	*out = NULL;
	ctx_init(&c, path, err, errlen);
	rc = fg_yaml_read_file(path, CONFIG_MAX_BYTES, &text, &len, err, errlen);
	if (rc)
		return rc;
	abspath = fg_yaml_path_resolve(NULL, path);
	if (!abspath) {
		rc = fail_resolve(&c, errno);
		goto out_free_text;
	}
	c.basedir = fg_yaml_path_dirname(abspath);
	if (!c.basedir) {
		free(abspath);
		rc = fail_nomem(&c);
		goto out_free_text;
	}
	rc = load(&c, text, len, abspath, out);
	free(c.basedir);
out_free_text:
	free(text);
	return rc;
}

struct fg_config *fg_config_ref(struct fg_config *cfg)
{
	/* relaxed: the caller already holds a reference, so no one frees it now */
	__atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
	return cfg;
}

void fg_config_unref(struct fg_config *cfg)
{
	/* acq_rel: every holder's reads happen before the last one frees */
	if (cfg && __atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(cfg);
}

__attribute__((format(printf, 3, 4)))
static int reload_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return FG_ECONFIG;
}

int fg_config_reload_check(const struct fg_config *cur, const struct fg_config *next,
                           char *err, size_t errlen)
{
	int same = cur->nlisten == next->nlisten;

	for (int i = 0; same && i < cur->nlisten; i++)
		same = strcmp(cur->listen[i].text, next->listen[i].text) == 0;
	if (!same)
		return reload_fail(err, errlen, "listen cannot change on reload; restart the daemon");
	if (cur->workers != next->workers)
		return reload_fail(err, errlen, "workers cannot change on reload; restart the daemon");
	if (cur->admin.enabled != next->admin.enabled ||
	    (cur->admin.enabled && strcmp(cur->admin.listen.text, next->admin.listen.text) != 0))
		return reload_fail(err, errlen, "admin.listen cannot change on reload; restart the daemon");
	same = cur->metrics.nmethods == next->metrics.nmethods;
	for (int i = 0; same && i < cur->metrics.nmethods; i++)
		same = strcmp(cur->metrics.methods[i], next->metrics.methods[i]) == 0;
	if (!same)
		return reload_fail(err, errlen, "metrics.methods cannot change on reload; restart the daemon");
	if (err && errlen)
		err[0] = '\0';
	return 0;
}
