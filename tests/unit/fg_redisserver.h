/*
 * fg_redisserver.h - a real redis-server for the unit-test groups that
 * need one (test_redis, test_state): found on PATH, started on a free
 * loopback port and a unix socket in a directory the test owns (no RDB,
 * no AOF), ready once it answers a PING (any answer: NOAUTH counts), and
 * stopped by PID.  The child gets PR_SET_PDEATHSIG so a crashed test
 * leaves no server behind.  Paused and killed servers are
 * SIGSTOP/SIGCONT/SIGKILL on <pid>.
 *
 * Header-only (static inline) like fg_testutil.h.  Include cmocka.h first:
 * the helpers fail the test with cmocka's asserts.
 */
#ifndef FG_REDISSERVER_H
#define FG_REDISSERVER_H

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "fg_clock.h"

/* One server.  Fill <bin>, <dir> and <password> (or use
 * fg_redisserver_init), then start and kill it as often as needed: it
 * keeps its port, so clients reconnect to the same address. */
struct fg_redisserver {
	char bin[256];          /* path of redis-server */
	char dir[64];           /* its working directory (log, socket), the test's */
	const char *password;   /* --requirepass, or NULL */
	int port;
	char sock[128];         /* <dir>/redis.sock */
	char addr[64];          /* "127.0.0.1:<port>" */
	pid_t pid;              /* running server, 0 when stopped */
};

/* fg_redisserver_find - the path of redis-server on PATH into <bin>
 * (<len> bytes); 1 if found, else 0 and <bin> is "". */
static inline int fg_redisserver_find(char *bin, size_t len)
{
	const char *path = getenv("PATH");
	char *copy, *dir, *save = NULL;

	bin[0] = '\0';
	copy = strdup(path ? path : "/usr/bin:/bin");
	for (dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(bin, len, "%s/redis-server", dir);
		if (access(bin, X_OK) == 0)
			break;
		bin[0] = '\0';
	}
	free(copy);
	return bin[0] != '\0';
}

/* fg_redisserver_free_port - a loopback TCP port nobody listens on now. */
static inline int fg_redisserver_free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

/* fg_redisserver_init - <srv> for redis-server <bin> working in <dir>
 * (both copied), on a free port; not started. */
static inline void fg_redisserver_init(struct fg_redisserver *srv, const char *bin, const char *dir,
                                       const char *password)
{
	memset(srv, 0, sizeof(*srv));
	snprintf(srv->bin, sizeof(srv->bin), "%s", bin);
	snprintf(srv->dir, sizeof(srv->dir), "%s", dir);
	srv->password = password;
	srv->port = fg_redisserver_free_port();
	snprintf(srv->sock, sizeof(srv->sock), "%s/redis.sock", dir);
	snprintf(srv->addr, sizeof(srv->addr), "127.0.0.1:%d", srv->port);
}

/* fg_redisserver_answers - 1 when the server on <port> answers PING with anything. */
static inline int fg_redisserver_answers(int port)
{
	struct timeval tv = { 0, 100000 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *rep = NULL;

	if (c && !c->err)
		rep = redisCommand(c, "PING");
	if (rep)
		freeReplyObject(rep);
	if (c)
		redisFree(c);
	return rep != NULL;
}

/* fg_redisserver_start - run <srv> and wait (5 s times <time_factor> at
 * most) until it answers; fails the test otherwise. */
static inline void fg_redisserver_start(struct fg_redisserver *srv, int time_factor)
{
	char port[16], log[160];
	const char *argv[24];
	int n = 0;
	uint64_t deadline;

	snprintf(port, sizeof(port), "%d", srv->port);
	snprintf(log, sizeof(log), "%s/redis.log", srv->dir);
	argv[n++] = srv->bin;
	argv[n++] = "--port"; argv[n++] = port;
	argv[n++] = "--bind"; argv[n++] = "127.0.0.1";
	argv[n++] = "--save"; argv[n++] = "";
	argv[n++] = "--appendonly"; argv[n++] = "no";
	argv[n++] = "--dir"; argv[n++] = srv->dir;
	argv[n++] = "--unixsocket"; argv[n++] = srv->sock;
	argv[n++] = "--logfile"; argv[n++] = log;
	if (srv->password) {
		argv[n++] = "--requirepass";
		argv[n++] = srv->password;
	}
	argv[n] = NULL;
	srv->pid = fork();
	assert_true(srv->pid >= 0);
	if (srv->pid == 0) {
		int null = open("/dev/null", O_RDWR);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 1);
		dup2(null, 2);
		execv(srv->bin, (char *const *)argv);
		_exit(127);
	}
	deadline = fg_clock_now_us() + 5000000u * (uint64_t)time_factor;
	while (!fg_redisserver_answers(srv->port)) {
		int status;
		assert_int_equal(waitpid(srv->pid, &status, WNOHANG), 0);
		assert_true(fg_clock_now_us() < deadline);
		usleep(5000);
	}
}

/* fg_redisserver_kill - SIGKILL <srv> (paused or not) and reap it;
 * nothing when it is not running. */
static inline void fg_redisserver_kill(struct fg_redisserver *srv)
{
	if (srv->pid <= 0)
		return;
	kill(srv->pid, SIGKILL);
	waitpid(srv->pid, NULL, 0);
	srv->pid = 0;
}

#endif /* FG_REDISSERVER_H */
