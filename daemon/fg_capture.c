/*
 * fg_capture.c - the capture writer thread, the workers' rings of finished
 * records, the byte budget, file rotation and retention.  See fg_capture.h.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fg_capfile.h"
#include "fg_capout.h"
#include "fg_capture.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_keyring.h"
#include "fg_log.h"
#include "fg_pbwire.h"

/* Records a worker may have queued; a power of two (the ring's indexes
 * run free and are masked).  Bytes are bounded by capture.queue; this
 * bounds the count of small ones. */
#define RING_SIZE 4096
/* How long the writer sleeps when every ring is empty: records wait at
 * most this long, and nobody has to wake the writer (no lock, no syscall
 * on the workers' side). */
#define IDLE_SLEEP_MS 20
/* Record buffers the writer hands back to each worker for its next
 * records, instead of free(3) on the writer's thread: a record's buffer is
 * tens of KB, past glibc's per-thread caches, so every record paid a malloc
 * in the worker's arena and a free from another thread into it (about 2 µs
 * a record with its bin sorting).  A power of two; enough for the records
 * of one writer cycle (IDLE_SLEEP_MS) at thousands a second.  Only buffers
 * of at most FG_CAPTURE_SPARE_MAX_CAP are kept: at most SPARES *
 * FG_CAPTURE_SPARE_MAX_CAP bytes a worker (2 MiB). */
#define SPARES 64
#define OFF_SLEEP_MS 1000
/* Retention is checked this often, and at every rotation. */
#define RETENTION_EVERY_US (60LL * 1000000)
/* After a file could not be opened, the next try waits this long (and
 * records meanwhile are dropped and counted, not logged one by one). */
#define OPEN_RETRY_US (1000000LL)
#define NAME_PREFIX FG_CAPTURE_FILE_PREFIX
#define NAME_SUFFIX FG_CAPTURE_FILE_SUFFIX
#define OPEN_SUFFIX FG_CAPTURE_OPEN_SUFFIX

/* Fields of feedguard.capture.v1 (proto/feedguard/capture/v1/capture.proto). */
enum { REC_FILE_INFO = 1 };
enum { FI_VERSION = 1, FI_WRITER, FI_OPENED, FI_HOST, FI_PID, FI_KEY_ID, FI_POLICY, FI_SAMPLE };

struct slot {
	struct fg_bufq rec;
	uint64_t reserved;
};

struct fg_capture_ring {
	struct fg_capture *c;
	uint32_t head;                  /* next slot the worker fills (written by the worker) */
	uint32_t tail;                  /* next slot the writer takes (written by the writer) */
	struct slot slots[RING_SIZE];
	uint32_t spare_head;            /* next spare the writer puts (written by the writer) */
	uint32_t spare_tail;            /* next spare the worker takes (written by the worker) */
	struct fg_bufq spares[SPARES];  /* empty buffers, memory kept */
};

/* What the writer uses of a config, copied under <mu>. */
struct settings {
	int enabled;
	char *directory;
	char key_id[FG_KEYRING_ID_MAX + 1];
	char *policy;
	double sample;
	uint64_t rotate_size;
	int64_t rotate_age_us;
	int64_t max_age_us;
	uint64_t max_total_size;
};

/* The file being written (writer thread only). */
struct out_file {
	struct fg_capout out;           /* out.fd -1: none */
	char *path;                     /* ...fgcap.open */
	uint64_t size;
	int64_t opened_us;              /* monotonic */
	int64_t retry_at_us;            /* no open before this (after a failure) */
	unsigned failing;               /* the last open or write failed (logged once) */
};

struct fg_capture {
	unsigned nworkers;
	struct fg_capture_ring **rings; /* [nworkers], each published once with a release store */
	struct fg_capture_counters n;
	pthread_t thread;
	unsigned started;
	unsigned no_writer;             /* atomic: capture is on but its thread could not start, so
	                                   records are dropped at once instead of filling the rings */
	pthread_mutex_t mu;             /* guards <set>, <gen>, <stop>; <cv> wakes the writer */
	pthread_cond_t cv;
	struct settings set;
	unsigned gen;                   /* bumped by each configure: the writer copies <set> again */
	unsigned stop;
	unsigned reopen;                /* atomic: SIGUSR1 */
	unsigned seq;                   /* file names within one second (writer only) */
	int64_t last_retention_us;      /* writer only */
	struct out_file f;              /* writer only */
};

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count(uint64_t *v, uint64_t d)
{
	__atomic_fetch_add(v, d, __ATOMIC_RELAXED);
}

/* --- workers' side --------------------------------------------------------- */

int fg_capture_reserve(struct fg_capture *c, uint64_t n, uint64_t limit)
{
	uint64_t was = __atomic_load_n(&c->n.held, __ATOMIC_RELAXED);

	do {
		if (was + n > limit || was + n < was)
			return FG_ETOOBIG;
	} while (!__atomic_compare_exchange_n(&c->n.held, &was, was + n, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return 0;
}

void fg_capture_release(struct fg_capture *c, uint64_t n)
{
	__atomic_fetch_sub(&c->n.held, n, __ATOMIC_RELAXED);
}

void fg_capture_omitted(struct fg_capture *c, enum fg_capture_omit why, uint64_t n)
{
	count(&c->n.omitted[why], n);
}

void fg_capture_dropped(struct fg_capture *c, enum fg_capture_drop why)
{
	count(&c->n.dropped[why], 1);
}

struct fg_capture_ring *fg_capture_attach(struct fg_capture *c, unsigned worker)
{
	struct fg_capture_ring *r;

	if (worker >= c->nworkers)
		return NULL;
	if ((r = __atomic_load_n(&c->rings[worker], __ATOMIC_ACQUIRE)))
		return r;
	if (!(r = calloc(1, sizeof(*r))))
		return NULL;
	r->c = c;
	__atomic_store_n(&c->rings[worker], r, __ATOMIC_RELEASE);
	return r;
}

int fg_capture_submit(struct fg_capture_ring *r, struct fg_bufq *rec, uint64_t reserved)
{
	uint32_t head = r->head, tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
	struct slot *s;

	if (__atomic_load_n(&r->c->no_writer, __ATOMIC_ACQUIRE)) {
		fg_bufq_free(rec);
		fg_capture_release(r->c, reserved);
		count(&r->c->n.dropped[FG_CAPTURE_DROP_WRITE_ERROR], 1);
		return FG_EUNAVAIL;
	}
	if (head - tail >= RING_SIZE) {
		fg_bufq_free(rec);
		fg_capture_release(r->c, reserved);
		count(&r->c->n.dropped[FG_CAPTURE_DROP_QUEUE_FULL], 1);
		return FG_EBUSY;
	}
	s = &r->slots[head & (RING_SIZE - 1)];
	s->rec = *rec;
	s->reserved = reserved;
	fg_bufq_init(rec);
	__atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
	return 0;
}

int fg_capture_spare(struct fg_capture_ring *r, struct fg_bufq *out)
{
	uint32_t tail = r->spare_tail;

	if (tail == __atomic_load_n(&r->spare_head, __ATOMIC_ACQUIRE))
		return 0;
	fg_bufq_free(out);
	*out = r->spares[tail & (SPARES - 1)];
	__atomic_store_n(&r->spare_tail, tail + 1, __ATOMIC_RELEASE);
	return 1;
}

/* Writer: a written record's buffer back to its worker's spares, or freed
 * when they are full or it is too large to keep. */
static void spare_put(struct fg_capture_ring *r, struct fg_bufq *q)
{
	uint32_t head = r->spare_head;

	if (q->cap > FG_CAPTURE_SPARE_MAX_CAP || head - __atomic_load_n(&r->spare_tail, __ATOMIC_ACQUIRE) >= SPARES) {
		fg_bufq_free(q);
		return;
	}
	q->off = q->len = 0;
	r->spares[head & (SPARES - 1)] = *q;
	fg_bufq_init(q);
	__atomic_store_n(&r->spare_head, head + 1, __ATOMIC_RELEASE);
}

const struct fg_capture_counters *fg_capture_counters(const struct fg_capture *c)
{
	return &c->n;
}

/* --- files ------------------------------------------------------------------- */

/* A FileInfo record: who wrote the file, with which key and policy. */
static int file_info(const struct settings *s, struct fg_bufq *out)
{
	char host[256] = "";
	struct fg_bufq fi;
	char writer[64];
	uint64_t sample;
	int rc = 0;

	fg_bufq_init(&fi);
	gethostname(host, sizeof(host) - 1);
	snprintf(writer, sizeof(writer), "feedguardd %s", PACKAGE_VERSION);
	memcpy(&sample, &s->sample, sizeof(sample));
	rc |= fg_pbwire_append_varint(&fi, FI_VERSION, FG_CAPFILE_VERSION);
	rc |= fg_pbwire_append_len(&fi, FI_WRITER, writer, strlen(writer));
	rc |= fg_pbwire_append_varint(&fi, FI_OPENED, (uint64_t)wall_ms());
	rc |= fg_pbwire_append_len(&fi, FI_HOST, host, strlen(host));
	rc |= fg_pbwire_append_varint(&fi, FI_PID, (uint64_t)getpid());
	rc |= fg_pbwire_append_len(&fi, FI_KEY_ID, s->key_id, strlen(s->key_id));
	if (s->policy)
		rc |= fg_pbwire_append_len(&fi, FI_POLICY, s->policy, strlen(s->policy));
	/* a double is wire type 1, 8 bytes little-endian */
	{
		uint8_t d[9] = { (uint8_t)(FI_SAMPLE << 3 | 1) };
		for (int i = 0; i < 8; i++)
			d[1 + i] = (uint8_t)(sample >> (8 * i));
		rc |= fg_bufq_append(&fi, d, sizeof(d));
	}
	if (rc == 0)
		rc = fg_pbwire_append_len(out, REC_FILE_INFO, fg_bufq_head(&fi), fg_bufq_len(&fi));
	fg_bufq_free(&fi);
	return rc < 0 ? FG_ENOMEM : 0;
}

/* One frame (the FileInfo): a reader following the file sees whole
 * frames or a short tail. */
static int write_frame(struct fg_capture *c, const uint8_t *payload, size_t len)
{
	uint8_t hdr[FG_CAPFILE_FRAME_HEADER_LEN];
	struct iovec iov[2];
	uint64_t lost;

	if (fg_capfile_write_frame_header(hdr, payload, len) < 0) {
		errno = EFBIG;
		return FG_EIO;
	}
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)payload;
	iov[1].iov_len = len;
	if (fg_capout_frames(&c->f.out, iov, 1, &lost) < 0)
		return FG_EIO;
	c->f.size += sizeof(hdr) + len;
	count(&c->n.bytes, sizeof(hdr) + len);
	return 0;
}

/* How a file is closed. */
enum close_how {
	CLOSE_DONE = 0,                 /* complete: renamed to .fgcap */
	CLOSE_ROTATED,                  /* complete, and counted as a rotation */
	CLOSE_EMPTY,                    /* nothing of it is a record: removed */
};

static void close_file(struct fg_capture *c, enum close_how how)
{
	char *final = NULL;
	uint64_t lost;
	int moved;

	if (c->f.out.fd < 0)
		return;
	if (fg_capout_close(&c->f.out, &lost) < 0) {
		/* the records it could not take were counted written: now dropped too */
		fg_log(FG_LOG_ERROR, "capture_failed", "what=write file=\"%s\" error=\"%s\" lost=%llu",
		       c->f.path, strerror(errno), (unsigned long long)lost);
		count(&c->n.dropped[FG_CAPTURE_DROP_WRITE_ERROR], lost);
	}
	c->last_retention_us = 0;       /* a file more to keep or delete: check at once */
	/* a file that never got its header and FileInfo is no capture */
	if (how == CLOSE_EMPTY) {
		unlink(c->f.path);
		goto out_free;
	}
	/* ".open" off: the file is complete, retention and erasure may touch it */
	final = strndup(c->f.path, strlen(c->f.path) - strlen(OPEN_SUFFIX));
	moved = final && rename(c->f.path, final) == 0;
	if (moved && how == CLOSE_ROTATED)
		count(&c->n.files[FG_CAPTURE_FILE_ROTATED], 1);
	if (!moved)             /* left as .open: adopted as an orphan by a later writer */
		fg_log(FG_LOG_ERROR, "capture_failed", "what=rename file=\"%s\" error=\"%s\"", c->f.path,
		       final ? strerror(errno) : "out of memory");
out_free:
	free(final);
	free(c->f.path);
	c->f.path = NULL;
}

/* This host's name as file names carry it: a path component, so nothing
 * but [A-Za-z0-9.-]; into <host> (<len> bytes). */
static void name_host(char *host, size_t len)
{
	size_t i;

	memset(host, 0, len);
	gethostname(host, len - 1);
	for (i = 0; host[i]; i++)
		if (!((host[i] >= 'a' && host[i] <= 'z') || (host[i] >= 'A' && host[i] <= 'Z') ||
		      (host[i] >= '0' && host[i] <= '9') || host[i] == '.' || host[i] == '-'))
			host[i] = '_';
}

static char *file_name(struct fg_capture *c, const struct settings *s)
{
	char host[64], stamp[32], *p = NULL;
	time_t now = time(NULL);
	struct tm tm;

	name_host(host, sizeof(host));
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	/* the sequence zero-padded: names sort in the order files were made */
	if (asprintf(&p, "%s/" NAME_PREFIX "%s-%ld-%s-%06u" NAME_SUFFIX OPEN_SUFFIX, s->directory, host,
	             (long)getpid(), stamp, c->seq++) < 0)
		return NULL;
	return p;
}

static void open_failed(struct fg_capture *c, const char *what, const char *path, int err)
{
	count(&c->n.files[FG_CAPTURE_FILE_FAILED], 1);
	c->f.retry_at_us = mono_us() + OPEN_RETRY_US;
	if (!c->f.failing)
		fg_log(FG_LOG_ERROR, "capture_failed", "what=%s file=\"%s\" error=\"%s\"", what, path ? path : "",
		       strerror(err));
	c->f.failing = 1;
}

/* A new file with its header and FileInfo. */
static int open_file(struct fg_capture *c, const struct settings *s)
{
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN];
	struct fg_bufq fi;
	int err;

	if (mono_us() < c->f.retry_at_us)
		return FG_EIO;
	if (!(c->f.path = file_name(c, s)))
		return FG_ENOMEM;
	fg_capfile_write_file_header(hdr);
	if (fg_capout_open(&c->f.out, c->f.path, 0640, 0, hdr, sizeof(hdr)) < 0) {
		open_failed(c, "open", c->f.path, errno);
		free(c->f.path);
		c->f.path = NULL;
		return FG_EIO;
	}
	c->f.size = sizeof(hdr);
	count(&c->n.bytes, sizeof(hdr));
	c->f.opened_us = mono_us();
	fg_bufq_init(&fi);
	if (file_info(s, &fi) < 0 || write_frame(c, fg_bufq_head(&fi), fg_bufq_len(&fi)) < 0) {
		err = errno;
		fg_bufq_free(&fi);
		open_failed(c, "write", c->f.path, err);
		close_file(c, CLOSE_EMPTY);
		return FG_EIO;
	}
	fg_bufq_free(&fi);
	count(&c->n.files[FG_CAPTURE_FILE_OPENED], 1);
	if (c->f.failing)
		fg_log(FG_LOG_INFO, "capture_recovered", "file=\"%s\"", c->f.path);
	c->f.failing = 0;
	return 0;
}

/* --- retention ---------------------------------------------------------------- */

struct old_file {
	char *name;
	struct timespec mtime;          /* its last record's */
	uint64_t size;
};

/* Oldest first: by the time of the last write, to the nanosecond, then by
 * name (one writer's names sort in the order it made them). */
static int old_cmp(const void *a, const void *b)
{
	const struct old_file *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
	size_t m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

enum fg_capture_file fg_capture_file_of(const char *name)
{
	size_t n = strlen(name);

	if (strncmp(name, NAME_PREFIX, strlen(NAME_PREFIX)) != 0)
		return FG_CAPTURE_NOT_OURS;
	if (ends_with(name, n, NAME_SUFFIX))
		return FG_CAPTURE_CLOSED;
	if (ends_with(name, n, NAME_SUFFIX OPEN_SUFFIX))
		return FG_CAPTURE_OPEN;
	return FG_CAPTURE_NOT_OURS;
}

/* Retention deletes <name> of <dir> for <why>: an auditor reads in the log
 * which records went when (a line per file: files come at the rotation's
 * pace, never at the clients'). */
static void delete_file(struct fg_capture *c, const char *dir, const char *name, const char *why)
{
	char path[4096], q[300];

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path) && unlink(path) == 0) {
		count(&c->n.files[FG_CAPTURE_FILE_DELETED], 1);
		fg_log(FG_LOG_INFO, "capture_deleted", "file=%s why=%s", fg_log_quote(q, sizeof(q), path), why);
	}
}

/* The closed files of <dir>, oldest first. */
static size_t list_files(const char *dir, struct old_file **out)
{
	struct old_file *v = NULL, *nv;
	size_t n = 0, cap = 0;
	struct dirent *e;
	struct stat st;
	DIR *d;

	*out = NULL;
	if (!(d = opendir(dir)))
		return 0;
	while ((e = readdir(d))) {
		if (fg_capture_file_of(e->d_name) != FG_CAPTURE_CLOSED || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			if (!(nv = realloc(v, cap * sizeof(*v))))
				break;
			v = nv;
		}
		if (!(v[n].name = strdup(e->d_name)))
			break;
		v[n].mtime = st.st_mtim;
		v[n].size = (uint64_t)st.st_size;
		n++;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), old_cmp);
	*out = v;
	return n;
}

/* Files a writer left open when it died (SIGKILL, a crash): another pid
 * in the name of a ".fgcap.open" of this host.  Closed (renamed), so
 * retention and erasure see them; their last frame may be torn, which
 * readers skip. */
static void adopt_orphans(const char *dir)
{
	char host[64], mine[160], from[4096], to[4096];
	struct dirent *e;
	size_t n;
	DIR *d;

	name_host(host, sizeof(host));
	snprintf(mine, sizeof(mine), NAME_PREFIX "%s-%ld-", host, (long)getpid());
	if (!(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		n = strlen(e->d_name);
		if (fg_capture_file_of(e->d_name) != FG_CAPTURE_OPEN || strncmp(e->d_name, mine, strlen(mine)) == 0)
			continue;
		/* another host's writer may share the directory: only ours */
		if (strncmp(e->d_name + strlen(NAME_PREFIX), host, strlen(host)) != 0 ||
		    e->d_name[strlen(NAME_PREFIX) + strlen(host)] != '-')
			continue;
		{
			long pid = strtol(e->d_name + strlen(NAME_PREFIX) + strlen(host) + 1, NULL, 10);
			if (pid > 0 && kill((pid_t)pid, 0) == 0)
				continue;       /* a writer that still runs (another feedguardd) */
		}
		snprintf(from, sizeof(from), "%s/%s", dir, e->d_name);
		snprintf(to, sizeof(to), "%s/%.*s", dir, (int)(n - strlen(OPEN_SUFFIX)), e->d_name);
		if (rename(from, to) == 0)
			fg_log(FG_LOG_WARN, "capture_orphan", "file=\"%s\" why=\"left open by a writer that is gone\"", to);
	}
	closedir(d);
}

/* Closed files past max_age go; then the oldest until the rest fit in
 * max_total_size (the open file counts toward it, and is never deleted). */
static void retention(struct fg_capture *c, const struct settings *s)
{
	struct old_file *v;
	uint64_t total = c->f.out.fd >= 0 ? c->f.size : 0;
	time_t now = time(NULL);
	size_t n, i;

	c->last_retention_us = mono_us();
	if (s->directory)
		adopt_orphans(s->directory);
	if ((!s->max_age_us && !s->max_total_size) || !s->directory)
		return;
	n = list_files(s->directory, &v);
	for (i = 0; i < n; i++)
		total += v[i].size;
	for (i = 0; i < n; i++) {
		int old = s->max_age_us && (int64_t)(now - v[i].mtime.tv_sec) * 1000000 > s->max_age_us;
		int over = s->max_total_size && total > s->max_total_size;
		if (old || over) {
			delete_file(c, s->directory, v[i].name, old ? "max_age" : "max_total_size");
			total -= v[i].size;
		}
		free(v[i].name);
	}
	free(v);
}

/* --- the writer thread ----------------------------------------------------- */

static void settings_free(struct settings *s)
{
	free(s->directory);
	free(s->policy);
	memset(s, 0, sizeof(*s));
}

static int settings_copy(struct settings *dst, const struct settings *src)
{
	*dst = *src;
	dst->directory = src->directory ? strdup(src->directory) : NULL;
	dst->policy = src->policy ? strdup(src->policy) : NULL;
	if ((src->directory && !dst->directory) || (src->policy && !dst->policy)) {
		settings_free(dst);
		return FG_ENOMEM;
	}
	return 0;
}

/* 1 when the file must change: its name (directory) or its FileInfo. */
static int file_changes(const struct settings *a, const struct settings *b)
{
	return a->enabled != b->enabled || (a->directory && b->directory && strcmp(a->directory, b->directory)) ||
	       strcmp(a->key_id, b->key_id) || a->sample != b->sample ||
	       ((a->policy || b->policy) && (!a->policy || !b->policy || strcmp(a->policy, b->policy)));
}

/* Records of one ring written with one writev(2): fewer system calls, and
 * a reader following the file still sees whole frames or a short tail. */
#define BATCH 32

/* <k> frames (<iov>, <want> bytes) to the file, opened and rotated as the
 * settings say. */
static void flush(struct fg_capture *c, const struct settings *s, const struct iovec *iov, size_t k, size_t want)
{
	uint64_t lost;

	if (k == 0)
		return;
	if (c->f.out.fd >= 0 && (c->f.size >= s->rotate_size || mono_us() - c->f.opened_us >= s->rotate_age_us))
		close_file(c, CLOSE_ROTATED);
	if (!s->enabled || (c->f.out.fd < 0 && open_file(c, s) < 0)) {
		count(&c->n.dropped[FG_CAPTURE_DROP_WRITE_ERROR], k);
		return;
	}
	if (fg_capout_frames(&c->f.out, iov, k, &lost) < 0) {
		/* the file ends at its last whole frame: never appended to again */
		open_failed(c, "write", c->f.path, errno);
		count(&c->n.dropped[FG_CAPTURE_DROP_WRITE_ERROR], lost);
		close_file(c, CLOSE_DONE);
		return;
	}
	c->f.size += want;
	count(&c->n.bytes, want);
	count(&c->n.records, k);
}

/* Nothing queued: what the file keeps in memory (a direct file's last
 * partial block) goes on it, so readers following it see every record. */
static void show(struct fg_capture *c)
{
	uint64_t lost;

	if (c->f.out.fd >= 0 && fg_capout_show(&c->f.out, &lost) < 0) {
		open_failed(c, "write", c->f.path, errno);
		count(&c->n.dropped[FG_CAPTURE_DROP_WRITE_ERROR], lost);
		close_file(c, CLOSE_DONE);
	}
}

/* The frames of <n> records (<sl>), in as few writes as rotate_size
 * allows (a file is never written past it by more than one record). */
static void write_batch(struct fg_capture *c, const struct settings *s, struct slot *const *sl, size_t n)
{
	uint8_t hdr[BATCH][FG_CAPFILE_FRAME_HEADER_LEN];
	struct iovec iov[2 * BATCH];
	size_t i, k = 0, want = 0;

	for (i = 0; i < n; i++) {
		size_t len = fg_bufq_len(&sl[i]->rec);
		/* every reader would stop at a frame this long: never written */
		if (fg_capfile_write_frame_header(hdr[k], fg_bufq_head(&sl[i]->rec), len) < 0) {
			count(&c->n.dropped[FG_CAPTURE_DROP_BUDGET], 1);
			continue;
		}
		iov[2 * k].iov_base = hdr[k];
		iov[2 * k].iov_len = sizeof(hdr[k]);
		iov[2 * k + 1].iov_base = (void *)fg_bufq_head(&sl[i]->rec);
		iov[2 * k + 1].iov_len = len;
		want += sizeof(hdr[k]) + len;
		k++;
		if ((c->f.out.fd >= 0 ? c->f.size : 0) + want >= s->rotate_size) {
			flush(c, s, iov, k, want);
			k = want = 0;
		}
	}
	flush(c, s, iov, k, want);
}

/* Everything the rings hold now; the count written. */
static size_t drain(struct fg_capture *c, const struct settings *s)
{
	struct slot *batch[BATCH];
	size_t i, j, n, done = 0;

	for (i = 0; i < c->nworkers; i++) {
		struct fg_capture_ring *r = __atomic_load_n(&c->rings[i], __ATOMIC_ACQUIRE);
		uint32_t tail, head;
		if (!r)
			continue;
		tail = r->tail;
		head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
		while (tail != head) {
			for (n = 0; n < BATCH && tail + n != head; n++)
				batch[n] = &r->slots[(tail + n) & (RING_SIZE - 1)];
			write_batch(c, s, batch, n);
			for (j = 0; j < n; j++) {
				spare_put(r, &batch[j]->rec);
				fg_capture_release(c, batch[j]->reserved);
			}
			tail += (uint32_t)n;
			done += n;
			__atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
		}
	}
	return done;
}

/* The file's age and the settings decide without a record too: an idle
 * file is closed when it is due, so rotate_age holds on a quiet night. */
static void housekeeping(struct fg_capture *c, const struct settings *s)
{
	if (__atomic_exchange_n(&c->reopen, 0, __ATOMIC_ACQ_REL) && c->f.out.fd >= 0)
		close_file(c, CLOSE_ROTATED);
	if (c->f.out.fd >= 0 && (!s->enabled || mono_us() - c->f.opened_us >= s->rotate_age_us))
		close_file(c, CLOSE_ROTATED);
	if (s->enabled && mono_us() - c->last_retention_us >= RETENTION_EVERY_US)
		retention(c, s);
}

static void *writer_main(void *arg)
{
	struct fg_capture *c = arg;
	struct settings s = { 0 }, fresh;
	struct timespec until;
	unsigned gen = 0, stop = 0, have = 0, next;

	for (;;) {
		pthread_mutex_lock(&c->mu);
		next = c->gen;
		pthread_mutex_unlock(&c->mu);
		if (!have || next != gen) {
			/* what was queued under the old settings goes where they said */
			if (have)
				drain(c, &s);
			pthread_mutex_lock(&c->mu);
			if (settings_copy(&fresh, &c->set) < 0)
				fresh.enabled = 0;
			gen = c->gen;
			pthread_mutex_unlock(&c->mu);
			if (have && file_changes(&s, &fresh))
				close_file(c, CLOSE_ROTATED);
			settings_free(&s);
			s = fresh;
			have = 1;
		}
		pthread_mutex_lock(&c->mu);
		stop = c->stop;
		pthread_mutex_unlock(&c->mu);
		housekeeping(c, &s);
		if (drain(c, &s) > 0)
			continue;
		show(c);
		if (stop)
			break;
		clock_gettime(CLOCK_REALTIME, &until);
		/* capture off: a reload wakes it; nothing else is due */
		until.tv_nsec += (s.enabled ? IDLE_SLEEP_MS : OFF_SLEEP_MS) * 1000000L;
		while (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&c->mu);
		if (!c->stop && gen == c->gen)
			pthread_cond_timedwait(&c->cv, &c->mu, &until);
		pthread_mutex_unlock(&c->mu);
	}
	close_file(c, CLOSE_DONE);
	settings_free(&s);
	return NULL;
}

int fg_capture_take(struct fg_capture *c, struct fg_bufq *out)
{
	unsigned i;

	fg_bufq_free(out);
	for (i = 0; i < c->nworkers; i++) {
		struct fg_capture_ring *r = __atomic_load_n(&c->rings[i], __ATOMIC_ACQUIRE);
		struct slot *sl;
		if (!r || r->tail == __atomic_load_n(&r->head, __ATOMIC_ACQUIRE))
			continue;
		sl = &r->slots[r->tail & (RING_SIZE - 1)];
		*out = sl->rec;
		fg_bufq_init(&sl->rec);
		fg_capture_release(c, sl->reserved);
		__atomic_store_n(&r->tail, r->tail + 1, __ATOMIC_RELEASE);
		return 1;
	}
	return 0;
}

/* --- main thread ------------------------------------------------------------- */

int fg_capture_new(struct fg_capture **out, unsigned nworkers)
{
	struct fg_capture *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c || !(c->rings = calloc(nworkers ? nworkers : 1, sizeof(*c->rings)))) {
		free(c);
		return FG_ENOMEM;
	}
	c->nworkers = nworkers;
	c->f.out.fd = -1;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	*out = c;
	return 0;
}

static int settings_of(const struct fg_config *cfg, struct settings *s)
{
	memset(s, 0, sizeof(*s));
	s->enabled = cfg->capture.enabled;
	if (!s->enabled)
		return 0;
	snprintf(s->key_id, sizeof(s->key_id), "%s", cfg->capture.key->keys[0].id);
	s->sample = cfg->capture.sample;
	s->rotate_size = cfg->capture.rotate_size;
	s->rotate_age_us = cfg->capture.rotate_age_us;
	s->max_age_us = cfg->capture.max_age_us;
	s->max_total_size = cfg->capture.max_total_size;
	s->directory = strdup(cfg->capture.directory);
	s->policy = cfg->policy_path ? strdup(cfg->policy_path) : NULL;
	if (!s->directory || (cfg->policy_path && !s->policy)) {
		settings_free(s);
		return FG_ENOMEM;
	}
	return 0;
}

int fg_capture_configure(struct fg_capture *c, const struct fg_config *cfg)
{
	struct settings s;
	int rc;

	if ((rc = settings_of(cfg, &s)) < 0)
		return rc;
	pthread_mutex_lock(&c->mu);
	c->gen++;
	settings_free(&c->set);
	c->set = s;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (s.enabled && !c->started) {
		/* Without a writer nothing empties the rings: until a later
		 * configure starts one, records are dropped as they come. */
		if (pthread_create(&c->thread, NULL, writer_main, c) != 0) {
			__atomic_store_n(&c->no_writer, 1, __ATOMIC_RELEASE);
			return FG_EIO;
		}
		c->started = 1;
		__atomic_store_n(&c->no_writer, 0, __ATOMIC_RELEASE);
	}
	return 0;
}

void fg_capture_reopen(struct fg_capture *c)
{
	__atomic_store_n(&c->reopen, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&c->mu);
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void fg_capture_free(struct fg_capture *c)
{
	unsigned i;

	if (!c)
		return;
	if (c->started) {
		pthread_mutex_lock(&c->mu);
		c->stop = 1;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	}
	for (i = 0; i < c->nworkers; i++) {
		struct fg_capture_ring *r = c->rings[i];
		for (; r && r->tail != r->head; r->tail++)
			fg_bufq_free(&r->slots[r->tail & (RING_SIZE - 1)].rec);
		for (; r && r->spare_tail != r->spare_head; r->spare_tail++)
			fg_bufq_free(&r->spares[r->spare_tail & (SPARES - 1)]);
		free(r);
	}
	free(c->rings);
	settings_free(&c->set);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}
