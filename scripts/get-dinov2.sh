#!/usr/bin/env bash
# Downloads the DINOv2 ViT-B/14 teacher (Hugging Face facebook/dinov2-base, safetensors, ~350 MB)
# to weights/dinov2_vitb14.safetensors (or the path given). lt-embed reads the Hugging Face key
# names directly: no conversion needed. Needs network access to huggingface.co.
set -euo pipefail
out=${1:-weights/dinov2_vitb14.safetensors}
url=https://huggingface.co/facebook/dinov2-base/resolve/main/model.safetensors
mkdir -p "$(dirname "$out")"
echo "downloading $url -> $out" >&2
if command -v curl >/dev/null; then
  curl -fL --retry 3 -o "$out.partial" "$url"
else
  wget -O "$out.partial" "$url"
fi
mv "$out.partial" "$out"
echo "done: use  lt-embed --teacher $out DATA_DIR CACHE  (or export LT_TEACHER=$out)" >&2
