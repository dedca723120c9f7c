/*
 * fg_config.h - the daemon's configuration: a YAML file turned into an
 * immutable, reference-counted snapshot.
 *
 * A snapshot is built whole by fg_config_load() and never changed after.
 * Threads share it read-only; each holder takes a reference with
 * fg_config_ref() and gives it back with fg_config_unref().  The last unref
 * frees it, on whatever thread that happens.
 *
 * Every error names the place in the file as "file:line:column: message"
 * (line and column 1-based, as editors count), so an operator can jump to it.
 * Unknown keys, wrong types, bad values and duplicate keys are errors;
 * nothing is ignored.  The file is one YAML document (at most 1MiB) whose
 * top level is a mapping; anchors, aliases and tags are refused, so what a
 * reviewer reads is what the daemon gets.  Values are read as text whatever
 * their YAML style: `workers: 4` and `workers: "4"` mean the same.
 * Durations and sizes always carry a unit (fg_units.h): "5s", "64KiB".
 *
 * Keys a reload cannot change (see fg_config_reload_check) are those that
 * shape sockets, threads and metric label sets: listen, workers,
 * admin.listen, metrics.methods.
 */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* configure's sysconfdir (Makefile.am passes it): the default config is
 * where `make install` put the example and where the unit and the manual
 * pages look, /usr/local/etc/feedguard/ under a plain ./configure, not an
 * /etc/feedguard/ nothing installed into. */
#ifndef FG_SYSCONFDIR
#define FG_SYSCONFDIR "/etc"
#endif
#define FG_CONFIG_DEFAULT_PATH FG_SYSCONFDIR "/feedguard/feedguard.yaml"
/* What the package installs beside it; feedguardd points at it when the
 * default config does not exist yet. */
#define FG_CONFIG_EXAMPLE_PATH FG_SYSCONFDIR "/feedguard/feedguard.example.yaml"
#define FG_CONFIG_MAX_LISTEN 16
#define FG_CONFIG_ERRLEN 512
#define FG_CONFIG_MAX_METHODS 64

struct fg_policy;
struct fg_keyring;

/* A "host:port" from the file, resolved to a socket address (numeric hosts
 * only for upstream and admin: a blocking resolver has no place in a worker).
 * IPv6 is written in brackets: "[::1]:8080".  For listen, "localhost"
 * (127.0.0.1) and "*" (0.0.0.0, every IPv4 address) are also accepted.
 * Port 0 (the kernel picks) is accepted for listen and admin, not upstream. */
struct fg_config_addr {
	char text[128];                 /* as written, for logs and messages */
	struct sockaddr_storage sa;     /* resolved address, port in it */
	socklen_t salen;                /* length of <sa> */
};

enum fg_log_level {
	FG_LOG_DEBUG = 0,
	FG_LOG_INFO,
	FG_LOG_WARN,
	FG_LOG_ERROR,
};

struct fg_config {
	int refcount;                   /* only through __atomic builtins; see fg_config_ref() */
	char *path;                     /* absolute path of the file it came from */

	/* listen: one "host:port" or a list of 1..FG_CONFIG_MAX_LISTEN of them
	 * (h2c), no address twice; default "*:8080".  Not reloadable. */
	struct fg_config_addr listen[FG_CONFIG_MAX_LISTEN];
	int nlisten;                    /* entries used in <listen>, >= 1 */

	/* workers: "auto" (0 here: one per CPU this process may use, see
	 * fg_cpu_count) or 1..1024; default auto.  Not reloadable. */
	int workers;

	struct {
		struct fg_config_addr addr;     /* upstream.address, required; numeric host, port >= 1 */
		int64_t connect_timeout_us;     /* upstream.connect_timeout, 1ms..1h, default 2s */
		int max_connections;            /* upstream.max_connections per worker, 1..1024, default 8 */
		int max_pending;                /* upstream.max_pending, calls queued per worker waiting for a stream slot, 0..1000000 (0: fail at once), default 1024 */
		int64_t keepalive_time_us;      /* upstream.keepalive_time, 10s..24h (gRPC's own floor), default 5m (gRPC servers strike pings more often than that) */
		int64_t keepalive_timeout_us;   /* upstream.keepalive_timeout, 1ms..1h, default 20s */
		int64_t backoff_initial_us;     /* upstream.backoff_initial, 1ms..1h, default 100ms */
		int64_t backoff_max_us;         /* upstream.backoff_max, 1ms..24h and >= backoff_initial, default 10s */
	} upstream;

	struct {
		uint32_t max_concurrent_streams;   /* limits.max_concurrent_streams per client connection, integer 1..2^31-1, default 1000 */
		uint32_t max_header_list_size;     /* limits.max_header_list_size, 1KiB..2^32-1 bytes, default 64KiB */
		uint64_t max_message_size;         /* limits.max_message_size (intercepted calls only), 1B..2^32-1 bytes (gRPC's 32-bit length), default 4MiB */
		uint32_t stream_window;            /* limits.stream_window, HTTP/2 window per stream, 65535B..2^31-1 bytes (RFC 9113 section 6.9.1), default 1MiB */
		uint32_t connection_window;        /* limits.connection_window, same range, default 16MiB */
		int max_connections;               /* limits.max_connections per worker, integer 1..2^31-1, default 100000 */
		uint64_t connection_buffer;        /* limits.connection_buffer, bytes one client connection's intercepted
		                                      calls may hold (messages being assembled, bytes waiting to be edited,
		                                      edited output the peer has not taken), 64KiB..2^32-1, default 1MiB */
		uint64_t worker_buffer;            /* limits.worker_buffer, the same over all of one worker's connections,
		                                      1MiB..2^63-1 bytes, default 64MiB */
	} limits;

	struct {
		int64_t idle_us;                /* timeouts.idle: a client connection with no stream for this long is closed, 1s..24h, default 5m */
		int64_t drain_us;               /* timeouts.drain: the longest a graceful stop waits for calls, 0s..1h, default 30s */
		int64_t readiness_delay_us;     /* timeouts.readiness_delay: /readyz is 503 this long before draining, 0s..1h, default 0s */
		int64_t write_us;               /* timeouts.write: a client socket that takes no byte for this long
		                                   while output waits is closed, 10ms..1h, default 30s */
		int64_t stalled_stream_us;      /* timeouts.stalled_stream: a client stream whose windows stay shut
		                                   on queued response bytes this long is reset, 10ms..24h, default 5m */
		int64_t stalled_overloaded_us;  /* timeouts.stalled_stream_overloaded: the same while the worker
		                                   holds more than limits.worker_buffer (the shorter one applies),
		                                   10ms..24h, default 5s */
	} timeouts;

	struct {
		int enabled;                    /* 0 when admin.listen is "off" */
		struct fg_config_addr listen;   /* admin.listen, numeric host, default 127.0.0.1:9901.  Not reloadable. */
	} admin;

	/* metrics.methods: full gRPC method paths ("/pkg.Service/Method") that get
	 * their own method label; every other call counts as "other", so clients
	 * cannot grow the label set.  A list (default empty) of at most
	 * FG_CONFIG_MAX_METHODS paths, none twice; each is "/" service "/" method
	 * with a service of [A-Za-z0-9_.] and a method of [A-Za-z0-9_], as gRPC
	 * writes :path.  Not reloadable (the label slots are fixed for the life
	 * of the process). */
	struct {
		char *methods[FG_CONFIG_MAX_METHODS];  /* owned by the snapshot */
		unsigned line[FG_CONFIG_MAX_METHODS];   /* where each is written, for the check */
		unsigned col[FG_CONFIG_MAX_METHODS];    /* against the policy's descriptor set */
		int nmethods;                           /* entries used in <methods> */
	} metrics;

	/* policy: the policy file, compiled with the descriptor set it names
	 * (fg_policy_compile.h).  NULL: no policy, every call passes through.
	 * Reloadable: calls in flight keep the snapshot (and policy) they
	 * started with. */
	char *policy_path;
	struct fg_policy *policy;

	/* pseudonym_keys: the key ring for pseudonymous user keys, newest
	 * first, each {id, file}.  Reloadable: add a new key first in the list
	 * and keep the old ones until their state expires. */
	struct fg_keyring *keyring;

	/* state: where the screen-time state lives (Redis), and how long a
	 * call may wait for it.  Reloadable: each worker reconnects with the
	 * new settings. */
	struct {
		int enabled;                    /* the file has state.redis */
		char *redis;                    /* state.redis: "ip:port", "[ipv6]:port" or an absolute unix socket path */
		char *password_file;            /* state.password_file, absolute; NULL: no AUTH */
		int db;                         /* state.db, 0..1000000, default 0 */
		char *key_prefix;               /* state.key_prefix, 1..64 of [A-Za-z0-9:_.-], default "fg:" */
		int64_t timeout_us;             /* state.timeout, per operation, 1ms..10s, default 20ms */
		int64_t connect_timeout_us;     /* state.connect_timeout, 1ms..1h, default 500ms */
		int64_t stall_timeout_us;       /* state.stall_timeout, >= timeout, 1ms..1h, default 500ms */
		int max_pending;                /* state.max_pending per worker, 1..1000000, default 1024 */
		int64_t backoff_initial_us;     /* state.backoff_initial, 1ms..1h, default 100ms */
		int64_t backoff_max_us;         /* state.backoff_max, >= backoff_initial, 1ms..24h, default 5s */
	} state;

	/* capture: traffic capture for researchers (fg_capture.h).  Reloadable:
	 * new calls use the new settings; the writer applies a new directory
	 * or key at its next file. */
	struct {
		int enabled;                    /* the file has capture.directory */
		char *directory;                /* capture.directory, absolute, an existing writable directory */
		struct fg_keyring *key;         /* capture.key {id, file}: one key, not one of pseudonym_keys */
		double sample;                  /* capture.sample, share of users 0..1, default 0.01 */
		char **methods;                 /* capture.methods: policy method paths; NULL: all of them */
		size_t nmethods;
		uint64_t rotate_size;           /* capture.rotate_size, 64KiB..64GiB, default 256MiB */
		int64_t rotate_age_us;          /* capture.rotate_age, 1s..7d, default 1h */
		int64_t max_age_us;             /* capture.max_age, 1m..3660d or off (0), default 30d */
		uint64_t max_total_size;        /* capture.max_total_size, >= 1MiB or off (0), default off */
		uint64_t queue;                 /* capture.queue, bytes held in all, 1MiB..64GiB, default 64MiB */
		uint64_t max_record_size;       /* capture.max_record_size, 4KiB..64MiB and <= queue, default 4MiB */
		char **metadata;                /* capture.metadata: lowercase names, at most 32, no credentials */
		size_t nmetadata;
	} capture;

	struct {
		enum fg_log_level level;        /* log.level: debug, info, warn, error; default info */
		char *access_log;               /* log.access_log: "off" (NULL here, the default), "-" (stderr) or a path, made absolute against the config file's directory */
	} log;
};

struct fg_state_redis_config;

/* Bounds of capture.methods and capture.metadata. */
#define FG_CONFIG_CAPTURE_MAX_METHODS 64
#define FG_CONFIG_CAPTURE_MAX_METADATA 32

/* fg_config_capture_method - 1 when <cfg> captures calls of method <path>
 * (capture on, and the method in capture.methods or that list absent). */
int fg_config_capture_method(const struct fg_config *cfg, const char *path);

/*
 * fg_config_state_redis - <cfg>'s state section as the settings of a Redis
 * state backend (fg_state_redis.h) into <out>: strings borrowed from
 * <cfg>, callbacks left NULL for the caller.  The daemon's workers and
 * feedguardctl build their links from it, so they cannot drift apart.
 */
void fg_config_state_redis(const struct fg_config *cfg, struct fg_state_redis_config *out);

/*
 * fg_config_load - read and validate the YAML file at <path>.
 * Relative paths inside the file are made relative to the file's own
 * directory (as named: symlinks are not resolved, so a Kubernetes ConfigMap
 * mount keeps working).  On success stores a new snapshot with refcount 1
 * in <*out> (returned owned: release with fg_config_unref) and returns 0.
 * On failure leaves <*out> NULL, writes a message into <err> (<errlen>
 * bytes, NUL-terminated; <err> may be NULL) and returns:
 *   FG_ECONFIG  the file is invalid: "file:line:column: message";
 *   FG_EIO      the file cannot be opened or read: "file: cannot open: <strerror>"
 *               (or "cannot read"), errno set;
 *   FG_ENOMEM   allocation failed: "file: out of memory".
 * Blocks on file I/O; safe on any thread (it touches no global state).
 */
int fg_config_load(const char *path, struct fg_config **out, char *err, size_t errlen);

/* <flags> of fg_config_load_flags. */
#define FG_CONFIG_LOAD_NO_POLICY 0x1u  /* the policy key is read, its file is not: <policy> stays NULL */
#define FG_CONFIG_LOAD_DAEMON 0x2u     /* feedguardd's own load (-t, start, reload): also check that
                                          a log.access_log file can be written, which the tools
                                          that read the config never write */

/*
 * fg_config_load_flags - fg_config_load with <flags>.  FG_CONFIG_LOAD_NO_POLICY
 * is for tools that need the rest of the file when the policy does not
 * compile (feedguardctl: a typo in the policy must not block a user's
 * erasure); the checks that need the policy (capture.methods, keys or state
 * the policy asks for) are skipped, so such a snapshot never serves calls.
 * FG_CONFIG_LOAD_DAEMON is feedguardd's.
 */
int fg_config_load_flags(const char *path, unsigned flags, struct fg_config **out, char *err, size_t errlen);

/*
 * fg_config_load_string - as fg_config_load, from <len> bytes at <text>
 * (borrowed, need not be NUL-terminated; NULL only with <len> 0).  <name>
 * is the file name in messages (NULL: "<string>"); the snapshot's path is
 * <name> made absolute against <basedir>.  <basedir> resolves relative paths
 * (NULL: the current directory).  Returns 0, FG_ECONFIG or FG_ENOMEM as
 * fg_config_load.  For tests and the fuzzer.
 */
int fg_config_load_string(const char *name, const char *basedir, const char *text, size_t len,
                          struct fg_config **out, char *err, size_t errlen);

/* fg_config_ref - take a reference on <cfg> (not NULL), which the caller
 * must already hold; returns <cfg>.  Any thread. */
struct fg_config *fg_config_ref(struct fg_config *cfg);

/* fg_config_unref - drop a reference; frees on the last one.  NULL is a no-op.  Any thread. */
void fg_config_unref(struct fg_config *cfg);

/*
 * fg_config_reload_check - 0 if <next> may replace <cur> on a live daemon.
 * Otherwise FG_ECONFIG with a message in <err> naming the first key that a
 * reload cannot change, checked in the order listen (count and text as
 * written), workers, admin.listen (enabled, then text), metrics.methods
 * (count, then each path in order): for example
 * "listen cannot change on reload; restart the daemon".  Addresses are
 * compared as written, so "*:8080" to "0.0.0.0:8080" is a change.
 * On success <err> is set to "".  Any thread.
 */
int fg_config_reload_check(const struct fg_config *cur, const struct fg_config *next,
                           char *err, size_t errlen);

/* What fg_config_keys_each says about a key, in its <flags>. */
#define FG_CONFIG_KEY_SECTION 0x1       /* a top-level key whose value is a mapping of the keys
                                           that follow it ("upstream"); 0: a key with a value */

/* fg_config_keys_each's callback: <path> is valid during the call only. */
typedef void (*fg_config_key_cb)(const char *path, unsigned flags, void *arg);

/*
 * fg_config_keys_each - call <cb>(path, flags, <arg>) once for every key
 * the loader accepts, named as the README's reference tables name it: a
 * top-level key by its name ("listen", "pseudonym_keys"), a key of a
 * section's mapping as "section.key" ("upstream.connect_timeout").  A
 * section whose value is a mapping comes first, with
 * FG_CONFIG_KEY_SECTION, then each of its keys.  The values of a key
 * (pseudonym_keys' {id, file} entries) are not keys: the key's own
 * parser reads them.  It walks the loader's own tables, in their order,
 * so what it lists is what a file may say (tests/unit/test_reference.c
 * checks the README against it).  Allocates nothing; any thread.
 */
void fg_config_keys_each(fg_config_key_cb cb, void *arg);

#endif /* FG_CONFIG_H */
