#!/bin/sh
# tests/man/lint.sh - the manual pages the build made from README.md
# (contrib/man/mkman.py) render without a warning: groff -ww (what man
# --warnings and lintian run), and mandoc -Tlint when it is installed.
# Run by `make check` from the build directory, where the pages are.
set -u
pages="feedguardd.8 feedguardctl.8 feedguard-replay.1 feedguard.yaml.5 feedguard-policy.5"
if ! command -v groff >/dev/null 2>&1; then
	echo "lint.sh: groff not installed (Debian: groff-base); skipped"
	exit 77
fi
fail=0
for p in $pages; do
	if [ ! -s "$p" ]; then
		echo "lint.sh: $p: missing (make builds it)"
		fail=1
		continue
	fi
	out=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$p" 2>&1)
	if [ -n "$out" ]; then
		printf 'lint.sh: %s: groff -ww:\n%s\n' "$p" "$out"
		fail=1
	fi
	# the page has its sections: NAME first, SEE ALSO last
	if ! grep -q '^\.SH NAME$' "$p" || ! grep -q '^\.SH "SEE ALSO"$' "$p"; then
		echo "lint.sh: $p: no NAME or SEE ALSO section"
		fail=1
	fi
	if command -v mandoc >/dev/null 2>&1; then
		# STYLE messages (a long NAME line) are advice, not faults
		out=$(mandoc -Tlint -Wwarning "$p" 2>&1)
		if [ -n "$out" ]; then
			printf 'lint.sh: %s: mandoc -Tlint:\n%s\n' "$p" "$out"
			fail=1
		fi
	fi
done
[ $fail -eq 0 ] && echo "lint.sh: $pages: no warnings"
exit $fail
