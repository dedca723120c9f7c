#!/bin/sh
# contrib/k8s/render.sh: print the Kubernetes sidecar example's manifests,
# ready for `kubectl apply -f -` (README.md, "Kubernetes: feedguardd as a
# sidecar"):
#
#   1. the ConfigMap feedguard-config-<hash>, made from the pod's feedguardd
#      config (feedguard.yaml beside this script) and the policy (default
#      policies/uk-children.yaml; the key is policy.yaml whichever policy
#      -p names, as the config expects), whose descriptor_set line is
#      rewritten to the descriptor set the pod mounts from the Secret.  <hash> is the
#      first 16 hex digits of the SHA-256 of the ConfigMap's data as
#      printed, so a changed config or policy is a new ConfigMap, and the
#      one the running pods mount never changes: it is immutable: true.
#      Its label app.kubernetes.io/component: feedguard-config selects the
#      old ones to delete (README);
#   2. deployment.yaml, its volume naming that ConfigMap, so that any change
#      to the config or the policy changes the pod template and rolls the
#      pods, and `kubectl rollout undo` brings back the old ConfigMap too;
#   3. service.yaml and networkpolicy.yaml as they are.
#
# Usage: contrib/k8s/render.sh [-c CONFIG] [-p POLICY] | kubectl apply -f -
# Needs only a POSIX shell, sed, awk and sha256sum (or shasum).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
config=$here/feedguard.yaml
policy=$here/../../policies/uk-children.yaml
# Where deployment.yaml mounts the Secret's ranking.pb.
descriptor_set=/etc/feedguard/secret/ranking.pb

usage() {
	echo "usage: $0 [-c CONFIG] [-p POLICY]" >&2
	exit 2
}
while getopts c:p: opt; do
	case $opt in
	c) config=$OPTARG ;;
	p) policy=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage

for f in "$config" "$policy" "$here/deployment.yaml" "$here/service.yaml" "$here/networkpolicy.yaml"; do
	[ -r "$f" ] || { echo "$0: cannot read $f" >&2; exit 1; }
done
# The pod mounts the policy as policy/policy.yaml, whichever -p names: a
# config of one's own (-c) must name that path (it named uk-children.yaml
# before 2026-12-07).
if ! grep -q '^policy: /etc/feedguard/policy/policy.yaml\([[:space:]]\|$\)' "$config"; then
	echo "$0: $config: its policy: line must be 'policy: /etc/feedguard/policy/policy.yaml', where the pod mounts the policy" >&2
	exit 1
fi
n=$(grep -c '^descriptor_set:' "$policy" || true)
if [ "$n" != 1 ]; then
	echo "$0: $policy: expected one top-level 'descriptor_set:' line, found $n" >&2
	exit 1
fi

if command -v sha256sum >/dev/null 2>&1; then
	sha256() { sha256sum | cut -c1-64; }
else
	sha256() { shasum -a 256 | cut -c1-64; }
fi

# <file> as the value of a ConfigMap key: a literal block scalar with an
# explicit indentation (a first line may start with spaces) that keeps
# every line and the final newline as they are ("|2+"; awk ends the last
# line with a newline if the file does not).
block() {
	printf '  %s: |2+\n' "$1"
	awk '{ print "    " $0 }'
}

# The ConfigMap's data, hashed for its name.
data() {
	echo data:
	block feedguard.yaml <"$config"
	sed "s|^descriptor_set:.*|descriptor_set: $descriptor_set   # the Secret's ranking.pb (render.sh)|" \
		"$policy" | block policy.yaml
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
data >"$tmp"
hash=$(sha256 <"$tmp" | cut -c1-16)

cat <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: feedguard-config-$hash
  labels:
    app.kubernetes.io/name: ranker
    app.kubernetes.io/component: feedguard-config
immutable: true
EOF
cat "$tmp"
echo ---
sed "s|@CONFIG_HASH@|$hash|" "$here/deployment.yaml"
echo ---
cat "$here/service.yaml"
echo ---
cat "$here/networkpolicy.yaml"
