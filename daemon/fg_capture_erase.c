/*
 * fg_capture_erase.c - one user's records out of a directory of captures.
 * See fg_capture_erase.h.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capture.pb-c.h"
#include "fg_bufq.h"
#include "fg_capfile.h"
#include "fg_capread.h"
#include "fg_capture.h"
#include "fg_capture_erase.h"
#include "fg_error.h"

#define NAME_PREFIX FG_CAPTURE_FILE_PREFIX
#define NAME_SUFFIX FG_CAPTURE_FILE_SUFFIX
/* A temporary file older than this is a dead erase's. */
#define STALE_TEMP_SECONDS 600
/* Kept frames are written in chunks of about this size. */
#define WRITE_CHUNK (1u << 20)

enum verdict { V_KEEP, V_ERASE, V_OTHER_KEY, V_BAD };

/* What to do with one record: a Call of the user is erased; a Call whose
 * pseudonym is under another key (its "<key id>:" prefix: a record made
 * before a key rotation may sit in a file opened after it) cannot be
 * judged; nor can a frame that is no Record (dump and run call it
 * corruption): it may hold the user's pseudonym, so its file is left as
 * it is and reported, never rewritten as if it were erased. */
static enum verdict judge(const uint8_t *p, size_t len, const char *key_id, const char *pseudonym)
{
	Feedguard__Capture__V1__Record *r;
	size_t kl = strlen(key_id);
	enum verdict v = V_KEEP;
	const char *why;

	if (fg_capread_unpack(len, p, &r, &why) < 0)
		return V_BAD;
	if (r->kind_case == FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL && strcmp(r->call->user_key, pseudonym) == 0)
		v = V_ERASE;
	else if (r->kind_case == FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL && r->call->user_key[0] &&
	         (strncmp(r->call->user_key, key_id, kl) != 0 || r->call->user_key[kl] != ':'))
		v = V_OTHER_KEY;
	feedguard__capture__v1__record__free_unpacked(r, NULL);
	return v;
}

/* Pass one: how many of the user's records <path> holds into <*n>, and
 * whether it holds records under another key (<*other>).  0, or FG_EIO /
 * FG_EINVAL (unreadable, corrupt). */
static int count_user(const char *path, const char *key_id, const char *pseudonym, uint64_t *n, int *other)
{
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	int rc;

	*n = 0;
	*other = 0;
	if (fg_capfile_reader_open(path, 0, &r, NULL, 0) < 0)
		return FG_EIO;
	while ((rc = fg_capfile_reader_next(r, &rec, NULL, 0)) == FG_CAPFILE_RECORD) {
		enum verdict v = judge(rec.data, rec.len, key_id, pseudonym);
		if (v == V_BAD) {
			rc = FG_EINVAL;
			break;
		}
		*other |= v == V_OTHER_KEY;
		*n += v == V_ERASE;
	}
	fg_capfile_reader_free(r);
	if (rc != FG_CAPFILE_END && rc != FG_CAPFILE_TORN)
		return rc == FG_EIO ? FG_EIO : FG_EINVAL;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return FG_EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Pass two: the file's other frames into <tmp> (opened), as they were. */
static int copy_kept(const char *path, int tmp, const char *key_id, const char *pseudonym)
{
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN];
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	struct fg_bufq out;
	int rc;

	if (fg_capfile_reader_open(path, 0, &r, NULL, 0) < 0)
		return FG_EIO;
	fg_bufq_init(&out);
	fg_capfile_write_file_header(hdr);
	rc = fg_bufq_append(&out, hdr, sizeof(hdr));
	while (rc == 0 && (rc = fg_capfile_reader_next(r, &rec, NULL, 0)) == FG_CAPFILE_RECORD) {
		rc = 0;
		if (judge(rec.data, rec.len, key_id, pseudonym) == V_ERASE)
			continue;
		if ((rc = fg_capfile_append(&out, rec.data, rec.len)) == 0 && fg_bufq_len(&out) >= WRITE_CHUNK) {
			rc = write_all(tmp, fg_bufq_head(&out), fg_bufq_len(&out));
			fg_bufq_truncate(&out, 0);
		}
	}
	if (rc == FG_CAPFILE_END || rc == FG_CAPFILE_TORN)
		rc = write_all(tmp, fg_bufq_head(&out), fg_bufq_len(&out));
	else if (rc >= 0)
		rc = FG_EINVAL;
	fg_bufq_free(&out);
	fg_capfile_reader_free(r);
	return rc;
}

/* <dir>/<name> without the user: written aside, synced, renamed over. */
static int rewrite(const char *dir, const char *name, const char *key_id, const char *pseudonym)
{
	char path[4096], tmp[4096];
	struct stat st;
	int fd, rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.erase", dir, name) >= sizeof(tmp))
		return FG_EINVAL;
	if (stat(path, &st) < 0)
		return FG_EIO;
	/* O_EXCL: a second erase running at once fails here rather than
	 * writing into the same temporary file */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
	if (fd < 0)
		return FG_EIO;
	/* The original's owner and mode (open's mode went through the umask):
	 * an erase run as root left a root-owned 0600 file that the service
	 * user's next erase could not read (a README-only trial).  One that
	 * cannot give the file back to its owner does not replace it. */
	if ((fchown(fd, st.st_uid, st.st_gid) < 0 && (st.st_uid != geteuid() || st.st_gid != getegid())) ||
	    fchmod(fd, st.st_mode & 07777) < 0) {
		rc = errno;
		close(fd);
		unlink(tmp);
		errno = rc;
		return FG_ESTATE;       /* not ours to replace: the owner cannot be kept */
	}
	rc = copy_kept(path, fd, key_id, pseudonym);
	/* the file keeps its time: retention still sees how old its records are */
	if (rc == 0) {
		struct timespec t[2] = { st.st_atim, st.st_mtim };
		if (futimens(fd, t) < 0 || fsync(fd) < 0)
			rc = FG_EIO;
	}
	if (close(fd) < 0 && rc == 0)
		rc = FG_EIO;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = FG_EIO;
	if (rc < 0)
		unlink(tmp);
	return rc;
}

/* A temporary file an erase left behind when it died holds other users'
 * records out of retention's sight: gone once it is surely no longer being
 * written (an erase running now writes its own within seconds). */
static int stale_temp(const char *dir, const char *name)
{
	char path[4096];
	size_t n = strlen(name), sl = strlen(NAME_SUFFIX ".erase");
	struct stat st;

	if (name[0] != '.' || strncmp(name + 1, NAME_PREFIX, strlen(NAME_PREFIX)) != 0 || n <= sl ||
	    strcmp(name + n - sl, NAME_SUFFIX ".erase") != 0)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (stat(path, &st) == 0 && time(NULL) - st.st_mtime > STALE_TEMP_SECONDS)
		unlink(path);
	return 1;
}

/* The uid (<group> 0) or gid of <path>, for a message. */
static unsigned long file_owner(const char *path, int group)
{
	struct stat st;
	int saved = errno;
	unsigned long v = 0;

	if (stat(path, &st) == 0)
		v = group ? (unsigned long)st.st_gid : (unsigned long)st.st_uid;
	errno = saved;
	return v;
}

/* One directory entry. */
static void one_file(const char *dir, const char *name, const char *key_id, const char *pseudonym,
                     struct fg_capture_erase_result *res)
{
	char path[4096];
	uint64_t n;
	int rc, other;

	if (stale_temp(dir, name))
		return;
	switch (fg_capture_file_of(name)) {
	case FG_CAPTURE_OPEN:
		res->open_files++;
		return;
	case FG_CAPTURE_NOT_OURS:
		return;
	case FG_CAPTURE_CLOSED:
		break;
	}
	res->files++;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	errno = 0;
	if ((rc = count_user(path, key_id, pseudonym, &n, &other)) < 0) {
		fprintf(stderr, "%s: cannot be read (%s): left as it is\n", path,
		        rc == FG_EINVAL ? "corrupt" : errno ? strerror(errno) : "I/O error");
		res->failed++;
		return;
	}
	res->other_key += other != 0;
	if (n == 0)
		return;
	if ((rc = rewrite(dir, name, key_id, pseudonym)) < 0) {
		if (rc == FG_ESTATE)
			fprintf(stderr, "%s: cannot be rewritten: its owner (uid %lu, gid %lu) cannot be given to the new "
			        "file (%s): run capture-erase as that user or as root\n", path,
			        (unsigned long)file_owner(path, 0), (unsigned long)file_owner(path, 1), strerror(errno));
		else
			fprintf(stderr, "%s: cannot be rewritten: %s\n", path, rc == FG_EIO ? strerror(errno) : "corrupt");
		res->failed++;
		return;
	}
	res->rewritten++;
	res->records += n;
}

int fg_capture_erase(const char *dir, const char *key_id, const char *pseudonym,
                     struct fg_capture_erase_result *res, char *err, size_t errlen)
{
	struct dirent *e;
	DIR *d;
	int dfd;

	memset(res, 0, sizeof(*res));
	if (!(d = opendir(dir))) {
		snprintf(err, errlen, "cannot read %s: %s", dir, strerror(errno));
		return FG_EIO;
	}
	while ((e = readdir(d)))
		one_file(dir, e->d_name, key_id, pseudonym, res);
	closedir(d);
	/* the renames are durable once the directory is */
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}
