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
 * scalar took 1 GB).  The count is an upper bound of both: the structs,
 * repeated arrays, strings, bytes and unknown fields kept, plus a scan
 * record per occurrence.  Stateless; any thread.
 */
#ifndef FG_PBSIZE_H
#define FG_PBSIZE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/*
 * fg_pbsize_within - 1 when unpacking the <len> bytes at <data> as a
 * message of descriptor <d> allocates at most <budget> bytes, else 0 (the
 * walk stops once past it).  Bytes that do not parse count what was
 * counted before them: unpack refuses them itself.
 */
int fg_pbsize_within(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, uint64_t budget);

#endif /* FG_PBSIZE_H */
