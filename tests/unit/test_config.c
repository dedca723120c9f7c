/*
 * test_config.c - cmocka group "config": fg_config.h through its header.
 *
 * Error cases assert the whole message, position included: the position is
 * the point of the message, so a drift of one column is a bug.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_testutil.h"

#include "fg_config.h"
#include "fg_error.h"

#define NAME "t.yaml"
#define BASE "/etc/feedguard"
/* The least a config must say, on line 1. */
#define UP "upstream: {address: 10.0.0.1:50051}\n"

struct error_case {
	const char *yaml;
	const char *err;        /* the whole expected message */
};

static struct fg_config *load_len(const char *yaml, size_t len)
{
	char err[FG_CONFIG_ERRLEN] = "unset";
	struct fg_config *cfg = NULL;
	int rc = fg_config_load_string(NAME, BASE, yaml, len, &cfg, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(cfg);
	assert_string_equal(err, "");
	return cfg;
}

static struct fg_config *load(const char *yaml)
{
	return load_len(yaml, strlen(yaml));
}

static void expect_error_len(const char *yaml, size_t len, const char *want)
{
	char err[FG_CONFIG_ERRLEN] = "unset";
	struct fg_config *cfg = (struct fg_config *)&err;    /* must be reset to NULL */
	int rc = fg_config_load_string(NAME, BASE, yaml, len, &cfg, err, sizeof(err));

	assert_int_equal(rc, FG_ECONFIG);
	assert_null(cfg);
	assert_string_equal(err, want);
}

static void expect_error(const char *yaml, const char *want)
{
	expect_error_len(yaml, strlen(yaml), want);
}

static void expect_errors(const struct error_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_error(cases[i].yaml, cases[i].err);
}

#define EXPECT_ERRORS(cases) expect_errors(cases, sizeof(cases) / sizeof(cases[0]))

static void assert_v4(const struct fg_config_addr *a, const char *text, const char *ip, int port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;
	char buf[INET_ADDRSTRLEN];

	assert_string_equal(a->text, text);
	assert_int_equal(a->salen, sizeof(*sin));
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), port);
	assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
	assert_string_equal(buf, ip);
}

static void assert_v6(const struct fg_config_addr *a, const char *text, const char *ip, int port)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->sa;
	char buf[INET6_ADDRSTRLEN];

	assert_string_equal(a->text, text);
	assert_int_equal(a->salen, sizeof(*sin6));
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), port);
	assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)));
	assert_string_equal(buf, ip);
}

/* --- values that load ------------------------------------------------- */

static void test_defaults(void **state)
{
	struct fg_config *cfg = load(UP);

	assert_int_equal(cfg->refcount, 1);
	assert_string_equal(cfg->path, BASE "/" NAME);
	assert_int_equal(cfg->nlisten, 1);
	assert_v4(&cfg->listen[0], "*:8080", "0.0.0.0", 8080);
	assert_int_equal(cfg->workers, 0);
	assert_v4(&cfg->upstream.addr, "10.0.0.1:50051", "10.0.0.1", 50051);
	assert_true(cfg->upstream.connect_timeout_us == 2000000);
	assert_int_equal(cfg->upstream.max_connections, 8);
	assert_int_equal(cfg->upstream.max_pending, 1024);
	assert_true(cfg->upstream.keepalive_time_us == 300000000);
	assert_true(cfg->upstream.keepalive_timeout_us == 20000000);
	assert_true(cfg->upstream.backoff_initial_us == 100000);
	assert_true(cfg->upstream.backoff_max_us == 10000000);
	assert_int_equal(cfg->limits.max_concurrent_streams, 1000);
	assert_int_equal(cfg->limits.max_header_list_size, 65536);
	assert_true(cfg->limits.max_message_size == 4194304);
	assert_int_equal(cfg->limits.stream_window, 1048576);
	assert_int_equal(cfg->limits.connection_window, 16777216);
	assert_int_equal(cfg->limits.max_connections, 100000);
	assert_true(cfg->limits.connection_buffer == 1048576);
	assert_true(cfg->limits.worker_buffer == 67108864);
	assert_true(cfg->timeouts.idle_us == 300000000);
	assert_true(cfg->timeouts.drain_us == 30000000);
	assert_true(cfg->timeouts.readiness_delay_us == 0);
	assert_true(cfg->timeouts.write_us == 30000000);
	assert_true(cfg->timeouts.stalled_stream_us == 300000000);
	assert_true(cfg->timeouts.stalled_overloaded_us == 5000000);
	assert_int_equal(cfg->admin.enabled, 1);
	assert_v4(&cfg->admin.listen, "127.0.0.1:9901", "127.0.0.1", 9901);
	assert_int_equal(cfg->metrics.nmethods, 0);
	assert_int_equal(cfg->log.level, FG_LOG_INFO);
	assert_null(cfg->log.access_log);
	fg_config_unref(cfg);
}

static void test_every_key(void **state)
{
	static const char yaml[] =
		"# every key, block style\n"
		"listen:\n"
		"  - 10.1.2.3:8443\n"
		"  - \"[::1]:8444\"\n"
		"workers: 4\n"
		"upstream:\n"
		"  address: \"[fd00::7]:50051\"\n"
		"  connect_timeout: 1.5s\n"
		"  max_connections: 2\n"
		"  max_pending: 0\n"
		"  keepalive_time: 1h\n"
		"  keepalive_timeout: 250ms\n"
		"  backoff_initial: 10ms\n"
		"  backoff_max: 0.5m\n"
		"limits:\n"
		"  max_concurrent_streams: 100\n"
		"  max_header_list_size: 1KiB\n"
		"  max_message_size: 16MiB\n"
		"  stream_window: 65535B\n"
		"  connection_window: 2147483647B\n"
		"  max_connections: 5\n"
		"  connection_buffer: 4294967295B\n"
		"  worker_buffer: 9223372036854775807B\n"
		"timeouts:\n"
		"  idle: 1m\n"
		"  drain: 0s\n"
		"  readiness_delay: 5s\n"
		"  write: 250ms\n"
		"  stalled_stream: 90s\n"
		"  stalled_stream_overloaded: 750ms\n"
		"admin:\n"
		"  listen: \"[::1]:0\"\n"
		"metrics:\n"
		"  methods:\n"
		"    - /feed.v1.FeedService/GetFeed\n"
		"    - /grpc.health.v1.Health/Check\n"
		"log:\n"
		"  level: debug\n"
		"  access_log: /var/log/feedguard/access.log\n";
	struct fg_config *cfg = load(yaml);

	assert_int_equal(cfg->nlisten, 2);
	assert_v4(&cfg->listen[0], "10.1.2.3:8443", "10.1.2.3", 8443);
	assert_v6(&cfg->listen[1], "[::1]:8444", "::1", 8444);
	assert_int_equal(cfg->workers, 4);
	assert_v6(&cfg->upstream.addr, "[fd00::7]:50051", "fd00::7", 50051);
	assert_true(cfg->upstream.connect_timeout_us == 1500000);
	assert_int_equal(cfg->upstream.max_connections, 2);
	assert_int_equal(cfg->upstream.max_pending, 0);
	assert_true(cfg->upstream.keepalive_time_us == 3600000000LL);
	assert_true(cfg->upstream.keepalive_timeout_us == 250000);
	assert_true(cfg->upstream.backoff_initial_us == 10000);
	assert_true(cfg->upstream.backoff_max_us == 30000000);
	assert_int_equal(cfg->limits.max_concurrent_streams, 100);
	assert_int_equal(cfg->limits.max_header_list_size, 1024);
	assert_true(cfg->limits.max_message_size == 16777216);
	assert_int_equal(cfg->limits.stream_window, 65535);
	assert_int_equal(cfg->limits.connection_window, 2147483647);
	assert_int_equal(cfg->limits.max_connections, 5);
	assert_true(cfg->limits.connection_buffer == 4294967295ULL);
	assert_true(cfg->limits.worker_buffer == 9223372036854775807ULL);
	assert_true(cfg->timeouts.idle_us == 60000000);
	assert_true(cfg->timeouts.drain_us == 0);
	assert_true(cfg->timeouts.readiness_delay_us == 5000000);
	assert_true(cfg->timeouts.write_us == 250000);
	assert_true(cfg->timeouts.stalled_stream_us == 90000000);
	assert_true(cfg->timeouts.stalled_overloaded_us == 750000);
	assert_int_equal(cfg->admin.enabled, 1);
	assert_v6(&cfg->admin.listen, "[::1]:0", "::1", 0);
	assert_int_equal(cfg->metrics.nmethods, 2);
	assert_string_equal(cfg->metrics.methods[0], "/feed.v1.FeedService/GetFeed");
	assert_string_equal(cfg->metrics.methods[1], "/grpc.health.v1.Health/Check");
	assert_int_equal(cfg->log.level, FG_LOG_DEBUG);
	assert_string_equal(cfg->log.access_log, "/var/log/feedguard/access.log");
	fg_config_unref(cfg);
}

static void test_listen_forms(void **state)
{
	struct fg_config *cfg;

	cfg = load(UP "listen: \"*:9000\"\n");
	assert_int_equal(cfg->nlisten, 1);
	assert_v4(&cfg->listen[0], "*:9000", "0.0.0.0", 9000);
	fg_config_unref(cfg);

	cfg = load(UP "listen: [localhost:0, 0.0.0.0:1, \"[::]:65535\"]\n");
	assert_int_equal(cfg->nlisten, 3);
	assert_v4(&cfg->listen[0], "localhost:0", "127.0.0.1", 0);
	assert_v4(&cfg->listen[1], "0.0.0.0:1", "0.0.0.0", 1);
	assert_v6(&cfg->listen[2], "[::]:65535", "::", 65535);
	fg_config_unref(cfg);

	/* port 0 twice is two different kernel-picked ports */
	cfg = load(UP "listen: [\"*:0\", \"*:0\"]\n");
	assert_int_equal(cfg->nlisten, 2);
	fg_config_unref(cfg);

	/* the same port on two families is two sockets */
	cfg = load(UP "listen: [\"*:80\", \"[::]:80\"]\n");
	assert_int_equal(cfg->nlisten, 2);
	fg_config_unref(cfg);
}

static void test_listen_sixteen(void **state)
{
	char yaml[1024];
	size_t n = (size_t)snprintf(yaml, sizeof(yaml), UP "listen:\n");
	struct fg_config *cfg;

	for (int i = 0; i < FG_CONFIG_MAX_LISTEN; i++)
		n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "  - 127.0.0.1:%d\n", 8000 + i);
	cfg = load(yaml);
	assert_int_equal(cfg->nlisten, FG_CONFIG_MAX_LISTEN);
	assert_v4(&cfg->listen[15], "127.0.0.1:8015", "127.0.0.1", 8015);
	fg_config_unref(cfg);

	snprintf(yaml + n, sizeof(yaml) - n, "  - 127.0.0.1:9999\n");
	expect_error(yaml, NAME ":19:5: listen: more than 16 addresses");
}

static void test_workers(void **state)
{
	static const struct { const char *text; int want; } good[] = {
		{ "auto", 0 }, { "1", 1 }, { "\"4\"", 4 }, { "1024", 1024 },
	};
	static const struct error_case bad[] = {
		{ UP "workers: 0\n", NAME ":2:10: workers: '0' is out of range (auto, or 1 to 1024)" },
		{ UP "workers: 1025\n", NAME ":2:10: workers: '1025' is out of range (auto, or 1 to 1024)" },
		{ UP "workers: -1\n", NAME ":2:10: workers: '-1' is out of range (auto, or 1 to 1024)" },
		{ UP "workers: 99999999999999999999\n",
		  NAME ":2:10: workers: '99999999999999999999' is out of range (auto, or 1 to 1024)" },
		{ UP "workers: four\n", NAME ":2:10: workers: 'four' is neither auto nor an integer" },
		{ UP "workers: 4.0\n", NAME ":2:10: workers: '4.0' is neither auto nor an integer" },
		{ UP "workers: AUTO\n", NAME ":2:10: workers: 'AUTO' is neither auto nor an integer" },
		{ UP "workers: \" 4\"\n", NAME ":2:10: workers: ' 4' is neither auto nor an integer" },
		{ UP "workers: \"\"\n", NAME ":2:10: workers needs a value (auto or a number of threads)" },
		{ UP "workers: [1]\n", NAME ":2:10: workers must be auto or a number of threads, not a list" },
	};
	char yaml[128];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(yaml, sizeof(yaml), UP "workers: %s\n", good[i].text);
		struct fg_config *cfg = load(yaml);

		assert_int_equal(cfg->workers, good[i].want);
		fg_config_unref(cfg);
	}
	EXPECT_ERRORS(bad);
}

static void test_admin(void **state)
{
	struct fg_config *cfg;

	cfg = load(UP "admin: {listen: off}\n");
	assert_int_equal(cfg->admin.enabled, 0);
	fg_config_unref(cfg);

	cfg = load(UP "admin: {listen: \"off\"}\n");
	assert_int_equal(cfg->admin.enabled, 0);
	fg_config_unref(cfg);

	cfg = load(UP "admin: {listen: 127.0.0.1:0}\n");
	assert_int_equal(cfg->admin.enabled, 1);
	assert_v4(&cfg->admin.listen, "127.0.0.1:0", "127.0.0.1", 0);
	fg_config_unref(cfg);

	cfg = load(UP "admin: {}\n");
	assert_int_equal(cfg->admin.enabled, 1);
	assert_v4(&cfg->admin.listen, "127.0.0.1:9901", "127.0.0.1", 9901);
	fg_config_unref(cfg);
}

static void test_log_level(void **state)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	static const enum fg_log_level levels[] = { FG_LOG_DEBUG, FG_LOG_INFO, FG_LOG_WARN, FG_LOG_ERROR };
	char yaml[128];

	for (size_t i = 0; i < 4; i++) {
		snprintf(yaml, sizeof(yaml), UP "log: {level: %s}\n", names[i]);
		struct fg_config *cfg = load(yaml);

		assert_int_equal(cfg->log.level, levels[i]);
		fg_config_unref(cfg);
	}
	expect_error(UP "log: {level: WARN}\n",
	             NAME ":2:14: log.level: 'WARN' is not one of debug, info, warn, error");
	expect_error(UP "log: {level: warning}\n",
	             NAME ":2:14: log.level: 'warning' is not one of debug, info, warn, error");
	expect_error(UP "log: {level: [info]}\n",
	             NAME ":2:14: log.level must be debug, info, warn or error, not a list");
}

static void test_metrics_methods(void **state)
{
	static const struct error_case bad[] = {
		{ UP "metrics: {methods: /a/B}\n",
		  NAME ":2:20: metrics.methods must be a list of method paths, not a single value" },
		{ UP "metrics: {methods: }\n",
		  NAME ":2:20: metrics.methods must be a list of method paths, not an empty value" },
		{ UP "metrics: {methods: [[/a/B]]}\n", NAME ":2:21: metrics.methods must be a method "
		  "path such as /pkg.Service/Method, not a list" },
		{ UP "metrics: {methods: [a/B]}\n", NAME ":2:21: metrics.methods: 'a/B' is not a gRPC "
		  "method path (/package.Service/Method)" },
		{ UP "metrics: {methods: [/a/B/C]}\n", NAME ":2:21: metrics.methods: '/a/B/C' is not a "
		  "gRPC method path (/package.Service/Method)" },
		{ UP "metrics: {methods: [/a/]}\n", NAME ":2:21: metrics.methods: '/a/' is not a gRPC "
		  "method path (/package.Service/Method)" },
		{ UP "metrics: {methods: [//B]}\n", NAME ":2:21: metrics.methods: '//B' is not a gRPC "
		  "method path (/package.Service/Method)" },
		{ UP "metrics: {methods: [/a.B]}\n", NAME ":2:21: metrics.methods: '/a.B' is not a gRPC "
		  "method path (/package.Service/Method)" },
		/* a quote would break the Prometheus label it ends up in */
		{ UP "metrics: {methods: ['/a/B\"']}\n", NAME ":2:21: metrics.methods: '/a/B\"' is not a "
		  "gRPC method path (/package.Service/Method)" },
		{ UP "metrics: {methods: [/a/B, /a/B]}\n",
		  NAME ":2:27: metrics.methods: '/a/B' is listed twice (first at 2:21)" },
		{ UP "metrics: {labels: []}\n",
		  NAME ":2:11: unknown key 'labels' in metrics; valid keys: methods" },
	};
	char yaml[4096];
	size_t n = (size_t)snprintf(yaml, sizeof(yaml), UP "metrics:\n  methods:\n");
	struct fg_config *cfg;

	for (int i = 0; i < FG_CONFIG_MAX_METHODS; i++)
		n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "    - /svc.S/M%d\n", i);
	cfg = load(yaml);
	assert_int_equal(cfg->metrics.nmethods, FG_CONFIG_MAX_METHODS);
	assert_string_equal(cfg->metrics.methods[63], "/svc.S/M63");
	fg_config_unref(cfg);
	snprintf(yaml + n, sizeof(yaml) - n, "    - /svc.S/Extra\n");
	expect_error(yaml, NAME ":68:7: metrics.methods: more than 64 methods");

	cfg = load(UP "metrics: {methods: []}\n");
	assert_int_equal(cfg->metrics.nmethods, 0);
	fg_config_unref(cfg);
	EXPECT_ERRORS(bad);
}

/* --- access_log paths ---------------------------------------------------- */

static void expect_access_log(const char *basedir, const char *value, const char *want)
{
	char yaml[512], err[FG_CONFIG_ERRLEN];
	struct fg_config *cfg;

	snprintf(yaml, sizeof(yaml), UP "log:\n  access_log: \"%s\"\n", value);
	assert_int_equal(fg_config_load_string(NAME, basedir, yaml, strlen(yaml), &cfg, err,
	                                       sizeof(err)), 0);
	if (want)
		assert_string_equal(cfg->log.access_log, want);
	else
		assert_null(cfg->log.access_log);
	fg_config_unref(cfg);
}

static void test_access_log(void **state)
{
	char cwd[4096], want[4200];

	expect_access_log(BASE, "off", NULL);
	expect_access_log(BASE, "-", "-");
	expect_access_log(BASE, "/var/log/fg.log", "/var/log/fg.log");
	expect_access_log(BASE, "access.log", BASE "/access.log");
	expect_access_log(BASE, "logs/access.log", BASE "/logs/access.log");
	expect_access_log(BASE, "./access.log", BASE "/access.log");
	expect_access_log(BASE "/", "access.log", BASE "/access.log");
	expect_access_log("/", "access.log", "/access.log");
	/* relative to the config file's directory, not where the daemon started */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s/access.log", cwd);
	expect_access_log(NULL, "access.log", want);
	snprintf(want, sizeof(want), "%s/conf/access.log", cwd);
	expect_access_log("conf", "access.log", want);

	expect_error(UP "log: {access_log: \"\"}\n",
	             NAME ":2:19: log.access_log needs a value (off, - or a file path)");
	expect_error(UP "log: {access_log: {a: b}}\n",
	             NAME ":2:19: log.access_log must be off, - or a file path, not a mapping");
}

/* --- errors, one kind per test ----------------------------------------- */

static void test_empty_documents(void **state)
{
	static const struct error_case cases[] = {
		{ "", NAME ":1:1: upstream.address is required" },
		{ "\n\n\n", NAME ":1:1: upstream.address is required" },
		{ "# nothing but a comment\n", NAME ":1:1: upstream.address is required" },
		{ "---\n", NAME ":1:1: upstream.address is required" },
		{ "---\n...\n", NAME ":1:1: upstream.address is required" },
		{ "{}", NAME ":1:1: upstream.address is required" },
	};

	EXPECT_ERRORS(cases);
	/* a NULL text of length 0 is an empty file too */
	expect_error_len(NULL, 0, NAME ":1:1: upstream.address is required");
}

static void test_required(void **state)
{
	static const struct error_case cases[] = {
		/* no upstream section: at the start of the top-level mapping */
		{ "# comment\nworkers: 2\n", NAME ":2:1: upstream.address is required" },
		/* a section without the key: at the section's key */
		{ "workers: 2\nupstream:\n  max_pending: 1\n", NAME ":2:1: upstream.address is required" },
		{ "upstream: {}\n", NAME ":1:1: upstream.address is required" },
	};

	EXPECT_ERRORS(cases);
}

static void test_listen_errors(void **state)
{
	static const struct error_case cases[] = {
		{ UP "listen: \"::1:80\"\n", NAME ":2:9: listen: '::1:80' is not a usable host:port: "
		  "an IPv6 address needs brackets, as in [::1]:8080" },
		{ UP "listen: \"[::1]80\"\n", NAME ":2:9: listen: '[::1]80' is not a usable host:port: "
		  "missing :port after ']'" },
		{ UP "listen: \"[::1:80\"\n", NAME ":2:9: listen: '[::1:80' is not a usable host:port: "
		  "missing ']' after the IPv6 address" },
		{ UP "listen: \"[10.0.0.1]:80\"\n", NAME ":2:9: listen: '[10.0.0.1]:80' is not a usable "
		  "host:port: not a numeric IPv6 address" },
		{ UP "listen: 10.0.0.1\n", NAME ":2:9: listen: '10.0.0.1' is not a usable host:port: "
		  "missing :port" },
		{ UP "listen: \":80\"\n", NAME ":2:9: listen: ':80' is not a usable host:port: "
		  "missing host before ':' (use *:PORT for all addresses)" },
		{ UP "listen: 10.0.0.1:65536\n", NAME ":2:9: listen: '10.0.0.1:65536' is not a usable "
		  "host:port: the port must be a number from 0 to 65535" },
		{ UP "listen: \"10.0.0.1:\"\n", NAME ":2:9: listen: '10.0.0.1:' is not a usable "
		  "host:port: the port must be a number from 0 to 65535" },
		{ UP "listen: 10.0.0.1:8o\n", NAME ":2:9: listen: '10.0.0.1:8o' is not a usable "
		  "host:port: the port must be a number from 0 to 65535" },
		{ UP "listen: 10.0.0.1:0000080\n", NAME ":2:9: listen: '10.0.0.1:0000080' is not a usable "
		  "host:port: the port must be a number from 0 to 65535" },
		{ UP "listen: host.example:80\n", NAME ":2:9: listen: 'host.example:80' is not a usable "
		  "host:port: the host must be a numeric IP address, * or localhost (names are never "
		  "resolved)" },
		{ UP "listen: {a: 1}\n",
		  NAME ":2:9: listen must be a host:port string or a list of them, not a mapping" },
		{ UP "listen: []\n", NAME ":2:9: listen needs at least one address" },
		{ UP "listen:\n", NAME ":2:8: listen needs a value (a host:port string)" },
		{ UP "listen: [[1.2.3.4:5]]\n", NAME ":2:10: listen must be a host:port string, not a list" },
		{ UP "listen: [\"*:1\", \"*:1\"]\n",
		  NAME ":2:17: listen: '*:1' is the same address as '*:1' (2:10)" },
		{ UP "listen:\n  - 0.0.0.0:80\n  - 10.0.0.1:80\n  - \"*:80\"\n",
		  NAME ":5:5: listen: '*:80' is the same address as '0.0.0.0:80' (3:5)" },
		{ UP "listen: 1111111111111111111111111111111111111111111111111111111111111111111111111111"
		  "111111111111111111111111111111111111111111111111111111:1\n",
		  NAME ":2:9: listen: '111111111111111111111111111111111111111111111111...' is not a "
		  "usable host:port: too long for an address" },
	};

	EXPECT_ERRORS(cases);
}

static void test_upstream_address_errors(void **state)
{
	static const struct error_case cases[] = {
		{ "upstream: {address: 10.0.0.1:0}\n", NAME ":1:21: upstream.address: '10.0.0.1:0' is not "
		  "a usable host:port: port 0 is not allowed here" },
		{ "upstream: {address: 10.0.0.1:70000}\n", NAME ":1:21: upstream.address: '10.0.0.1:70000' "
		  "is not a usable host:port: the port must be a number from 1 to 65535" },
		{ "upstream: {address: \"localhost:50051\"}\n", NAME ":1:21: upstream.address: "
		  "'localhost:50051' is not a usable host:port: the host must be a numeric IP address "
		  "(names are never resolved)" },
		{ "upstream: {address: \"*:50051\"}\n", NAME ":1:21: upstream.address: '*:50051' is not a "
		  "usable host:port: the host must be a numeric IP address (names are never resolved)" },
		{ "upstream: {address: [10.0.0.1:1]}\n",
		  NAME ":1:21: upstream.address must be a host:port string, not a list" },
		{ "upstream:\n  address:\n", NAME ":2:11: upstream.address needs a value (a host:port string)" },
		{ UP "admin: {listen: \"localhost:9901\"}\n", NAME ":2:17: admin.listen: 'localhost:9901' is "
		  "not a usable host:port: the host must be a numeric IP address (names are never resolved)" },
		{ UP "admin: {listen: OFF}\n",
		  NAME ":2:17: admin.listen: 'OFF' is not a usable host:port: missing :port" },
		{ UP "state: {redis: run/redis.sock}\n", NAME ":2:16: state.redis: 'run/redis.sock' is neither ip:port "
		  "nor a unix socket path, which must be absolute (start with /)" },
		/* a control byte in a quoted value never reaches the log (found by fuzz_config) */
		{ UP "state: {redis: \"1E\\r\\r\\tx\"}\n", NAME ":2:16: state.redis: '1E???x' is neither ip:port "
		  "nor a unix socket path, which must be absolute (start with /)" },
	};

	EXPECT_ERRORS(cases);
}

static void test_limits_errors(void **state)
{
	static const struct error_case cases[] = {
		{ UP "limits: {stream_window: 2GiB}\n", NAME ":2:25: limits.stream_window: '2GiB' is out "
		  "of range (65535B to 2147483647B; RFC 9113 section 6.9.1)" },
		{ UP "limits: {stream_window: 65534B}\n", NAME ":2:25: limits.stream_window: '65534B' is "
		  "out of range (65535B to 2147483647B; RFC 9113 section 6.9.1)" },
		{ UP "limits: {connection_window: 2048MiB}\n", NAME ":2:29: limits.connection_window: "
		  "'2048MiB' is out of range (65535B to 2147483647B; RFC 9113 section 6.9.1)" },
		{ UP "limits: {stream_window: 1048576}\n", NAME ":2:25: limits.stream_window: '1048576' is "
		  "not a size: missing unit (use B, KiB, MiB or GiB)" },
		{ UP "limits: {stream_window: {a: 1}}\n",
		  NAME ":2:25: limits.stream_window must be a size such as 64KiB, not a mapping" },
		{ UP "limits: {max_header_list_size: 1023B}\n", NAME ":2:32: limits.max_header_list_size: "
		  "'1023B' is out of range (1KiB to 4294967295B)" },
		{ UP "limits: {max_message_size: 4GiB}\n", NAME ":2:28: limits.max_message_size: '4GiB' "
		  "is out of range (1B to 4294967295B; the gRPC length prefix is 32 bits)" },
		{ UP "limits: {max_message_size: 0B}\n", NAME ":2:28: limits.max_message_size: '0B' "
		  "is out of range (1B to 4294967295B; the gRPC length prefix is 32 bits)" },
		{ UP "limits: {max_message_size: 4MB}\n", NAME ":2:28: limits.max_message_size: '4MB' is "
		  "not a size: unknown unit (use B, KiB, MiB or GiB)" },
		{ UP "limits: {max_message_size: 99999999999999999999GiB}\n", NAME ":2:28: "
		  "limits.max_message_size: '99999999999999999999GiB' is out of range (1B to 4294967295B; "
		  "the gRPC length prefix is 32 bits)" },
		{ UP "limits: {max_concurrent_streams: 100KiB}\n",
		  NAME ":2:34: limits.max_concurrent_streams: '100KiB' is not an integer" },
		{ UP "limits: {max_concurrent_streams: 0}\n",
		  NAME ":2:34: limits.max_concurrent_streams: '0' is out of range (1 to 2147483647)" },
		{ UP "limits: {max_connections: -5}\n",
		  NAME ":2:27: limits.max_connections: '-5' is out of range (1 to 2147483647)" },
		{ UP "limits: {max_connections: 2147483648}\n",
		  NAME ":2:27: limits.max_connections: '2147483648' is out of range (1 to 2147483647)" },
		{ UP "limits: {connection_buffer: 65535B}\n", NAME ":2:29: limits.connection_buffer: "
		  "'65535B' is out of range (64KiB to 4294967295B)" },
		{ UP "limits: {connection_buffer: 4GiB}\n", NAME ":2:29: limits.connection_buffer: "
		  "'4GiB' is out of range (64KiB to 4294967295B)" },
		{ UP "limits: {connection_buffer: 1048576}\n", NAME ":2:29: limits.connection_buffer: "
		  "'1048576' is not a size: missing unit (use B, KiB, MiB or GiB)" },
		{ UP "limits:\n  worker_buffer: 1023KiB\n", NAME ":3:18: limits.worker_buffer: "
		  "'1023KiB' is out of range (1MiB to 9223372036854775807B)" },
		{ UP "limits:\n  worker_buffer: 8589934592GiB\n", NAME ":3:18: limits.worker_buffer: "
		  "'8589934592GiB' is out of range (1MiB to 9223372036854775807B)" },
		{ UP "limits: {worker_buffer: [64MiB]}\n",
		  NAME ":2:25: limits.worker_buffer must be a size such as 64KiB, not a list" },
	};

	EXPECT_ERRORS(cases);
}

static void test_duration_errors(void **state)
{
	static const struct error_case cases[] = {
		{ "upstream:\n  address: 10.0.0.1:1\n  connect_timeout: 5x\n", NAME ":3:20: "
		  "upstream.connect_timeout: '5x' is not a duration: unknown unit (use us, ms, s, m, h or d)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  connect_timeout: 30\n", NAME ":3:20: "
		  "upstream.connect_timeout: '30' is not a duration: missing unit (use us, ms, s, m, h or d)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  connect_timeout: 1.5us\n", NAME ":3:20: "
		  "upstream.connect_timeout: '1.5us' is not a duration: finer than 1us" },
		{ "upstream:\n  address: 10.0.0.1:1\n  connect_timeout: 0s\n", NAME ":3:20: "
		  "upstream.connect_timeout: '0s' is out of range (1ms to 1h)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  connect_timeout: 99999999999999h\n", NAME ":3:20: "
		  "upstream.connect_timeout: '99999999999999h' is out of range (1ms to 1h)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  keepalive_time: 5s\n", NAME ":3:19: "
		  "upstream.keepalive_time: '5s' is out of range (10s to 24h; gRPC clients never ping "
		  "more often than every 10s)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  keepalive_timeout: [1s]\n", NAME ":3:22: "
		  "upstream.keepalive_timeout must be a duration such as 5s, not a list" },
		{ UP "timeouts: {idle: 0s}\n", NAME ":2:18: timeouts.idle: '0s' is out of range (1s to 24h)" },
		{ UP "timeouts: {drain: 2h}\n", NAME ":2:19: timeouts.drain: '2h' is out of range (0s to 1h)" },
		{ UP "timeouts: {write: 5ms}\n", NAME ":2:19: timeouts.write: '5ms' is out of range (10ms to 1h)" },
		{ UP "timeouts: {stalled_stream: 25h}\n", NAME ":2:28: timeouts.stalled_stream: '25h' is out of "
		  "range (10ms to 24h)" },
		{ UP "timeouts: {readiness_delay: -1s}\n", NAME ":2:29: timeouts.readiness_delay: '-1s' is "
		  "not a duration: expected digits" },
		/* backoff_max defaults to 10s: the error points at what was written */
		{ "upstream: {address: 10.0.0.1:1, backoff_initial: 20s}\n", NAME ":1:33: "
		  "upstream.backoff_max (10s) is below upstream.backoff_initial (20s)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  backoff_initial: 2s\n  backoff_max: 1500ms\n",
		  NAME ":4:3: upstream.backoff_max (1500ms) is below upstream.backoff_initial (2s)" },
	};
	struct fg_config *cfg;

	EXPECT_ERRORS(cases);
	cfg = load("upstream: {address: 10.0.0.1:1, backoff_initial: 1s, backoff_max: 1s}\n");
	assert_true(cfg->upstream.backoff_max_us == 1000000);
	fg_config_unref(cfg);
}

static void test_unknown_keys(void **state)
{
	static const struct error_case cases[] = {
		{ "foo: 1\n", NAME ":1:1: unknown key 'foo'; valid keys: listen, workers, upstream, "
		  "limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
		/* the reference's dotted names are nested mappings in the file */
		{ UP "admin.listen: off\n", NAME ":2:1: unknown key 'admin.listen': a dotted key of the reference is "
		  "nested in the file (write 'admin:' and the rest of the name inside it)" },
		{ UP "listen.port: 1\n", NAME ":2:1: unknown key 'listen.port'; valid keys: listen, workers, upstream, "
		  "limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
		{ UP "Upstream: {}\n", NAME ":2:1: unknown key 'Upstream'; valid keys: listen, workers, "
		  "upstream, limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
		{ "upstream:\n  address: 10.0.0.1:1\n  addr: 10.0.0.1:1\n", NAME ":3:3: unknown key 'addr' "
		  "in upstream; valid keys: address, connect_timeout, max_connections, max_pending, "
		  "keepalive_time, keepalive_timeout, backoff_initial, backoff_max" },
		{ UP "limits:\n  max_streams: 5\n", NAME ":3:3: unknown key 'max_streams' in limits; valid "
		  "keys: max_concurrent_streams, max_header_list_size, max_message_size, stream_window, "
		  "connection_window, max_connections, connection_buffer, worker_buffer" },
		{ UP "timeouts: {connect: 1s}\n", NAME ":2:12: unknown key 'connect' in timeouts; valid "
		  "keys: idle, drain, readiness_delay, write, stalled_stream, stalled_stream_overloaded" },
		{ UP "admin: {port: 9901}\n", NAME ":2:9: unknown key 'port' in admin; valid keys: listen" },
		{ UP "log: {file: x.log}\n", NAME ":2:7: unknown key 'file' in log; valid keys: level, "
		  "access_log" },
		/* a key is matched on all its bytes, NUL included */
		{ UP "\"workers\\0x\": 2\n", NAME ":2:1: unknown key 'workers?x'; valid keys: listen, "
		  "workers, upstream, limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
	};

	EXPECT_ERRORS(cases);
}

static void test_duplicate_keys(void **state)
{
	static const struct error_case cases[] = {
		{ UP "workers: 2\nworkers: 3\n", NAME ":3:1: duplicate key 'workers' (first at 2:1)" },
		{ UP "upstream: {address: 10.0.0.2:1}\n", NAME ":2:1: duplicate key 'upstream' (first at 1:1)" },
		{ "upstream:\n  address: 10.0.0.1:1\n  address: 10.0.0.2:1\n",
		  NAME ":3:3: duplicate key 'upstream.address' (first at 2:3)" },
		{ UP "log: {level: info, level: debug}\n",
		  NAME ":2:20: duplicate key 'log.level' (first at 2:7)" },
	};

	EXPECT_ERRORS(cases);
}

static void test_wrong_types(void **state)
{
	static const struct error_case cases[] = {
		{ "upstream: [10.0.0.1:1]\n", NAME ":1:11: upstream must be a mapping of keys, not a list" },
		{ "upstream: 10.0.0.1:1\n",
		  NAME ":1:11: upstream must be a mapping of keys, not a single value" },
		{ "upstream:\n", NAME ":1:10: upstream must be a mapping of keys, not an empty value" },
		{ UP "limits: 5\n", NAME ":2:9: limits must be a mapping of keys, not a single value" },
		{ "- upstream\n", NAME ":1:1: the top level must be a mapping of keys, not a list" },
		{ "\"just a string\"\n",
		  NAME ":1:1: the top level must be a mapping of keys, not a single value" },
		{ "? [a]\n: 1\n", NAME ":1:3: a key must be a single value, not a list" },
		{ UP "{a: 1}: 2\n", NAME ":2:1: a key must be a single value, not a mapping" },
	};

	EXPECT_ERRORS(cases);
}

static void test_yaml_syntax(void **state)
{
	static const struct error_case cases[] = {
		{ "upstream:\n  address: 10.0.0.1:1\n bad: 2\n", NAME ":3:2: did not find expected key "
		  "(while parsing a block mapping started at 1:1)" },
		{ "upstream: {address: \"abc}\n", NAME ":2:1: found unexpected end of stream "
		  "(while scanning a quoted scalar started at 1:21)" },
		{ "workers: [1, 2\n", NAME ":2:1: did not find expected ',' or ']' "
		  "(while parsing a flow sequence started at 1:10)" },
		{ "\tupstream: x\n", NAME ":1:1: found character that cannot start any token "
		  "(while scanning for the next token started at 1:1)" },
		/* libyaml's reader reports an offset; it still lands on line:column */
		{ "upstream:\n  address: \xc3\x28\n", NAME ":2:13: invalid trailing UTF-8 octet" },
		{ "upstream:\n  address: \xff\n", NAME ":2:12: invalid leading UTF-8 octet" },
	};

	EXPECT_ERRORS(cases);
	/* a raw NUL byte is a control character to YAML */
	expect_error_len(UP "\0\n", sizeof(UP "\0\n") - 1,
	                 NAME ":2:1: control characters are not allowed");
}

static void test_unsupported_yaml(void **state)
{
	static const struct error_case cases[] = {
		{ "upstream: &up {address: 10.0.0.1:1}\n", NAME ":1:11: anchors (&name) are not supported" },
		{ UP "workers: *w\n", NAME ":2:10: aliases (*name) are not supported" },
		{ "upstream: !!map {address: 10.0.0.1:1}\n", NAME ":1:11: tags (!tag) are not supported" },
		{ UP "workers: !!int 4\n", NAME ":2:10: tags (!tag) are not supported" },
		{ UP "---\nworkers: 2\n", NAME ":2:1: multiple documents are not supported" },
		{ UP "...\n---\nworkers: 2\n", NAME ":3:1: multiple documents are not supported" },
		/* libyaml itself wants "---" before a document that follows "..." */
		{ UP "...\nworkers: 2\n", NAME ":3:1: did not find expected <document start>" },
	};
	struct fg_config *cfg;

	EXPECT_ERRORS(cases);
	/* one document with explicit markers and a directive is fine */
	cfg = load("%YAML 1.1\n---\n" UP "...\n");
	fg_config_unref(cfg);
}

/* Whatever a file holds, the message stays one printable line of sane length. */
static void test_hostile_values(void **state)
{
	static const struct error_case cases[] = {
		{ "upstream: {address: \"10.0.0.1:1\\0\"}\n",
		  NAME ":1:21: upstream.address must not contain a NUL byte" },
		{ "\"fo\\to\\n\": 1\n", NAME ":1:1: unknown key 'fo?o?'; valid keys: listen, workers, "
		  "upstream, limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
		{ "\"it's\": 1\n", NAME ":1:1: unknown key 'it?s'; valid keys: listen, workers, "
		  "upstream, limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
		/* cut at 48 bytes, but never inside the two bytes of the e-acute */
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9zzz: 1\n",
		  NAME ":1:1: unknown key 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'; valid keys: "
		  "listen, workers, upstream, limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture" },
		{ "x: [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]\n", NAME ":1:19: nesting deeper than 16 levels" },
	};

	EXPECT_ERRORS(cases);
}

static void test_too_many_values(void **state)
{
	size_t len = 4 + 2 * 10001 + 2;
	char *yaml = malloc(len + 1);
	size_t n = 0;

	assert_non_null(yaml);
	memcpy(yaml, "x: [", 4);
	n = 4;
	for (int i = 0; i < 10001; i++) {
		yaml[n++] = '1';
		yaml[n++] = ',';
	}
	yaml[n++] = ']';
	yaml[n++] = '\n';
	yaml[n] = '\0';
	/* root, key and list are three nodes: the 9998th item is node 10001 */
	expect_error(yaml, NAME ":1:19999: more than 10000 values");
	free(yaml);
}

static void test_too_large(void **state)
{
	size_t len = (1 << 20) + 1;
	char *yaml = malloc(len);

	assert_non_null(yaml);
	memset(yaml, '\n', len);
	expect_error_len(yaml, len, NAME ":1:1: larger than 1048576 bytes");
	/* exactly 1MiB is still read */
	expect_error_len(yaml, len - 1, NAME ":1:1: upstream.address is required");
	free(yaml);
}

static void test_error_buffer(void **state)
{
	struct fg_config *cfg;
	char err[8];

	assert_int_equal(fg_config_load_string(NAME, BASE, "x: 1", 4, &cfg, NULL, 0), FG_ECONFIG);
	assert_null(cfg);
	assert_int_equal(fg_config_load_string(NAME, BASE, "x: 1", 4, &cfg, err, 0), FG_ECONFIG);
	assert_int_equal(fg_config_load_string(NAME, BASE, "x: 1", 4, &cfg, err, sizeof(err)), FG_ECONFIG);
	assert_string_equal(err, "t.yaml:");
	assert_int_equal(fg_config_load_string(NULL, BASE, "x: 1", 4, &cfg, err, sizeof(err)), FG_ECONFIG);
	assert_string_equal(err, "<string");
}

/* --- files -------------------------------------------------------------- */

static int dir_setup(void **state)
{
	return fg_test_dir_new(state, "feedguard.yaml");
}

static int dir_teardown(void **state)
{
	return fg_test_dir_free(state);
}

static void test_load_file(void **state)
{
	static const char yaml[] = UP "log: {access_log: logs/access.log}\n";
	const struct fg_test_dir *d = *state;
	char err[FG_CONFIG_ERRLEN], want[256];
	struct fg_config *cfg;

	fg_test_write_file(d->file, yaml, sizeof(yaml) - 1);
	assert_int_equal(fg_config_load(d->file, &cfg, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_string_equal(cfg->path, d->file);
	snprintf(want, sizeof(want), "%s/logs/access.log", d->path);
	assert_string_equal(cfg->log.access_log, want);
	assert_v4(&cfg->upstream.addr, "10.0.0.1:50051", "10.0.0.1", 50051);
	fg_config_unref(cfg);
}

/* A relative config path is made absolute from the current directory. */
static void test_load_relative_path(void **state)
{
	static const char yaml[] = UP "log: {access_log: access.log}\n";
	const struct fg_test_dir *d = *state;
	char err[FG_CONFIG_ERRLEN], want[256], cwd[4096];
	struct fg_config *cfg;
	int rc;

	fg_test_write_file(d->file, yaml, sizeof(yaml) - 1);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(d->path), 0);
	rc = fg_config_load("./feedguard.yaml", &cfg, err, sizeof(err));
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, 0);
	assert_string_equal(cfg->path, d->file);
	snprintf(want, sizeof(want), "%s/access.log", d->path);
	assert_string_equal(cfg->log.access_log, want);
	fg_config_unref(cfg);
}

static void test_load_file_errors(void **state)
{
	const struct fg_test_dir *d = *state;
	char err[FG_CONFIG_ERRLEN], want[512], missing[128];
	struct fg_config *cfg;
	char *big;

	/* a config error names the file as the caller wrote it */
	fg_test_write_file(d->file, "workers: 2\nbogus: 1\n", 20);
	assert_int_equal(fg_config_load(d->file, &cfg, err, sizeof(err)), FG_ECONFIG);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s:2:1: unknown key 'bogus'; valid keys: listen, workers, "
	         "upstream, limits, timeouts, admin, metrics, log, policy, pseudonym_keys, state, capture", d->file);
	assert_string_equal(err, want);

	snprintf(missing, sizeof(missing), "%s/missing.yaml", d->path);
	assert_int_equal(fg_config_load(missing, &cfg, err, sizeof(err)), FG_EIO);
	assert_int_equal(errno, ENOENT);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", missing);
	assert_string_equal(err, want);

	assert_int_equal(fg_config_load(d->path, &cfg, err, sizeof(err)), FG_EIO);
	assert_int_equal(errno, EINVAL);
	snprintf(want, sizeof(want), "%s: cannot open: not a regular file (a FIFO, a socket, a device or a directory)", d->path);
	assert_string_equal(err, want);

	big = malloc((1 << 20) + 10);
	assert_non_null(big);
	memset(big, '#', (1 << 20) + 10);
	fg_test_write_file(d->file, big, (1 << 20) + 10);
	free(big);
	assert_int_equal(fg_config_load(d->file, &cfg, err, sizeof(err)), FG_ECONFIG);
	snprintf(want, sizeof(want), "%s:1:1: larger than 1048576 bytes", d->file);
	assert_string_equal(err, want);
}

/* --- snapshots ---------------------------------------------------------- */

static void test_refcount(void **state)
{
	struct fg_config *cfg = load(UP);

	assert_ptr_equal(fg_config_ref(cfg), cfg);
	assert_int_equal(cfg->refcount, 2);
	fg_config_unref(cfg);
	assert_int_equal(cfg->refcount, 1);
	assert_string_equal(cfg->upstream.addr.text, "10.0.0.1:50051");
	fg_config_unref(cfg);   /* frees: valgrind and ASan would see a leak otherwise */
	fg_config_unref(NULL);
}

static void expect_reload(const char *cur_yaml, const char *next_yaml, int rc, const char *want)
{
	struct fg_config *cur = load(cur_yaml), *next = load(next_yaml);
	char err[FG_CONFIG_ERRLEN] = "unset";

	assert_int_equal(fg_config_reload_check(cur, next, err, sizeof(err)), rc);
	assert_string_equal(err, want);
	fg_config_unref(cur);
	fg_config_unref(next);
}

static void test_reload_check(void **state)
{
	const char *listen_msg = "listen cannot change on reload; restart the daemon";
	const char *workers_msg = "workers cannot change on reload; restart the daemon";
	const char *admin_msg = "admin.listen cannot change on reload; restart the daemon";
	const char *methods_msg = "metrics.methods cannot change on reload; restart the daemon";

	expect_reload(UP, UP, 0, "");
	/* what a reload is for */
	expect_reload(UP, "upstream: {address: 10.0.0.2:1}\nlimits: {max_concurrent_streams: 5}\n"
	              "log: {level: debug, access_log: a.log}\ntimeouts: {drain: 1s}\n", 0, "");
	expect_reload(UP, UP "listen: \"*:8080\"\nworkers: auto\nadmin: {listen: 127.0.0.1:9901}\n",
	              0, "");
	expect_reload(UP "admin: {listen: off}\n", UP "admin: {listen: off}\n", 0, "");
	expect_reload(UP, UP "limits: {connection_buffer: 256KiB, worker_buffer: 1GiB}\n", 0, "");

	expect_reload(UP, UP "listen: \"*:8081\"\n", FG_ECONFIG, listen_msg);
	expect_reload(UP, UP "listen: [\"*:8080\", \"*:8081\"]\n", FG_ECONFIG, listen_msg);
	expect_reload(UP "listen: [\"*:1\", \"*:2\"]\n", UP "listen: [\"*:2\", \"*:1\"]\n",
	              FG_ECONFIG, listen_msg);
	/* compared as written: the same address spelled differently is a change */
	expect_reload(UP, UP "listen: 0.0.0.0:8080\n", FG_ECONFIG, listen_msg);
	expect_reload(UP, UP "workers: 2\n", FG_ECONFIG, workers_msg);
	expect_reload(UP "workers: 2\n", UP "workers: 3\n", FG_ECONFIG, workers_msg);
	expect_reload(UP, UP "admin: {listen: off}\n", FG_ECONFIG, admin_msg);
	expect_reload(UP "admin: {listen: off}\n", UP, FG_ECONFIG, admin_msg);
	expect_reload(UP, UP "admin: {listen: 127.0.0.1:9902}\n", FG_ECONFIG, admin_msg);
	expect_reload(UP "metrics: {methods: [/a/B, /a/C]}\n", UP "metrics: {methods: [/a/B, /a/C]}\n",
	              0, "");
	expect_reload(UP, UP "metrics: {methods: [/a/B]}\n", FG_ECONFIG, methods_msg);
	expect_reload(UP "metrics: {methods: [/a/B, /a/C]}\n", UP "metrics: {methods: [/a/C, /a/B]}\n",
	              FG_ECONFIG, methods_msg);
	/* the first key that differs is named */
	expect_reload(UP, UP "listen: \"*:1\"\nworkers: 2\nadmin: {listen: off}\n", FG_ECONFIG, listen_msg);
	expect_reload(UP, UP "workers: 2\nadmin: {listen: off}\n", FG_ECONFIG, workers_msg);
}

/* A policy or key file that cannot be read is an error of the config, at
 * the key that names it (errors inside a policy carry its own position). */
static void test_policy_and_keys_errors(void **state)
{
	char want[FG_CONFIG_ERRLEN];

	snprintf(want, sizeof(want), NAME ":2:9: policy: %s/nope.yaml: cannot open: No such file or directory",
	         BASE);
	expect_error(UP "policy: nope.yaml\n", want);
	expect_error(UP "policy: [a]\n", NAME ":2:9: policy must be the path of a policy file, not a list");
	snprintf(want, sizeof(want), NAME ":3:20: pseudonym_keys: %s/k.key: cannot open: No such file or directory",
	         BASE);
	expect_error(UP "pseudonym_keys:\n  - {id: k1, file: k.key}\n", want);
	/* a path quoted in the key file's reason stays one line */
	snprintf(want, sizeof(want), NAME ":3:20: pseudonym_keys: %s/k?x.key: cannot open: No such file or directory",
	         BASE);
	expect_error(UP "pseudonym_keys:\n  - {id: k1, file: \"k\\nx.key\"}\n", want);
	snprintf(want, sizeof(want), NAME ":2:9: policy: %s/p?q.yaml: cannot open: No such file or directory", BASE);
	expect_error(UP "policy: \"p\\rq.yaml\"\n", want);
	expect_error(UP "pseudonym_keys: []\n",
	             NAME ":2:17: pseudonym_keys must be a list of {id, file}, newest first");
	expect_error(UP "pseudonym_keys:\n  - {id: k1}\n",
	             NAME ":3:5: pseudonym_keys: each entry is {id: NAME, file: PATH}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_listen_forms),
		cmocka_unit_test(test_listen_sixteen),
		cmocka_unit_test(test_workers),
		cmocka_unit_test(test_admin),
		cmocka_unit_test(test_log_level),
		cmocka_unit_test(test_metrics_methods),
		cmocka_unit_test(test_access_log),
		cmocka_unit_test(test_empty_documents),
		cmocka_unit_test(test_required),
		cmocka_unit_test(test_listen_errors),
		cmocka_unit_test(test_upstream_address_errors),
		cmocka_unit_test(test_limits_errors),
		cmocka_unit_test(test_duration_errors),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_yaml_syntax),
		cmocka_unit_test(test_unsupported_yaml),
		cmocka_unit_test(test_hostile_values),
		cmocka_unit_test(test_policy_and_keys_errors),
		cmocka_unit_test(test_too_many_values),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test_setup_teardown(test_load_file, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_load_relative_path, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_load_file_errors, dir_setup, dir_teardown),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_reload_check),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
