/*
 * fg_pbmsg.h - a tiny protobuf wire encoder for unit tests that build
 * messages by hand (test_pbwire, test_items): a fixed buffer and one
 * function per field kind, each asserting (cmocka) that the buffer has
 * room.  Include after <cmocka.h> and fg_pbwire.h; define FG_PBMSG_CAP
 * first for a buffer other than 200000 bytes (room for fields with
 * 3-byte lengths).  Fixed-width values are written little-endian whatever
 * the host, as the wire format wants.
 */
#ifndef FG_PBMSG_H
#define FG_PBMSG_H

#ifndef FG_PBMSG_CAP
#define FG_PBMSG_CAP 200000
#endif

struct msg {
	uint8_t b[FG_PBMSG_CAP];
	size_t n;
};

static inline void put_raw(struct msg *m, const void *p, size_t n)
{
	assert_true(m->n + n <= sizeof(m->b));
	if (n)
		memcpy(m->b + m->n, p, n);
	m->n += n;
}

static inline void put_varint(struct msg *m, uint64_t v)
{
	uint8_t tmp[FG_PBWIRE_VARINT_MAX];

	put_raw(m, tmp, fg_pbwire_write_varint(tmp, v));
}

static inline void put_tag(struct msg *m, uint32_t number, unsigned wire_type)
{
	put_varint(m, (uint64_t)number << 3 | wire_type);
}

/* <n> bytes of the little-endian form of <u>. */
static inline void put_le(struct msg *m, uint64_t u, size_t n)
{
	uint8_t le[8];
	size_t i;

	for (i = 0; i < n; i++)
		le[i] = (uint8_t)(u >> (8 * i));
	put_raw(m, le, n);
}

static inline void f_varint(struct msg *m, uint32_t number, uint64_t v)
{
	put_tag(m, number, FG_PBWIRE_VARINT);
	put_varint(m, v);
}

static inline void f_bytes(struct msg *m, uint32_t number, const void *p, size_t n)
{
	put_tag(m, number, FG_PBWIRE_LEN);
	put_varint(m, n);
	put_raw(m, p, n);
}

static inline void f_str(struct msg *m, uint32_t number, const char *s)
{
	f_bytes(m, number, s, strlen(s));
}

static inline void f_msg(struct msg *m, uint32_t number, const struct msg *sub)
{
	f_bytes(m, number, sub->b, sub->n);
}

static inline void f_double(struct msg *m, uint32_t number, double d)
{
	uint64_t u;

	memcpy(&u, &d, 8);
	put_tag(m, number, FG_PBWIRE_I64);
	put_le(m, u, 8);
}

static inline void f_float(struct msg *m, uint32_t number, float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	put_tag(m, number, FG_PBWIRE_I32);
	put_le(m, u, 4);
}

#endif /* FG_PBMSG_H */
