#!/usr/bin/env sh
# Installs a released dagrun: downloads the tarball for this machine, checks it against the
# release's SHA256SUMS, and puts the binary, its man page and completions in place.
#
#   curl -fsSL https://github.com/dagrun/dagrun/releases/latest/download/install.sh | sh
#   sh install.sh --version 0.1.0 --to ~/.local
#
# Options (or environment variables):
#   --version V   (DAGRUN_VERSION)  the release, without the v (default: the latest)
#   --to DIR      (DAGRUN_PREFIX)   installs DIR/bin/dagrun, DIR/share/man/man1/dagrun.1 and the
#                                   completions under DIR/share (default: ~/.local)
#   --from URL    (DAGRUN_RELEASES) where releases live (default: the GitHub releases page);
#                                   file:// URLs work, for mirrors and tests
set -eu

version="${DAGRUN_VERSION:-}"
prefix="${DAGRUN_PREFIX:-$HOME/.local}"
releases="${DAGRUN_RELEASES:-https://github.com/dagrun/dagrun/releases}"
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --to) prefix="$2"; shift 2 ;;
    --from) releases="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "install.sh: $*" >&2; exit 1; }

case "$(uname -s)" in
  Linux) os="unknown-linux-gnu" ;;
  Darwin) os="apple-darwin" ;;
  *) fail "no release for $(uname -s); build from source: cargo install --locked --path ." ;;
esac
case "$(uname -m)" in
  x86_64|amd64) arch="x86_64" ;;
  aarch64|arm64) arch="aarch64" ;;
  *) fail "no release for $(uname -m); build from source: cargo install --locked --path ." ;;
esac
target="${DAGRUN_TARGET:-$arch-$os}"

fetch() { # URL FILE
  if command -v curl >/dev/null 2>&1; then
    curl --proto '=https,file' -fsSL "$1" -o "$2" || fail "could not download $1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q "$1" -O "$2" || fail "could not download $1"
  else
    fail "needs curl or wget"
  fi
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$version" ]; then
  base="$releases/latest/download"
  fetch "$base/SHA256SUMS" "$work/SHA256SUMS"
  version="$(sed -n "s/.*dagrun-\(.*\)-$target\.tar\.gz\$/\1/p" "$work/SHA256SUMS" | head -n 1)"
  [ -n "$version" ] || fail "the latest release has no build for $target"
else
  base="$releases/download/v$version"
  fetch "$base/SHA256SUMS" "$work/SHA256SUMS"
fi
name="dagrun-$version-$target"
fetch "$base/$name.tar.gz" "$work/$name.tar.gz"

expected="$(awk -v f="$name.tar.gz" '$2 == f || $2 == "*" f { print $1 }' "$work/SHA256SUMS")"
[ -n "$expected" ] || fail "SHA256SUMS lists no $name.tar.gz"
actual="$(sha256 "$work/$name.tar.gz")"
[ "$expected" = "$actual" ] || fail "checksum mismatch for $name.tar.gz: expected $expected, got $actual; nothing was installed"

tar -xzf "$work/$name.tar.gz" -C "$work"
src="$work/$name"
mkdir -p "$prefix/bin" "$prefix/share/man/man1" "$prefix/share/bash-completion/completions" \
  "$prefix/share/zsh/site-functions" "$prefix/share/fish/vendor_completions.d"
cp "$src/dagrun" "$prefix/bin/dagrun.tmp.$$" && chmod 755 "$prefix/bin/dagrun.tmp.$$"
mv -f "$prefix/bin/dagrun.tmp.$$" "$prefix/bin/dagrun"
cp "$src/man/dagrun.1" "$prefix/share/man/man1/dagrun.1"
cp "$src/completions/dagrun.bash" "$prefix/share/bash-completion/completions/dagrun"
cp "$src/completions/_dagrun" "$prefix/share/zsh/site-functions/_dagrun"
cp "$src/completions/dagrun.fish" "$prefix/share/fish/vendor_completions.d/dagrun.fish"
echo "installed dagrun $version ($target) in $prefix/bin/dagrun"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "add $prefix/bin to your PATH" ;;
esac
