#!/usr/bin/env bash
# Packs a built dagrun into the release tarball of one target:
#   dist/dagrun-<version>-<target>.tar.gz holding dagrun-<version>-<target>/ with the binary,
#   README.md, docs/, LICENSE-MIT, LICENSE-APACHE, shell completions (bash, zsh, fish, PowerShell) and
#   the man page, and dist/dagrun-<version>-<target>.tar.gz.sha256 beside it.
#
# usage: scripts/package.sh TARGET BINARY [DIST]
#   TARGET  the Rust target triple, e.g. x86_64-unknown-linux-gnu
#   BINARY  the built dagrun (it is run to write the completions and the man page, so it must be
#           built for the machine that packs it)
#   DIST    where the tarball goes (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
  echo "usage: scripts/package.sh TARGET BINARY [DIST]" >&2
  exit 2
fi
target="$1"
binary="$2"
dist="${3:-dist}"
if [[ ! -x "$binary" ]]; then
  echo "error: $binary is not an executable dagrun" >&2
  exit 1
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
name="dagrun-${version}-${target}"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/completions" "$root/man"
cp "$binary" "$root/dagrun"
cp README.md LICENSE-MIT LICENSE-APACHE "$root/"
cp -R docs "$root/docs"
"$binary" completions bash >"$root/completions/dagrun.bash"
"$binary" completions zsh >"$root/completions/_dagrun"
"$binary" completions fish >"$root/completions/dagrun.fish"
"$binary" completions powershell >"$root/completions/_dagrun.ps1"
"$binary" man >"$root/man/dagrun.1"

mkdir -p "$dist"
tarball="$dist/$name.tar.gz"
# Reproducible: sorted names, fixed owner and times.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2000-01-01 00:00Z' \
  -C "$stage" -czf "$tarball" "$name"
(cd "$dist" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "$tarball"
