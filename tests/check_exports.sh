#!/usr/bin/env bash
# check_exports.sh B - DESIGN.md section 3, rules 4 and 11: liblorakit
# exports only lk_ functions (and exactly those declared LK_API in abi/), and
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

for p in "$B"/plugins/*.so; do
  syms=$(defined "$p" | tr '\n' ' ')
  if [ "$syms" != "lk_plugin_entry " ]; then echo "exports: $p exports '$syms', expected only lk_plugin_entry"; fail=1; fi
  if readelf -d "$p" | grep -q 'NEEDED.*liblorakit'; then echo "exports: $p links liblorakit"; fail=1; fi
done
[ $fail = 0 ] && echo "exports: liblorakit exports exactly its $(printf '%s\n' "$declared" | wc -l) LK_API functions; plugins export only lk_plugin_entry"
exit $fail
