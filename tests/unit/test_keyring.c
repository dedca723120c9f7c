/*
 * test_keyring.c - cmocka group "keyring": fg_keyring.h through its header.
 *
 * Keys are files written into a private temporary directory.  Expected
 * pseudonyms are HMAC-SHA256 values computed outside feedguard, with
 * python3's hmac module:
 *   python3 -c 'import hmac, hashlib; print(hmac.new(KEY, MSG, hashlib.sha256).hexdigest())'
 * and one is RFC 4231's test case 1 (key 20 x 0x0b, "Hi There").
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_error.h"
#include "fg_keyring.h"

/* 32 bytes, no newline. */
#define KEY1 "0123456789abcdef0123456789abcdef"
/* 16 bytes, the minimum, of which the newline is one: part of the key. */
#define KEY_NL "sixteen bytes!!\n"

/* HMAC-SHA256(KEY1, "alice"), (KEY1, ""), (KEY1, "a\0b") */
#define H_KEY1_ALICE "433deb45467e4e53dbaba594c88bc3a200f705a2150788c3d11e6040e63e8510"
#define H_KEY1_EMPTY "796cd3078af14636753d26b3b5555422ff55a3e261cf847b48e95371b9bd0aa2"
#define H_KEY1_A0B "e702259e5d12783639259f6db6204b40ae519aff98da2a678473065a7aaf26ce"
/* RFC 4231 test case 1 */
#define H_RFC4231_1 "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
/* HMAC-SHA256(KEY_NL, "alice"); and without the newline, which must not match */
#define H_NL_ALICE "b3a56a82ce056ab7633397ec41c2b6eec87f91b5e323702fbbe17263a8ae15e3"
#define H_NONL_ALICE "dae4622df66fd328a2354a4747a543e1f56bb70ec2f9de9d3c008ea170825bb6"
/* HMAC-SHA256(bytes((i * 7) % 256 for i in range(1024)), "alice") */
#define H_BIG_ALICE "87ae0bcc96031e63cb4ffe42ba3e4ae75fa71c7635c1c8dafdc24b015572c6d2"

static char dir[PATH_MAX];
static const char *const files[] = { "k1", "nl", "rfc", "big", "short", "long", "empty" };

static void path_of(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static void write_key(const char *name, const void *data, size_t len)
{
	char path[PATH_MAX + 16];
	FILE *fp;

	path_of(path, sizeof(path), name);
	fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

static int setup(void **state)
{
	unsigned char big[FG_KEYRING_MAX_KEY + 1], rfc[20];
	size_t i;

	snprintf(dir, sizeof(dir), "%s/fg-test-keyring.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	for (i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 % 256);
	memset(rfc, 0x0b, sizeof(rfc));
	write_key("k1", KEY1, strlen(KEY1));
	write_key("nl", KEY_NL, strlen(KEY_NL));
	write_key("rfc", rfc, sizeof(rfc));
	write_key("big", big, FG_KEYRING_MAX_KEY);
	write_key("short", KEY1, FG_KEYRING_MIN_KEY - 1);
	write_key("long", big, sizeof(big));
	write_key("empty", "", 0);
	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	char path[PATH_MAX + 16];
	size_t i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path_of(path, sizeof(path), files[i]);
		unlink(path);
	}
	rmdir(dir);
	return 0;
}

/* fg_keyring_add_file with file <name> of the directory ("" for the
 * directory itself); <why> receives the message. */
static int add(struct fg_keyring *ring, const char *id, const char *name, char *why, size_t whylen)
{
	char path[PATH_MAX + 16];

	path_of(path, sizeof(path), name);
	memset(why, 'x', whylen - 1);
	why[whylen - 1] = '\0';
	return fg_keyring_add_file(ring, id, path, why, whylen);
}

/* add() that must fail with <rc> and message <want>, leaving <ring> as it was. */
static void expect_add_error(struct fg_keyring *ring, const char *id, const char *name, int rc, const char *want)
{
	struct fg_keyring before = *ring;
	char why[PATH_MAX + 256];

	assert_int_equal(add(ring, id, name, why, sizeof(why)), rc);
	assert_string_equal(why, want);
	assert_memory_equal(ring, &before, sizeof(before));
}

/* The same for a message about the file: "<its path>: <want>". */
static void expect_file_error(struct fg_keyring *ring, const char *id, const char *name, int rc, const char *want)
{
	char path[PATH_MAX + 16], msg[PATH_MAX + 256];

	path_of(path, sizeof(path), name);
	snprintf(msg, sizeof(msg), "%s: %s", path, want);
	expect_add_error(ring, id, name, rc, msg);
}

static void test_add_files(void **state)
{
	struct fg_keyring ring;
	char why[256];

	memset(&ring, 0, sizeof(ring));
	assert_int_equal(add(&ring, "2024-01", "k1", why, sizeof(why)), 0);
	assert_int_equal(add(&ring, "nl", "nl", why, sizeof(why)), 0);
	assert_int_equal(add(&ring, "big.v1", "big", why, sizeof(why)), 0);
	assert_int_equal(ring.n, 3);
	assert_string_equal(ring.keys[0].id, "2024-01");
	assert_int_equal(ring.keys[0].len, 32);
	assert_memory_equal(ring.keys[0].secret, KEY1, 32);
	assert_string_equal(ring.keys[1].id, "nl");
	assert_int_equal(ring.keys[1].len, 16);            /* the newline is kept */
	assert_memory_equal(ring.keys[1].secret, KEY_NL, 16);
	assert_int_equal(ring.keys[2].len, FG_KEYRING_MAX_KEY);
	assert_int_equal(ring.keys[2].secret[FG_KEYRING_MAX_KEY - 1], (FG_KEYRING_MAX_KEY - 1) * 7 % 256);
	fg_keyring_wipe(&ring);
}

static void test_add_errors(void **state)
{
	struct fg_keyring ring;
	char why[256], id[FG_KEYRING_ID_MAX + 2];

	memset(&ring, 0, sizeof(ring));
	assert_int_equal(add(&ring, "a", "k1", why, sizeof(why)), 0);
	expect_file_error(&ring, "b", "short", FG_EINVAL, "a key must hold 16 to 1024 bytes (it has 15)");
	expect_file_error(&ring, "b", "empty", FG_EINVAL, "a key must hold 16 to 1024 bytes (it has 0)");
	expect_file_error(&ring, "b", "long", FG_EINVAL,
	                  "a key must hold 16 to 1024 bytes (it has more than 1024)");
	errno = 0;
	expect_file_error(&ring, "b", "missing", FG_EIO, "cannot open: No such file or directory");
	assert_int_equal(errno, ENOENT);
	errno = 0;
	expect_file_error(&ring, "b", "", FG_EIO,
	                  "cannot open: not a regular file (a FIFO, a socket, a device or a directory)");
	assert_int_equal(errno, EINVAL);
	/* The id goes into every pseudonym and state key: plain characters,
	 * 1 to 32 of them; checked before the file is read. */
	expect_add_error(&ring, "", "k1", FG_EINVAL, "a key id is 1 to 32 of [A-Za-z0-9._-]");
	expect_add_error(&ring, "a:b", "k1", FG_EINVAL, "a key id is 1 to 32 of [A-Za-z0-9._-]");
	expect_add_error(&ring, "a b", "k1", FG_EINVAL, "a key id is 1 to 32 of [A-Za-z0-9._-]");
	expect_add_error(&ring, "k\xc3\xa9", "k1", FG_EINVAL, "a key id is 1 to 32 of [A-Za-z0-9._-]");
	memset(id, 'i', FG_KEYRING_ID_MAX + 1);
	id[FG_KEYRING_ID_MAX + 1] = '\0';
	expect_add_error(&ring, id, "k1", FG_EINVAL, "a key id is 1 to 32 of [A-Za-z0-9._-]");
	id[FG_KEYRING_ID_MAX] = '\0';
	expect_add_error(&ring, "a", "nl", FG_EINVAL, "key id 'a' is used twice");
	assert_int_equal(add(&ring, id, "nl", why, sizeof(why)), 0);   /* 32 is fine */
	assert_string_equal(ring.keys[1].id, id);
	/* A failed add leaves the slot it tried clean: no bytes of a key
	 * that was refused stay in memory. */
	expect_file_error(&ring, "c", "long", FG_EINVAL,
	                  "a key must hold 16 to 1024 bytes (it has more than 1024)");
	assert_int_equal(ring.keys[2].len, 0);
	assert_int_equal(ring.keys[2].secret[0], 0);
	assert_int_equal(ring.keys[2].secret[FG_KEYRING_MAX_KEY - 1], 0);
	fg_keyring_wipe(&ring);
}

static void test_ring_full(void **state)
{
	struct fg_keyring ring;
	char why[64], id[16];
	int i;

	memset(&ring, 0, sizeof(ring));
	for (i = 0; i < FG_KEYRING_MAX_KEYS; i++) {
		snprintf(id, sizeof(id), "k%d", i);
		assert_int_equal(add(&ring, id, "k1", why, sizeof(why)), 0);
	}
	assert_int_equal(ring.n, FG_KEYRING_MAX_KEYS);
	expect_add_error(&ring, "k9", "k1", FG_ETOOBIG, "at most 8 keys");
	/* Full is checked first: even a bad id or file says so. */
	expect_add_error(&ring, "", "missing", FG_ETOOBIG, "at most 8 keys");
	/* A short <why> is cut and terminated. */
	assert_int_equal(add(&ring, "k9", "k1", why, 5), FG_ETOOBIG);
	assert_string_equal(why, "at m");
	fg_keyring_wipe(&ring);
}

static struct fg_keyring_ctx *ring_ctx(struct fg_keyring *ring)
{
	struct fg_keyring_ctx *ctx;
	char why[256];

	memset(ring, 0, sizeof(*ring));
	assert_int_equal(add(ring, "2024-01", "k1", why, sizeof(why)), 0);
	assert_int_equal(add(ring, "rfc", "rfc", why, sizeof(why)), 0);
	assert_int_equal(add(ring, "nl", "nl", why, sizeof(why)), 0);
	assert_int_equal(add(ring, "big", "big", why, sizeof(why)), 0);
	ctx = fg_keyring_ctx_new(ring);
	assert_non_null(ctx);
	return ctx;
}

/* The pseudonym of <user> (<len> bytes) under key <index>: "<id>:<hex>". */
static void expect_pseudonym(struct fg_keyring_ctx *ctx, size_t index, const char *user, size_t len,
                             const char *id, const char *hex)
{
	char out[FG_KEYRING_PSEUDONYM_MAX], want[FG_KEYRING_PSEUDONYM_MAX];
	int n;

	memset(out, 'x', sizeof(out));
	n = fg_keyring_pseudonym(ctx, index, user, len, out, sizeof(out));
	snprintf(want, sizeof(want), "%s:%s", id, hex);
	assert_int_equal(n, strlen(want));
	assert_string_equal(out, want);
}

static void test_pseudonyms(void **state)
{
	struct fg_keyring ring;
	struct fg_keyring_ctx *ctx = ring_ctx(&ring);

	expect_pseudonym(ctx, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	expect_pseudonym(ctx, 0, "", 0, "2024-01", H_KEY1_EMPTY);
	expect_pseudonym(ctx, 0, "a\0b", 3, "2024-01", H_KEY1_A0B);   /* bytes, not a C string */
	expect_pseudonym(ctx, 1, "Hi There", 8, "rfc", H_RFC4231_1);
	expect_pseudonym(ctx, 2, "alice", 5, "nl", H_NL_ALICE);
	expect_pseudonym(ctx, 3, "alice", 5, "big", H_BIG_ALICE);
	/* The keyed template is not used up: the same again, in another order. */
	expect_pseudonym(ctx, 1, "Hi There", 8, "rfc", H_RFC4231_1);
	expect_pseudonym(ctx, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	expect_pseudonym(ctx, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	fg_keyring_ctx_free(ctx);
	fg_keyring_wipe(&ring);
}

static void test_pseudonym_format(void **state)
{
	struct fg_keyring ring;
	struct fg_keyring_ctx *ctx = ring_ctx(&ring);
	char out[FG_KEYRING_PSEUDONYM_MAX + 8];
	size_t i;
	int n;

	n = fg_keyring_pseudonym(ctx, 2, "bob", 3, out, sizeof(out));
	assert_int_equal(n, 3 + 64);
	assert_int_equal(strlen(out), (size_t)n);
	assert_memory_equal(out, "nl:", 3);
	for (i = 3; i < (size_t)n; i++)
		assert_non_null(strchr("0123456789abcdef", out[i]));
	/* The key without its newline would give another value. */
	expect_pseudonym(ctx, 2, "alice", 5, "nl", H_NL_ALICE);
	assert_string_not_equal(H_NL_ALICE, H_NONL_ALICE);
	fg_keyring_ctx_free(ctx);
	fg_keyring_wipe(&ring);
}

/* The longest id fills FG_KEYRING_PSEUDONYM_MAX exactly; one byte less is
 * refused and nothing is written. */
static void test_longest_id(void **state)
{
	char id[FG_KEYRING_ID_MAX + 1], why[128], out[FG_KEYRING_PSEUDONYM_MAX];
	struct fg_keyring ring;
	struct fg_keyring_ctx *ctx;

	memset(&ring, 0, sizeof(ring));
	memset(id, 'z', FG_KEYRING_ID_MAX);
	id[FG_KEYRING_ID_MAX] = '\0';
	assert_int_equal(add(&ring, id, "k1", why, sizeof(why)), 0);
	ctx = fg_keyring_ctx_new(&ring);
	assert_non_null(ctx);
	memset(out, 'x', sizeof(out));
	assert_int_equal(fg_keyring_pseudonym(ctx, 0, "alice", 5, out, sizeof(out)), FG_KEYRING_PSEUDONYM_MAX - 1);
	assert_int_equal(out[FG_KEYRING_PSEUDONYM_MAX - 1], '\0');
	assert_memory_equal(out, id, FG_KEYRING_ID_MAX);
	assert_int_equal(out[FG_KEYRING_ID_MAX], ':');
	assert_string_equal(out + FG_KEYRING_ID_MAX + 1, H_KEY1_ALICE);
	memset(out, 'x', sizeof(out));
	assert_int_equal(fg_keyring_pseudonym(ctx, 0, "alice", 5, out, sizeof(out) - 1), FG_EINVAL);
	assert_int_equal(out[0], 'x');
	fg_keyring_ctx_free(ctx);
	fg_keyring_wipe(&ring);
}

static void test_key_index(void **state)
{
	struct fg_keyring ring;
	struct fg_keyring_ctx *ctx = ring_ctx(&ring);
	char out[FG_KEYRING_PSEUDONYM_MAX];

	/* Index 0 is the newest (first added); past the last is refused. */
	expect_pseudonym(ctx, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	assert_int_equal(fg_keyring_pseudonym(ctx, 4, "alice", 5, out, sizeof(out)), FG_EINVAL);
	assert_int_equal(fg_keyring_pseudonym(ctx, FG_KEYRING_MAX_KEYS, "alice", 5, out, sizeof(out)), FG_EINVAL);
	assert_int_equal(fg_keyring_pseudonym(ctx, (size_t)-1, "alice", 5, out, sizeof(out)), FG_EINVAL);
	fg_keyring_ctx_free(ctx);
	fg_keyring_wipe(&ring);

	/* An empty ring gives a context with no key to use. */
	memset(&ring, 0, sizeof(ring));
	ctx = fg_keyring_ctx_new(&ring);
	assert_non_null(ctx);
	assert_int_equal(fg_keyring_pseudonym(ctx, 0, "alice", 5, out, sizeof(out)), FG_EINVAL);
	fg_keyring_ctx_free(ctx);
	fg_keyring_ctx_free(NULL);
}

/* Several contexts over one ring (one per worker) agree, and each is
 * independent of the others' use and release. */
static void test_ctx_per_worker(void **state)
{
	struct fg_keyring ring;
	struct fg_keyring_ctx *a = ring_ctx(&ring), *b = fg_keyring_ctx_new(&ring), *c = fg_keyring_ctx_new(&ring);

	assert_non_null(b);
	assert_non_null(c);
	expect_pseudonym(a, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	expect_pseudonym(b, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	fg_keyring_ctx_free(a);
	expect_pseudonym(c, 1, "Hi There", 8, "rfc", H_RFC4231_1);
	expect_pseudonym(b, 3, "alice", 5, "big", H_BIG_ALICE);
	fg_keyring_ctx_free(c);
	fg_keyring_ctx_free(b);
	fg_keyring_wipe(&ring);
}

static void test_wipe(void **state)
{
	struct fg_keyring ring, zero;
	struct fg_keyring_ctx *ctx = ring_ctx(&ring);

	memset(&zero, 0, sizeof(zero));
	fg_keyring_ctx_free(ctx);
	assert_int_equal(ring.n, 4);
	fg_keyring_wipe(&ring);
	assert_memory_equal(&ring, &zero, sizeof(ring));
	/* A wiped ring is an empty one, ready to be filled again. */
	ctx = ring_ctx(&ring);
	expect_pseudonym(ctx, 0, "alice", 5, "2024-01", H_KEY1_ALICE);
	fg_keyring_ctx_free(ctx);
	fg_keyring_wipe(&ring);
}

/* The leading 64 bits sampling and sharding read: the first 16 hex digits
 * after the key id, either case; not a pseudonym without its ':'. */
static void test_pseudonym_bits(void **state)
{
	uint64_t v = 7;

	(void)state;
	assert_int_equal(fg_keyring_pseudonym_bits("k1:0123456789abcdef99", &v), 0);
	assert_true(v == 0x0123456789abcdefULL);
	assert_int_equal(fg_keyring_pseudonym_bits("k1:0123456789ABCDEF", &v), 0);
	assert_true(v == 0x0123456789abcdefULL);
	assert_int_equal(fg_keyring_pseudonym_bits("k1:ff", &v), 0);
	assert_true(v == 0xff);
	v = 7;
	assert_int_equal(fg_keyring_pseudonym_bits("", &v), FG_EINVAL);
	assert_int_equal(fg_keyring_pseudonym_bits("nokeyid", &v), FG_EINVAL);
	assert_int_equal(fg_keyring_pseudonym_bits(NULL, &v), FG_EINVAL);
	assert_true(v == 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_files),
		cmocka_unit_test(test_add_errors),
		cmocka_unit_test(test_ring_full),
		cmocka_unit_test(test_pseudonyms),
		cmocka_unit_test(test_pseudonym_format),
		cmocka_unit_test(test_longest_id),
		cmocka_unit_test(test_key_index),
		cmocka_unit_test(test_ctx_per_worker),
		cmocka_unit_test(test_wipe),
		cmocka_unit_test(test_pseudonym_bits),
	};

	return cmocka_run_group_tests_name("keyring", tests, setup, teardown);
}
