/*
 * fg_pbsize.h - what protobuf-c would allocate to unpack a message,
 * counted from its wire bytes without allocating, so a hostile file is
 * refused before it is decoded.
 *
 * protobuf-c unpacks whatever fits the wire format: 2 bytes of an empty
 * repeated message take its struct and a pointer (a FileDescriptorSet of
 * empty files unpacked to 120 times its size, 7.8 GB for the 64 MiB a
 * descriptor set may be), and every field occurrence takes a 32-byte
 * scan record while its message is parsed (31 million repeats of one
 * scalar took 1 GB).  The count covers the sizes protobuf-c asks for:
 * the structs, repeated arrays, strings, bytes and unknown fields kept,
 * and the scan records, counted at twice their size for the slabs that
 * hold them; malloc's own rounding of each block comes on top.
 *
 * What the count cannot price is refused instead: bytes that do not parse
 * here (protobuf-c accepts some this reader does not, such as a 10-byte
 * varint past 64 bits, and would decode what follows), nesting deeper
 * than FG_PBSIZE_MAX_DEPTH, and a second occurrence of a message field
 * that is not repeated (protobuf-c merges it into the first, copying the
 * first's arrays each time: quadratic; protoc and feedguardd never write
 * one).  Stateless; any thread.
 */
#ifndef FG_PBSIZE_H
#define FG_PBSIZE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Message fields followed below the top message, at most: above a
 * descriptor set's 64 levels of nested types (FG_SCHEMA_MAX_NESTING) and
 * the few levels below them; capture records are a few levels deep. */
#define FG_PBSIZE_MAX_DEPTH 100

/*
 * fg_pbsize_check - whether unpacking the <len> bytes at <data> as a
 * message of descriptor <d> (one of feedguard's own: at most 64 fields a
 * message type) stays within <budget> bytes.  Returns 0 (within),
 * FG_ETOOBIG (over it; the walk stops there) or FG_EINVAL (bytes the
 * count cannot price, above: refuse them too).
 */
int fg_pbsize_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, uint64_t budget);

#endif /* FG_PBSIZE_H */
