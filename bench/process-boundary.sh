#!/usr/bin/env bash
# Create -> first output and exec round trip through airlockd vs raw bwrap, same machine, same run.
# Usage: sudo bench/process-boundary.sh   (records output in bench/results/)
exec "$(dirname "$0")/run.sh" process-boundary "$@"
