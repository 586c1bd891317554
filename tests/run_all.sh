#!/bin/sh
# Runs every test binary given, then prints one closing line
# "check: N passed, M failed" counted from cmocka's own summaries.
# Exits non-zero if any test (or any binary) failed.
pass=0; fail=0; bad=0
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    pass=$((pass + p)); fail=$((fail + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$t: exited with status $rc"; bad=$((bad + 1)); fail=$((fail + 1))
    fi
done
echo "check: $pass passed, $fail failed"
[ $fail -eq 0 ] && [ $bad -eq 0 ]
