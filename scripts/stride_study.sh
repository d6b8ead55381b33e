#!/usr/bin/env bash
# Issue 9: the paired stem-stride fidelity study (docs/fidelity.md), on one CPU core. Both arms' zero-cost
# and proxy jobs first, then the references of both arms in alternating slices of 2 architectures (the
# same ones, in layout order), so that a study stopped early still has complete, paired architectures.
set -u
NF=${NF:-.venv/bin/nas-fidelity}
run() { "$NF" "$@" || { rc=$?; [ $rc -ne 0 ] && echo "nas-fidelity $* -> exit $rc"; [ $rc -ge 128 ] && exit $rc; }; }
run search_spaces/studies/stride2-cifar.yaml --name stride2-cifar --max-jobs 24
run search_spaces/studies/stride1-cifar.yaml --name stride1-cifar --max-jobs 24
for i in 1 2 3 4 5 6; do
  run --resume runs/stride2-cifar --max-jobs 2
  run --resume runs/stride1-cifar --max-jobs 2
done
