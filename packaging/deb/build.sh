#!/usr/bin/env bash
# Builds a Debian package of both binaries, the systemd user unit, shell completions and man
# pages:  packaging/deb/build.sh  ->  target/debian/git-credential-azdo_VERSION_ARCH.deb
#
# By default it builds the release binaries and generates completions and man pages itself.
# BIN_DIR (a directory holding both binaries) and GEN_DIR (the output of
# `cargo run --example generate`) use ready-made ones instead; OUT_DIR sets where the .deb goes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
out=${OUT_DIR:-$root/target/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bin=${BIN_DIR:-}
if [ -z "$bin" ]; then
  cargo build --locked --release --bins
  bin=$root/target/release
fi
gen=${GEN_DIR:-}
if [ -z "$gen" ]; then
  gen=$work/generated
  cargo run --locked --quiet --example generate -- "$gen" >/dev/null
fi

stage=$work/stage
install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/systemd/user" \
  "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/man/man1" \
  "$stage/usr/share/doc/git-credential-azdo"
install -m 0755 -s "$bin/git-credential-azdo" "$bin/git-credential-azdo-daemon" "$stage/usr/bin/"
# The user unit, pointed at the packaged daemon.
sed 's|^ExecStart=.*|ExecStart=/usr/bin/git-credential-azdo-daemon --service|' \
  packaging/systemd/git-credential-azdo.service >"$stage/usr/lib/systemd/user/git-credential-azdo.service"
install -m 0644 "$gen/completions/git-credential-azdo.bash" \
  "$stage/usr/share/bash-completion/completions/git-credential-azdo"
install -m 0644 "$gen/completions/_git-credential-azdo" "$stage/usr/share/zsh/vendor-completions/"
install -m 0644 "$gen/completions/git-credential-azdo.fish" "$stage/usr/share/fish/vendor_completions.d/"
for page in "$gen"/man/*.1; do
  gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 packaging/deb/copyright "$stage/usr/share/doc/git-credential-azdo/copyright"
gzip -9n <README.md >"$stage/usr/share/doc/git-credential-azdo/README.md.gz"
chmod 0644 "$stage"/usr/lib/systemd/user/* "$stage"/usr/share/man/man1/*

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/deb/control >"$stage/DEBIAN/control"
(cd "$stage" && find usr -type f -exec md5sum {} + | sort -k2 >DEBIAN/md5sums)

mkdir -p "$out"
deb=$out/git-credential-azdo_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
