#!/usr/bin/env bash
# container boundary vs raw `runc run` of the same bundle in the same run: create -> first output.
# Usage: sudo bench/container.sh   (records output in bench/results/)
exec "$(dirname "$0")/run.sh" container --container "$@"
