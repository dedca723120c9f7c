#!/bin/sh
# tests/man/lint.sh - the manual pages the build made from README.md
# (contrib/man/mkman.py) render without a warning: groff -ww (what man
# --warnings and lintian run), and mandoc -Tlint when it is installed.
# The pages are made again with a deep sysconfdir and pkgdatadir (make
# distcheck configures its own build directory as the prefix, and CI's
# clones can be deep) and must still render without a warning.
# Run by `make check` from the build directory, where the pages are.
set -u
pages="feedguardd.8 feedguardctl.8 feedguard-replay.1 feedguard.yaml.5 feedguard-policy.5"
if ! command -v groff >/dev/null 2>&1; then
	echo "lint.sh: groff not installed (Debian: groff-base); skipped"
	exit 77
fi
fail=0

# lint_pages DIR: every page in DIR renders without a warning
lint_pages() {
	for p in $pages; do
		f="$1/$p"
		if [ ! -s "$f" ]; then
			echo "lint.sh: $f: missing (make builds it)"
			fail=1
			continue
		fi
		out=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$f" 2>&1)
		if [ -n "$out" ]; then
			printf 'lint.sh: %s: groff -ww:\n%s\n' "$f" "$out"
			fail=1
		fi
		# the page has its sections: NAME first, SEE ALSO last
		if ! grep -q '^\.SH NAME$' "$f" || ! grep -q '^\.SH "SEE ALSO"$' "$f"; then
			echo "lint.sh: $f: no NAME or SEE ALSO section"
			fail=1
		fi
		if command -v mandoc >/dev/null 2>&1; then
			# STYLE messages (a long NAME line) are advice, not faults
			out=$(mandoc -Tlint -Wwarning "$f" 2>&1)
			if [ -n "$out" ]; then
				printf 'lint.sh: %s: mandoc -Tlint:\n%s\n' "$f" "$out"
				fail=1
			fi
		fi
	done
}

lint_pages .

top=${srcdir:-.}
if command -v python3 >/dev/null 2>&1 && [ -f "$top/contrib/man/mkman.py" ]; then
	tmp=$(mktemp -d) || exit 99
	trap 'rm -rf "$tmp"' EXIT
	deep=/home/ci-runner/work/a-rather-long-project-checkout-directory/feedguard/build/feedguard-0.1.0/_build/sub/../../_inst
	for p in $pages; do
		python3 "$top/contrib/man/mkman.py" --readme "$top/README.md" --page "$p" \
			--output "$tmp/$p" --sysconfdir "$deep/etc" --pkgdatadir "$deep/share/feedguard" || fail=1
	done
	lint_pages "$tmp"
fi
[ $fail -eq 0 ] && echo "lint.sh: $pages: no warnings"
exit $fail
