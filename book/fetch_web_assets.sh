#!/usr/bin/env bash
# Fetch the JavaScript the built book needs so that its pages work without internet access:
#   MathJax 3 (renders the equations), RequireJS and @jupyter-widgets/html-manager (render the
#   saved state of ipywidgets outputs).
# They are written to book/_offline/offline/ (not committed; see .gitignore), which _config.yml
# names in html_static_path, so that Sphinx copies them to _build/html/_static/offline/.
#
# Usage (from anywhere):  bash book/fetch_web_assets.sh
# Idempotent: if the folder is complete and matches the pinned versions, nothing is downloaded.
# Each tarball is checked against the sha512 recorded below; a changed download stops the script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/_offline"
stamp="$dest/.complete"

# package spec | tarball name that `npm pack` writes | sha512 (npm "integrity" value)
packages=(
  "mathjax@3.2.2|mathjax-3.2.2.tgz|sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
  "@jupyter-widgets/html-manager@1.0.6|jupyter-widgets-html-manager-1.0.6.tgz|sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ=="
  "requirejs@2.3.6|requirejs-2.3.6.tgz|sha512-ipEzlWQe6RK3jkzikgCupiTbTvm4S0/CAU5GlgptkN5SO6F3u0UD0K18wy6ErDqiCyP4J4YYe1HuAShvsxePLg=="
)

# Files the pages load directly; if one is missing the folder is rebuilt.
required=(
  offline/mathjax/tex-mml-chtml.js
  offline/mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff
  offline/mathjax/input/tex/extensions/cancel.js
  offline/require.js
  offline/html-manager/embed-amd.js
)

die() { echo "fetch_web_assets.sh: error: $*" >&2; exit 1; }

expected_stamp() { printf '%s\n' "${packages[@]}"; }

is_complete() {
  [ -f "$stamp" ] || return 1
  [ "$(cat "$stamp")" = "$(expected_stamp)" ] || return 1
  local f
  for f in "${required[@]}"; do [ -s "$dest/$f" ] || return 1; done
}

if is_complete; then
  echo "fetch_web_assets.sh: web assets already present in book/_offline/ (nothing to do)"
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is not installed. It is needed once, to fetch MathJax and
the widget JavaScript for offline pages. Install Node.js with npm (Debian/Ubuntu:
'sudo apt-get install npm'; macOS: 'brew install node'; or see nodejs.org), then run
'bash book/fetch_web_assets.sh' again."
command -v tar >/dev/null 2>&1 || die "tar is not installed."

sha512_hex() {
  if command -v sha512sum >/dev/null 2>&1; then
    sha512sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 512 "$1" | cut -d' ' -f1
  else
    die "neither sha512sum nor shasum is available to check downloads."
  fi
}

# sha512-<base64> (npm integrity) -> lowercase hex
integrity_to_hex() {
  printf '%s' "${1#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n'
}

workdir="$(mktemp -d)"
stage="$(mktemp -d "$here/.offline-staging.XXXXXX")"  # same file system as dest, so mv is atomic
old=""
cleanup() {
  rm -rf "$workdir" "$stage"
  if [ -n "$old" ]; then rm -rf "$old"; fi
}
trap cleanup EXIT

# Refuse archives with absolute paths, '..' components, links or device files.
check_members() {
  local tgz="$1" label name types
  label="$(basename "$tgz")"
  tar -tzf "$tgz" >/dev/null || die "$label: not a readable gzip tar archive"
  while IFS= read -r name; do
    case "$name" in
      /*) die "$label: absolute member path '$name'; refusing to extract" ;;
    esac
    case "/$name/" in
      */../*) die "$label: member path with '..': '$name'; refusing to extract" ;;
    esac
  done < <(tar -tzf "$tgz" 2>/dev/null)
  # first character of each verbose line is the entry type: '-' file, 'd' directory
  types="$(tar -tvzf "$tgz" 2>/dev/null | cut -c1 | sort -u | tr -d '\n')"
  case "$types" in
    - | d | -d | d-) ;;
    *) die "$label: contains links or special files (entry types '$types'); refusing to extract" ;;
  esac
}

# extract <tgz> <target dir> <member>...   (members are paths inside the tarball)
extract() {
  local tgz="$1" target="$2"
  shift 2
  mkdir -p "$target"
  tar -xzf "$tgz" -C "$target" --no-same-owner --no-same-permissions "$@"
}

for entry in "${packages[@]}"; do
  IFS='|' read -r spec tarball integrity <<<"$entry"
  echo "fetch_web_assets.sh: npm pack $spec"
  (cd "$workdir" && npm pack --silent "$spec" >/dev/null) || die "'npm pack $spec' failed (is the npm registry reachable?)"
  [ -f "$workdir/$tarball" ] || die "npm pack did not produce $tarball"
  got="$(sha512_hex "$workdir/$tarball")"
  want="$(integrity_to_hex "$integrity")"
  if [ "$got" != "$want" ]; then
    die "checksum mismatch for $tarball
  expected sha512 $want
  got      sha512 $got
The published package differs from the one this script was written for; refusing to use it."
  fi
  check_members "$workdir/$tarball"
done

raw="$workdir/raw"
# MathJax: the combined TeX + MathML -> CommonHTML component, plus what it loads on demand
# (TeX extensions, CHTML fonts, the menu and its accessibility/speech modules).
extract "$workdir/mathjax-3.2.2.tgz" "$raw/mathjax" \
  package/LICENSE package/es5/tex-mml-chtml.js package/es5/input package/es5/output/chtml \
  package/es5/output/chtml.js package/es5/a11y package/es5/ui package/es5/sre
extract "$workdir/requirejs-2.3.6.tgz" "$raw/requirejs" package/require.js package/package.json
extract "$workdir/jupyter-widgets-html-manager-1.0.6.tgz" "$raw/html-manager" package/dist package/package.json

out="$stage/offline"
mkdir -p "$out/html-manager"
mv "$raw/mathjax/package/es5" "$out/mathjax"
mv "$raw/mathjax/package/LICENSE" "$out/mathjax/LICENSE"
mv "$raw/requirejs/package/require.js" "$out/require.js"
# html-manager: the AMD bundle, its license notice and the icon fonts it references
hm="$raw/html-manager/package/dist"
cp "$hm/embed-amd.js" "$hm/embed.js.LICENSE.txt" "$out/html-manager/"
find "$hm" -maxdepth 1 -type f \( -name '*.woff' -o -name '*.woff2' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
  -exec cp {} "$out/html-manager/" \;

for f in "${required[@]}"; do
  [ -s "$stage/$f" ] || die "expected file missing after extraction: $f"
done
expected_stamp >"$stage/.complete"
chmod -R u+rwX,go+rX "$stage"

# Swap the complete folder into place.
if [ -e "$dest" ]; then
  old="$(mktemp -d "$here/.offline-old.XXXXXX")"
  mv "$dest" "$old/"
fi
mv "$stage" "$dest"
echo "fetch_web_assets.sh: web assets ready in book/_offline/ ($(du -sh "$dest" | cut -f1))"
