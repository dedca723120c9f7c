#!/bin/sh
# Run the feedguard interop suite (see conftest.py for the environment:
# FEEDGUARDD, FG_TIME_FACTOR, FG_DAEMON_WRAPPER, FG_INTEROP_DIRECT=1 ...).
# Extra arguments go to pytest:  ./run.sh -k smoke   ./run.sh -m smoke -v
# The exit code is pytest's.
cd "$(dirname "$0")" || exit 2

if [ ! -d js/node_modules/@grpc/grpc-js ]; then
	echo "run.sh: installing the grpc-js client's packages (npm ci)" >&2
	(cd js && npm ci --no-audit --no-fund --loglevel=error) ||
		echo "run.sh: npm ci failed; test_grpc_js will fail" >&2
fi

exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
