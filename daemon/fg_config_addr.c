/*
 * fg_config_addr.c - "host:port" values of the config (listen,
 * upstream.address, admin.listen) resolved to socket addresses.
 *
 * Hosts are numeric only, "[v6]" in brackets; "*" and "localhost" only
 * where the caller allows names.  Nothing is ever looked up: a blocking
 * resolver has no place in a loader that runs on reload.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "fg_config-internal.h"

#define MAX_PORT 65535

/* "0".."65535" (or from 1 without FG_CONFIG_ADDR_F_PORT0) into <*port>. */
static const char *parse_port(const char *s, unsigned flags, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = 0;

	for (; s[n] >= '0' && s[n] <= '9' && n < 6; n++)
		v = v * 10 + (unsigned long)(s[n] - '0');
	if (n == 0 || s[n] != '\0' || v > MAX_PORT)
		return flags & FG_CONFIG_ADDR_F_PORT0 ? "the port must be a number from 0 to 65535"
		                                      : "the port must be a number from 1 to 65535";
	if (v == 0 && !(flags & FG_CONFIG_ADDR_F_PORT0))
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

	if ((flags & FG_CONFIG_ADDR_F_NAMES) && strcmp(host, "*") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if ((flags & FG_CONFIG_ADDR_F_NAMES) && strcmp(host, "localhost") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return flags & FG_CONFIG_ADDR_F_NAMES
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

const char *fg_config_addr_parse(const char *text, unsigned flags, struct fg_config_addr *out)
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

int fg_config_addr_read(struct fg_config_loader *l, const struct fg_yaml_node *val, unsigned flags,
                        struct fg_config_addr *out)
{
	char buf[FG_YAML_SHOWLEN];
	const char *why;
	int rc = fg_config_value_want(l, val, "a host:port string");

	if (rc)
		return rc;
	why = fg_config_addr_parse(val->text, flags, out);
	if (why)
		return fg_config_fail(l, val, "%s: '%s' is not a usable host:port: %s", l->key,
		                      fg_yaml_show(val, buf, sizeof(buf)), why);
	return 0;
}

unsigned fg_config_addr_port(const struct fg_config_addr *a)
{
	if (a->sa.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}
