# System calls per hit from an `strace -c -f` summary: `awk -v hits=N -v name=NAME -f ...`.
# Prints "NAME TOTAL per hit: call per-hit ..." (calls under 0.05 per hit left out of the list).
$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { calls[$NF] = $4 }
END {
    line = ""; total = 0
    for (call in calls) { per = calls[call] / hits; total += per; if (per >= 0.05) line = line sprintf(" %s %.2f", call, per) }
    printf "%-6s %.2f per hit:%s\n", name, total, line
}
