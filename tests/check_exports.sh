#!/usr/bin/env bash
# check_exports.sh B - DESIGN.md section 3, rules 4 and 11: liblorakit
# exports only lk_ functions (and exactly those declared LK_API in abi/),
# the staged lk_x_ ones (abi/lorakit_staging.h) under the version node
# LORAKIT_X and every other one under LORAKIT_2 (core/liblorakit.map), and
# each plugin in B/plugins exports exactly lk_plugin_entry.
set -u
B=${1:-build}
fail=0
lib=$B/liblorakit.so.2
defined() { nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRVWiu]$/ {print $3}' | sed 's/@.*//' | sort -u; }

got=$(defined "$lib")
stray=$(printf '%s\n' "$got" | grep -v '^lk_' | grep -v '^LORAKIT_' | tr "\n" " " || true)
if [ -n "$stray" ]; then echo "exports: $lib exports non-lk_ symbols: $stray"; fail=1; fi
declared=$(grep -h '^LK_API ' abi/*.h | grep -o 'lk_[a-z0-9_]*(' | tr -d '(' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$declared") <(printf '%s\n' "$got") | tr "\n" " ")
extra=$(comm -13 <(printf '%s\n' "$declared") <(printf '%s\n' "$got" | grep '^lk_') | tr "\n" " ")
if [ -n "$missing" ]; then echo "exports: declared LK_API but not exported: $missing"; fail=1; fi
if [ -n "$extra" ]; then echo "exports: exported but not declared LK_API in abi/: $extra"; fail=1; fi

# name@@NODE of every defined lk_ symbol: staged ones under LORAKIT_X only.
versions=$(readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && $8 ~ /^lk_/ {print $8}')
wrong=$(printf '%s\n' "$versions" | awk -F'@@' '
  NF != 2 { print $0 " (unversioned)"; next }
  $1 ~ /^lk_x_/ && $2 != "LORAKIT_X" { print $0 " (staged: expected @@LORAKIT_X)"; next }
  $1 !~ /^lk_x_/ && $2 != "LORAKIT_2" { print $0 " (stable: expected @@LORAKIT_2)" }' | tr "\n" " ")
if [ -n "$wrong" ]; then echo "exports: symbols under the wrong version node: $wrong"; fail=1; fi
n_x=$(printf '%s\n' "$versions" | grep -c '^lk_x_' || true)

for p in "$B"/plugins/*.so; do
  syms=$(defined "$p" | tr '\n' ' ')
  if [ "$syms" != "lk_plugin_entry " ]; then echo "exports: $p exports '$syms', expected only lk_plugin_entry"; fail=1; fi
  if readelf -d "$p" | grep -q 'NEEDED.*liblorakit'; then echo "exports: $p links liblorakit"; fail=1; fi
done
[ $fail = 0 ] && echo "exports: liblorakit exports exactly its $(printf '%s\n' "$declared" | wc -l) LK_API functions ($n_x staged under LORAKIT_X, the rest under LORAKIT_2); plugins export only lk_plugin_entry"
exit $fail
