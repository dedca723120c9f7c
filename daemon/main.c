/*
 * main.c - feedguardd: flags, signals, start and stop of the workers.
 * Nothing else lives here: every job has its own module (see README's tour).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "fg_admin.h"
#include "fg_alloc.h"
#include "fg_capture.h"
#include "fg_config.h"
#include "fg_cpu.h"
#include "fg_error.h"
#include "fg_listener.h"
#include "fg_log.h"
#include "fg_notify.h"
#include "fg_policy-t.h"
#include "fg_worker.h"

#define MAX_WORKERS 1024

/* Everything the main thread owns; workers see none of it. */
struct daemon {
	const char *config_path;
	struct fg_config *cfg;              /* the snapshot new workers and reloads start from */
	struct fg_worker *workers[MAX_WORKERS];
	int nworkers;
	int workers_running;                /* workers whose loop has run (FG_WORKER_NOTE_RUNNING) */
	unsigned ready;                     /* READY=1 was sent: reloads report to the service manager */
	int workers_done;
	int note_fd[2];                     /* workers write enum fg_worker_note bytes here */
	struct event_base *base;
	struct event *note_ev;
	struct event *drain_ev;             /* readiness delay before the drain starts */
	struct event *reload_ev;            /* made active by SIGHUP: one reload per loop turn */
	unsigned stopping;                  /* a stop began: /readyz answers 503 */
	struct fg_metrics_process proc;     /* reload counters, times */
	struct fg_metrics *blocks[MAX_WORKERS];   /* each worker's metrics, for the admin endpoint */
	struct fg_admin *admin;
	struct fg_admin_source admin_src;
	struct fg_capture *capture;         /* the capture writer (idle while capture is off) */
};

static double unix_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: feedguardd [-c FILE] [-t]\n"
	        "  -c, --config FILE  configuration file (default " FG_CONFIG_DEFAULT_PATH ")\n"
	        "  -t, --test         check the configuration and exit (0: valid, 1: invalid)\n"
	        "  -v, --version      print the version and exit\n"
	        "  -h, --help         print this help and exit\n"
	        "Signals: SIGHUP reloads the configuration; SIGUSR1 starts new capture files;\n"
	        "SIGTERM or SIGINT drains and exits (a second one exits at once).\n"
	        "With NOTIFY_SOCKET set (systemd Type=notify) it reports readiness there.\n");
}

/* File descriptors: each client and upstream connection needs one; the
 * soft default of 1024 is far too low for a proxy. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			fg_log(FG_LOG_WARN, "rlimit_nofile", "why=\"%s\"", strerror(errno));
	}
}

/* Tell the service manager (systemd, Type=notify) where the daemon is.  A
 * failure is logged and changes nothing: the daemon serves either way. */
static void notify(const char *state)
{
	char why[256];

	if (fg_notify_send(state, why, sizeof(why)) < 0)
		fg_log(FG_LOG_WARN, "notify_failed", "why=\"%s\"", why);
}

static void broadcast(struct daemon *d, enum fg_worker_cmd cmd)
{
	int i;

	for (i = 0; i < d->nworkers; i++)
		fg_worker_send(d->workers[i], cmd, NULL);
}

/* The policy's id (what captured calls carry), "-" without a policy. */
static const char *policy_id(const struct fg_config *cfg)
{
	return cfg->policy ? cfg->policy->id : "-";
}

static void reload(struct daemon *d)
{
	struct fg_config *next;
	char err[FG_CONFIG_ERRLEN], q[FG_CONFIG_ERRLEN + 16], why[256], state[FG_NOTIFY_MAX];
	/* Before the first READY=1 a reload says nothing: READY=1 now would
	 * tell systemd the start is done while workers are still starting;
	 * nor during a stop (a logrotate's SIGHUP), which READY=1 would undo. */
	int report = d->ready && !d->stopping;
	int i;

	if (report && fg_notify_reloading("reloading", why, sizeof(why)) < 0)
		fg_log(FG_LOG_WARN, "notify_failed", "why=\"%s\"", why);
	if (fg_config_load_flags(d->config_path, FG_CONFIG_LOAD_DAEMON, &next, err, sizeof(err)) < 0 ||
	    (fg_config_reload_check(d->cfg, next, err, sizeof(err)) < 0 && (fg_config_unref(next), 1))) {
		d->proc.reload_failures++;
		fg_log(FG_LOG_ERROR, "reload_failed", "error=%s", fg_log_quote(q, sizeof(q), err));
		if (report) {   /* still ready: the old config serves on */
			snprintf(state, sizeof(state), "READY=1\nSTATUS=serving; reload failed: %s", q);
			notify(state);
		}
		return;
	}
	/* Each worker gets its own reference, handed over on its own loop. */
	for (i = 0; i < d->nworkers; i++)
		if (fg_worker_send(d->workers[i], FG_WORKER_CMD_CONFIG, fg_config_ref(next)) < 0)
			fg_config_unref(next);
	fg_config_unref(d->cfg);
	d->cfg = next;
	if (fg_capture_configure(d->capture, next) < 0)
		fg_log(FG_LOG_ERROR, "capture_failed", "what=configure error=\"cannot start the writer\"");
	d->proc.reloads++;
	d->proc.last_reload_success = unix_now();
	/* Logged before the new level applies, so a reload that quiets the log
	 * still says it happened. */
	fg_log(FG_LOG_INFO, "reloaded", "config=%s policy_id=%s", d->config_path, policy_id(next));
	fg_log_set_level(next->log.level);
	if (report)
		notify("READY=1\nSTATUS=serving; reloaded");
}

static void drain_now_cb(evutil_socket_t fd, short what, void *arg)
{
	broadcast(arg, FG_WORKER_CMD_DRAIN);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct timeval tv;
	int64_t delay;

	if (sig == SIGHUP) {
		/* libevent runs this once per signal caught: the SIGHUPs of one
		 * burst (a loop over kill, logrotate and an operator at once) make
		 * one reload, after them, instead of one each */
		if (d->reload_ev)
			event_active(d->reload_ev, EV_TIMEOUT, 0);
		else
			reload(d);
		return;
	}
	if (sig == SIGUSR1) {
		/* logrotate moved the files: the next record starts a new one */
		fg_capture_reopen(d->capture);
		fg_log(FG_LOG_INFO, "capture_reopen", "signal=%d", (int)sig);
		return;
	}
	if (d->stopping) {
		fg_log(FG_LOG_WARN, "exit_now", "signal=%d", (int)sig);
		_exit(1);
	}
	d->stopping = 1;
	notify("STOPPING=1\nSTATUS=draining");
	delay = d->cfg->timeouts.readiness_delay_us;
	fg_log(FG_LOG_INFO, "draining", "signal=%d readiness_delay_us=%lld", (int)sig, (long long)delay);
	tv.tv_sec = (time_t)(delay / 1000000);
	tv.tv_usec = (suseconds_t)(delay % 1000000);
	d->drain_ev = evtimer_new(d->base, drain_now_cb, d);
	if (d->drain_ev)
		evtimer_add(d->drain_ev, &tv);
	else
		broadcast(d, FG_WORKER_CMD_DRAIN);
}

/* Every worker takes connections: say so once, in the log and to the
 * service manager (before this, connections wait in the listen backlog). */
static void all_running(struct daemon *d)
{
	char state[128];

	fg_log(FG_LOG_INFO, "ready", "workers=%d pid=%ld allocator=\"%s\" policy_id=%s", d->nworkers,
	       (long)getpid(), fg_alloc_name(), policy_id(d->cfg));
	snprintf(state, sizeof(state), "READY=1\nSTATUS=serving with %d workers", d->nworkers);
	notify(state);
	d->ready = 1;
}

static void note_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	char buf[64];
	ssize_t n, i;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (i = 0; i < n; i++) {
			if (buf[i] == FG_WORKER_NOTE_DONE)
				d->workers_done++;
			else if (buf[i] == FG_WORKER_NOTE_RUNNING && ++d->workers_running == d->nworkers &&
			         !d->stopping)
				all_running(d);
		}
	}
	if (d->workers_done >= d->nworkers)
		event_base_loopbreak(d->base);
}

static int start_workers(struct daemon *d)
{
	static int fds[MAX_WORKERS * FG_CONFIG_MAX_LISTEN];
	struct fg_config_addr bound[FG_CONFIG_MAX_LISTEN];
	char err[FG_CONFIG_ERRLEN];
	int n = d->cfg->workers ? d->cfg->workers : fg_cpu_count();
	int i;

	if (n > MAX_WORKERS)
		n = MAX_WORKERS;
	if (fg_listener_open(d->cfg, n, fds, bound, err, sizeof(err)) < 0) {
		fg_log(FG_LOG_ERROR, "listen_failed", "error=\"%s\"", err);
		return -1;
	}
	for (i = 0; i < d->cfg->nlisten; i++)
		fg_log(FG_LOG_INFO, "listening", "addr=%s workers=%d", bound[i].text, n);
#ifdef FG_TEST_HOOKS
	fg_log(FG_LOG_WARN, "test_hooks", "why=\"built with --enable-test-hooks: clients can set the time "
	       "screen-time rules see (feedguard-test-now); never deploy this build\"");
#endif
	for (i = 0; i < n; i++) {
		struct fg_worker *w = fg_worker_new(i, d->cfg, fds + i * d->cfg->nlisten, d->cfg->nlisten, d->capture,
		                                    err, sizeof(err));
		if (!w) {
			fg_log(FG_LOG_ERROR, "worker_failed", "error=\"%s\"", err);
			for (i = (i + 1) * d->cfg->nlisten; i < n * d->cfg->nlisten; i++)
				close(fds[i]);
			return -1;
		}
		w->note_fd = d->note_fd[1];
		d->blocks[d->nworkers] = &w->metrics;
		d->workers[d->nworkers++] = w;
		if (fg_worker_start(w) < 0) {
			fg_log(FG_LOG_ERROR, "worker_failed", "error=\"cannot start thread\"");
			return -1;
		}
	}
	return 0;
}

/* Right after a package install there is an example and no config yet:
 * say what to do rather than only "cannot open". */
static void hint_example(const char *path)
{
	if (strcmp(path, FG_CONFIG_DEFAULT_PATH) == 0 && access(path, F_OK) < 0 && errno == ENOENT &&
	    access(FG_CONFIG_EXAMPLE_PATH, R_OK) == 0)
		fprintf(stderr, "feedguardd: no configuration yet: copy %s to %s and set upstream.address "
		        "(README, \"Installing and running as a service\")\n", FG_CONFIG_EXAMPLE_PATH, path);
}

static int parse_args(int argc, char **argv, const char **path, int *test_only)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "test", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'v' },      { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': *path = optarg; break;
		case 't': *test_only = 1; break;
		case 'v':
			printf("feedguardd %s (nghttp2 %s, libevent %s, %s)\n", PACKAGE_VERSION,
			       nghttp2_version(0)->version_str, event_get_version(), fg_alloc_name());
#ifdef FG_TEST_HOOKS
			printf("test hooks: ON (the request header feedguard-test-now sets a call's time; "
			       "never deploy this build)\n");
#endif
			exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "feedguardd: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	return 0;
}

static int start_admin(struct daemon *d)
{
	struct fg_config_addr bound;
	char err[FG_CONFIG_ERRLEN];

	if (!d->cfg->admin.enabled)
		return 0;
	d->admin_src.cfg = &d->cfg;
	d->admin_src.blocks = d->blocks;
	d->admin_src.nblocks = &d->nworkers;
	d->admin_src.proc = &d->proc;
	d->admin_src.not_ready = &d->stopping;
	d->admin_src.accept_paused = &d->proc.admin_accept_paused;
	d->admin = fg_admin_new(d->base, &d->cfg->admin.listen, &d->admin_src, &bound, err, sizeof(err));
	if (!d->admin) {
		fg_log(FG_LOG_ERROR, "admin_failed", "error=\"%s\"", err);
		return -1;
	}
	fg_log(FG_LOG_INFO, "admin_listening", "addr=%s", bound.text);
	return 0;
}

/* Memory a burst left free goes back to the system (fg_alloc.h). */
static void release_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fg_alloc_release();
}

static void reload_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	reload(arg);
}

static void run(struct daemon *d)
{
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGUSR1 };
	struct event *sev[4] = { NULL };
	struct timeval every = { FG_ALLOC_RELEASE_EVERY_S, 0 };
	struct event *release;
	size_t i;

	for (i = 0; i < 4; i++) {
		sev[i] = evsignal_new(d->base, sigs[i], signal_cb, d);
		if (sev[i])
			evsignal_add(sev[i], NULL);
	}
	d->note_ev = event_new(d->base, d->note_fd[0], EV_READ | EV_PERSIST, note_cb, d);
	event_add(d->note_ev, NULL);
	d->reload_ev = event_new(d->base, -1, 0, reload_cb, d);
	release = FG_ALLOC_RELEASE_EVERY_S ? event_new(d->base, -1, EV_PERSIST, release_cb, NULL) : NULL;
	if (release)
		event_add(release, &every);
	event_base_dispatch(d->base);
	if (release)
		event_free(release);
	for (i = 0; i < 4; i++)
		if (sev[i])
			event_free(sev[i]);
	if (d->reload_ev)
		event_free(d->reload_ev);
	d->reload_ev = NULL;
}

int main(int argc, char **argv)
{
	struct daemon d = { .config_path = FG_CONFIG_DEFAULT_PATH, .note_fd = { -1, -1 } };
	char err[FG_CONFIG_ERRLEN];
	int test_only = 0, rv = 1, i;

	fg_alloc_setup();
	if (parse_args(argc, argv, &d.config_path, &test_only) < 0)
		return 2;
	if (fg_config_load_flags(d.config_path, FG_CONFIG_LOAD_DAEMON, &d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		hint_example(d.config_path);
		return 1;
	}
	if (test_only) {
		fprintf(stderr, "feedguardd: %s: configuration ok\n", d.config_path);
		fg_config_unref(d.cfg);
		return 0;
	}
	fg_log_set_level(d.cfg->log.level);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	d.base = event_base_new();
	if (!d.base || pipe2(d.note_fd, O_CLOEXEC | O_NONBLOCK) < 0)
		goto out;
	d.proc.start_time = d.proc.last_reload_success = unix_now();
	if (fg_capture_new(&d.capture, MAX_WORKERS) < 0 || fg_capture_configure(d.capture, d.cfg) < 0) {
		fg_log(FG_LOG_ERROR, "capture_failed", "what=start error=\"cannot start the writer\"");
		goto out;
	}
	d.proc.capture = fg_capture_counters(d.capture);
	if (start_admin(&d) == 0 && start_workers(&d) == 0) {
		run(&d);
		rv = 0;
	} else {
		broadcast(&d, FG_WORKER_CMD_STOP);
	}
	for (i = 0; i < d.nworkers; i++)
		fg_worker_join(d.workers[i]);
	fg_capture_free(d.capture);     /* after the workers: it writes what they queued */
	d.capture = NULL;
	fg_log(FG_LOG_INFO, "exit", "status=%d reloads=%llu reload_failures=%llu", rv,
	       (unsigned long long)d.proc.reloads, (unsigned long long)d.proc.reload_failures);
out:
	fg_capture_free(d.capture);
	fg_admin_free(d.admin);
	if (d.note_ev)
		event_free(d.note_ev);
	if (d.drain_ev)
		event_free(d.drain_ev);
	if (d.base)
		event_base_free(d.base);
	if (d.note_fd[0] >= 0) {
		close(d.note_fd[0]);
		close(d.note_fd[1]);
	}
	fg_config_unref(d.cfg);
	return rv;
}
