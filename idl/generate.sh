#!/usr/bin/env bash
# Regenerates idl/src/generated/uploader.rs from idl/uploader.thrift with
# Debian's thrift-compiler 0.17 (`apt-get install thrift-compiler`).
#
#   idl/generate.sh          rewrite the checked-in file
#   idl/generate.sh --check  fail (exit 1) if the checked-in file has drifted
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
want_version="0.17"
if ! command -v thrift >/dev/null 2>&1; then
  echo "idl/generate.sh: the thrift compiler is not installed; run: apt-get install thrift-compiler" >&2
  exit 2
fi
have_version=$(thrift --version | awk '{print $3}')
case "$have_version" in
  "$want_version"*) ;;
  *) echo "idl/generate.sh: thrift $have_version found, $want_version.x expected (Debian thrift-compiler)" >&2; exit 2 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
thrift --gen rs -out "$out" "$here/uploader.thrift"
target="$here/src/generated/uploader.rs"
if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$target" "$out/uploader.rs"; then
    echo "idl/generate.sh: $target is out of date with uploader.thrift; run idl/generate.sh and commit" >&2
    exit 1
  fi
  echo "idl/generate.sh: generated code is up to date"
else
  mkdir -p "$(dirname "$target")"
  cp "$out/uploader.rs" "$target"
  echo "idl/generate.sh: wrote $target"
fi
