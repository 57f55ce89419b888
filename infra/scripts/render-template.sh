#!/bin/sh
# render-template.sh IN OUT: copy IN to OUT replacing every ${NAME} with the value of the
# environment variable NAME. Fails (and writes nothing) if a referenced variable is unset.
# Used by the prometheus/alertmanager containers at start and by infra/check.sh.
set -eu
in=$1
out=$2
tmp="$out.tmp.$$"
awk '{
    line = $0; res = ""
    while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*\}/)) {
        name = substr(line, RSTART + 2, RLENGTH - 3)
        if (!(name in ENVIRON)) { printf "render-template: %s is not set\n", name > "/dev/stderr"; bad = 1 }
        res = res substr(line, 1, RSTART - 1) ENVIRON[name]
        line = substr(line, RSTART + RLENGTH)
    }
    print res line
} END { exit bad }' "$in" > "$tmp"
mv "$tmp" "$out"
