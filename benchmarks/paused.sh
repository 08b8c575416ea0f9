#!/usr/bin/env bash
# Runs COMMAND with the background training jobs (tools/train-demo/train.py, distill_lcm.py) paused, and always
# resumes it afterwards, also on error, Ctrl-C or timeout. Only that job is paused; other load on
# the machine is measured and reported by the benchmarks ("other load").
#   benchmarks/paused.sh .build-bench/release/panorama-benchmarks unet
set -u
pids=$(pgrep -f 'train-demo/train\.py|distill_lcm\.py' || true)
resume() { [ -n "$pids" ] && kill -CONT $pids 2>/dev/null; }
trap resume EXIT INT TERM HUP
if [ -n "$pids" ]; then kill -STOP $pids; echo "paused training job: $pids" >&2; fi
"$@"
