/*
 * fg_addr.h - socket addresses as text, the way they appear in configs
 * and logs: "127.0.0.1:8080", "[::1]:8080".  Stateless.
 */
#ifndef FG_ADDR_H
#define FG_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/*
 * fg_addr_format - write <sa> as "ip:port" (IPv4) or "[ip]:port" (IPv6)
 * into <buf> of <len> bytes, always NUL-terminated; other families give
 * "unix".  Returns <buf>.
 */
char *fg_addr_format(const struct sockaddr *sa, char *buf, size_t len);

#endif /* FG_ADDR_H */
