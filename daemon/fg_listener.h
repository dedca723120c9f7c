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
 */
#ifndef FG_LISTENER_H
#define FG_LISTENER_H

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

#endif /* FG_LISTENER_H */
