/* fg_pbsize.c - what protobuf-c allocates to unpack a message; see fg_pbsize.h. */
#include "config.h"

#include "fg_error.h"
#include "fg_pbsize.h"
#include "fg_pbwire.h"

/* protobuf-c 1.4's ScannedMember (tag, wire type, prefix length, field,
 * length, data: 32 bytes on 64-bit), one per field occurrence while its
 * message is parsed, in slabs that double: twice that, at most. */
#define SCAN_COST 64

/* Fields of a message type whose occurrences are tracked (fg_pbsize.h:
 * feedguard's descriptors have fewer). */
#define TRACKED_FIELDS 64

/* Bytes one element of repeated field <fd> takes in its array. */
static size_t element_size(const ProtobufCFieldDescriptor *fd)
{
	switch (fd->type) {
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(void *);
	default:
		return sizeof(uint64_t);
	}
}

/* 1 when repeated field <fd> may come packed (a run of scalars in one
 * length-delimited value). */
static int packable(const ProtobufCFieldDescriptor *fd)
{
	return fd->type != PROTOBUF_C_TYPE_STRING && fd->type != PROTOBUF_C_TYPE_BYTES &&
	       fd->type != PROTOBUF_C_TYPE_MESSAGE;
}

static int message_cost(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, unsigned depth,
                        uint64_t *cost, uint64_t budget);

/* One field <f> of a message, of descriptor <fd> (NULL: unknown), into
 * <*cost>: 0, or FG_ETOOBIG / FG_EINVAL as fg_pbsize_check. */
static int field_cost(const ProtobufCFieldDescriptor *fd, const struct fg_pbwire_field *f, unsigned depth,
                      uint64_t *cost, uint64_t budget)
{
	*cost += SCAN_COST;
	if (!fd) {
		/* kept as an unknown field: its header and a copy of its bytes */
		*cost += sizeof(ProtobufCMessageUnknownField) + f->tag_len + f->vlen + 10;
		return 0;
	}
	if (fd->label == PROTOBUF_C_LABEL_REPEATED)
		/* a packed run is up to one element per byte */
		*cost += element_size(fd) * (f->wire_type == FG_PBWIRE_LEN && packable(fd) ? f->vlen : 1);
	switch (fd->type) {
	case PROTOBUF_C_TYPE_STRING:
		*cost += f->vlen + 1;
		return 0;
	case PROTOBUF_C_TYPE_BYTES:
		*cost += f->vlen;
		return 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		if (f->wire_type != FG_PBWIRE_LEN)
			return 0;
		return message_cost(fd->descriptor, f->value, f->vlen, depth + 1, cost, budget);
	default:
		return 0;
	}
}

/* A message field that is not repeated, seen again: protobuf-c would
 * merge the two (fg_pbsize.h).  <seen> has a bit per field of the type. */
static int merged_again(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *fd, uint64_t *seen)
{
	size_t i;

	if (!fd || fd->type != PROTOBUF_C_TYPE_MESSAGE || fd->label == PROTOBUF_C_LABEL_REPEATED)
		return 0;
	i = (size_t)(fd - d->fields);
	if (i >= TRACKED_FIELDS)
		return 1;       /* not one of feedguard's descriptors: refuse rather than guess */
	if (*seen & (UINT64_C(1) << i))
		return 1;
	*seen |= UINT64_C(1) << i;
	return 0;
}

/* Add to <*cost> what unpacking the <len> bytes at <p> as a message of
 * descriptor <d> allocates: its struct, and its fields'. */
static int message_cost(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, unsigned depth,
                        uint64_t *cost, uint64_t budget)
{
	const uint8_t *end = p + len;
	const ProtobufCFieldDescriptor *fd;
	struct fg_pbwire_field f;
	uint64_t seen = 0;
	int rc;

	*cost += d->sizeof_message;
	if (depth > FG_PBSIZE_MAX_DEPTH)
		return FG_EINVAL;
	while (p < end) {
		if (*cost > budget)
			return FG_ETOOBIG;
		if (fg_pbwire_next_field(&p, end, &f) < 0)
			return FG_EINVAL;
		fd = protobuf_c_message_descriptor_get_field(d, f.number);
		if (merged_again(d, fd, &seen))
			return FG_EINVAL;
		if ((rc = field_cost(fd, &f, depth, cost, budget)) < 0)
			return rc;
	}
	return *cost > budget ? FG_ETOOBIG : 0;
}

int fg_pbsize_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, uint64_t budget)
{
	uint64_t cost = 0;

	return message_cost(d, data, len, 0, &cost, budget);
}
