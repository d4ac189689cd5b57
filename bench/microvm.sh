#!/usr/bin/env bash
# microvm boundary vs raw QEMU in the same run: cold boot, snapshot start, pause/resume, RSS per idle sandbox.
# Usage: sudo bench/microvm.sh   (records output in bench/results/)
exec "$(dirname "$0")/run.sh" microvm --microvm "$@"
