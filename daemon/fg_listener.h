/*
 * fg_listener.h - the listening sockets: one per worker per listen
 * address, in one SO_REUSEPORT group, so the kernel spreads connections
 * over the workers with no shared accept queue and no lock.
 *
 * SO_REUSEPORT alone would let a second process of the same user join our
 * group silently.  Each address is therefore first bound by a probe socket
 * without SO_REUSEPORT: if anyone holds the port, that bind fails with
 * EADDRINUSE and we refuse to start.  The probe also learns the port the
 * kernel chose for port 0, which every worker's socket then binds.  (The
 * probe is closed just before the group binds: a process that grabs the
 * port in that instant makes our bind fail, it cannot share it.)
 *
 * When accept(2) runs out of descriptors, a worker pauses its listeners
 * instead of spinning on them (fg_listener_pause, below); so does the admin
 * endpoint (fg_admin.c) with its one listener.
 */
#ifndef FG_LISTENER_H
#define FG_LISTENER_H

#include <stdint.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "fg_config.h"

/* The backlog handed to listen(2); the kernel caps it at somaxconn. */
#define FG_LISTENER_BACKLOG 4096

/*
 * fg_listener_open - open <nworkers> listening sockets for each address of
 * <cfg>->listen.  <fds> receives nworkers * cfg->nlisten descriptors, worker
 * major: fds[w * nlisten + i] is worker w's socket for address i.  <bound>
 * (cfg->nlisten entries) receives each address as actually bound (the real
 * port for port 0), text included.  Returns 0, or FG_EIO with
 * "listen ADDR: reason" in <err>; on failure no descriptor stays open.
 */
int fg_listener_open(const struct fg_config *cfg, int nworkers, int *fds, struct fg_config_addr *bound,
                     char *err, size_t errlen);

/*
 * Out of descriptors.  accept(2) failing with EMFILE (this process), ENFILE
 * (the system), ENOBUFS or ENOMEM leaves the client queued, so the socket
 * stays readable and libevent calls accept again at once: a full core and
 * a log line per try (a million in five seconds in the attack probe that
 * found it).  As nghttpx does (sleep_acceptor), the owner of the listeners
 * (a worker, or the admin endpoint on main's loop) then stops accepting on
 * all of them for FG_LISTENER_PAUSE_MS; queued clients wait in the backlog
 * meanwhile.
 *
 * 100ms makes a shortage cost ten accept(2) calls a second, and is short
 * next to a client's connect timeout (seconds), so the queue moves again
 * soon after descriptors come back.
 */
#define FG_LISTENER_PAUSE_MS 100

/* At most one accept_failed line per pause object (per worker, and one for
 * the admin endpoint) this often: a shortage can last minutes, and the line
 * carries the count of failures since the last one. */
#define FG_LISTENER_LOG_EVERY_MS 1000

/* Room for the <who> of fg_listener_pause_new, NUL included. */
#define FG_LISTENER_WHO_MAX 32

struct fg_listener_pause;

/*
 * fg_listener_pause_new - the accept pause of one set of listeners, all on
 * <base>.  <ls> and <nls> are borrowed: the listeners and how many of them
 * are live.  Both are read each time a pause begins or ends, so an owner
 * that frees its listeners (a worker's drain) and sets *<nls> to 0 before
 * the pause ends has none touched.  Each pause adds 1 to <*npaused>
 * (borrowed: a counter that only <base>'s thread writes, such as the
 * worker's accept_paused or main's admin_accept_paused).  <who> names the
 * listeners in the accept_failed line as key=value ("worker=3",
 * "listener=admin"); it is copied, cut to FG_LISTENER_WHO_MAX - 1 bytes.
 * Returns NULL when out of memory.  Loop thread only.
 */
struct fg_listener_pause *fg_listener_pause_new(struct event_base *base, struct evconnlistener *const *ls,
                                                const int *nls, const char *who, uint64_t *npaused);

/* fg_listener_pause_free - cancel a pending resume and free <p> (NULL does
 * nothing).  Call it before freeing the event base. */
void fg_listener_pause_free(struct fg_listener_pause *p);

/*
 * fg_listener_accept_failed - accept(2) on one of <p>'s listeners failed with
 * errno <err> (libevent has already retried EINTR, EAGAIN and ECONNABORTED).
 * On a shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM) disables every listener
 * and re-enables them FG_LISTENER_PAUSE_MS later (a failure during a pause
 * does not extend it).  Other errors concern the one connection that failed
 * (EPROTO, EPERM, network errors) and leave the listeners on.  Logs
 * event=accept_failed <who> at most once per FG_LISTENER_LOG_EVERY_MS, with
 * failures=N counting this failure and the unlogged ones before it.  Call it
 * from the listeners' error callback (evconnlistener_set_error_cb): without
 * one, libevent logs "Error from accept() call" for every try instead.
 * Loop thread only.
 */
void fg_listener_accept_failed(struct fg_listener_pause *p, int err);

#endif /* FG_LISTENER_H */
