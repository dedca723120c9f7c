/*
 * fg_file.h - opening the files a configuration names (the config and
 * policy files, descriptor sets, key files, the Redis password, the
 * access log) without
 * blocking on what is not a file.
 *
 * A FIFO named where a file belongs blocks open(2) until a peer opens the
 * other end: `feedguardd -t` hung, and a reload froze the main thread
 * (admin endpoint, signals, later reloads) with it.  These open with
 * O_NONBLOCK, check what they opened, and only then hand back a blocking
 * descriptor.  They fail as open(2) does (-1 and errno), not with an
 * FG_E* code: every caller words the reason into its own message
 * (fg_file_why).  Stateless; any thread.
 */
#ifndef FG_FILE_H
#define FG_FILE_H

/*
 * fg_file_open_read - <path> opened for reading (O_CLOEXEC), when it is a
 * regular file.  Returns the descriptor (blocking, the caller closes it),
 * or -1 with errno set: open's own, or EINVAL when <path> is not a
 * regular file (a FIFO, a socket, a device, a directory).
 */
int fg_file_open_read(const char *path);

/*
 * fg_file_open_append - <path> opened for appending (O_CLOEXEC; with
 * <flags> O_CREAT or O_CREAT | O_EXCL, made with <mode>), when it is a
 * regular file or a character device (/dev/null): never a FIFO or a
 * socket, whose reader could stall a worker's writes.  Returns the
 * descriptor (blocking) or -1 with errno set: open's own (ENXIO for a FIFO
 * nobody reads), or EINVAL for a FIFO or socket that was opened.
 */
int fg_file_open_append(const char *path, int flags, unsigned mode);

/* fg_file_why - what errno <err> from the functions above means, for a
 * message: strerror's words, or what EINVAL stands for here. */
const char *fg_file_why(int err);

#endif /* FG_FILE_H */
