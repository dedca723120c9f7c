/*
 * fg_notify.h - the service manager's readiness protocol (sd_notify(3)),
 * written by hand.
 *
 * systemd (Type=notify) starts feedguardd with NOTIFY_SOCKET naming a unix
 * datagram socket (a path, or "@name" in the abstract namespace) and
 * waits for "READY=1" on it before it calls the start done; "RELOADING=1"
 * and "STOPPING=1" report a reload and a stop.  The protocol is one
 * datagram of newline-separated assignments, so this module is a few
 * lines and the daemon needs no libsystemd (a build option and a library
 * more for one sendto).  Without NOTIFY_SOCKET every call does nothing.
 *
 * Main thread only (it reads the environment); nothing is kept between
 * calls.
 */
#ifndef FG_NOTIFY_H
#define FG_NOTIFY_H

#include <stddef.h>

/* Room for one state the daemon composes (a STATUS= line is cut to fit). */
#define FG_NOTIFY_MAX 1024

/*
 * fg_notify_send - send <state> ("READY=1\nSTATUS=serving") to the socket
 * NOTIFY_SOCKET names.  Returns 0 when sent or when there is no
 * NOTIFY_SOCKET; FG_EINVAL when NOTIFY_SOCKET is not a usable address;
 * FG_EIO when the send failed (the service manager is gone, or its
 * queue stayed full for a second: the daemon serves on, as sd_notify's
 * callers do), with the reason in <why> (<whylen> bytes, may be 0).
 */
int fg_notify_send(const char *state, char *why, size_t whylen);

/*
 * fg_notify_reloading - "RELOADING=1" with "MONOTONIC_USEC=" the time now
 * on CLOCK_MONOTONIC, as systemd's Type=notify-reload requires, and
 * "STATUS=<status>".  Returns as fg_notify_send.
 */
int fg_notify_reloading(const char *status, char *why, size_t whylen);

#endif
