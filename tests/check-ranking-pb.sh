#!/bin/sh
# policies/ranking.pb (committed, so the policies work from the source tree
# and installed) must describe what proto/ says: compare it, decoded, with
# the descriptor set the build made from proto/ (FG_RANKING_PB).  Decoded
# text, not bytes, so a protoc that orders or encodes a field differently
# does not fail a good file.  To refresh it: cp build/proto/ranking.pb policies/
set -eu
src=${FG_SRCDIR:?}
built=${FG_RANKING_PB:?}
protoc=${PROTOC:-protoc}
inc=${PROTOBUF_INCLUDEDIR:-/usr/include}
decode() {
	"$protoc" -I"$inc" --decode=google.protobuf.FileDescriptorSet google/protobuf/descriptor.proto < "$1"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
decode "$src/policies/ranking.pb" > "$tmp/committed"
decode "$built" > "$tmp/built"
if ! diff -u "$tmp/committed" "$tmp/built" > "$tmp/diff"; then
	head -40 "$tmp/diff" >&2
	echo "policies/ranking.pb differs from proto/ (decoded above); refresh it: cp build/proto/ranking.pb policies/" >&2
	exit 1
fi
grep -q 'name: "feedguard/ranking/v1/ranking.proto"' "$tmp/committed" || {
	echo "policies/ranking.pb does not hold feedguard/ranking/v1/ranking.proto" >&2
	exit 1
}
echo "policies/ranking.pb matches proto/"
