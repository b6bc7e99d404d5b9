#!/bin/bash
# Draws Tidemark's icons with ImageMagick (RGBA PNG, as Tauri needs). The
# results are checked in; run again only to change the artwork.
set -euo pipefail
cd "$(dirname "$0")"
app() { # size
  local s=$1
  convert -size 512x512 xc:none \
    -fill '#1b5e9a' -draw 'roundrectangle 16,16 496,496 96,96' \
    -stroke white -strokewidth 34 -fill none \
    -draw 'path "M 80,300 C 150,220 210,220 256,300 C 302,380 362,380 432,300"' \
    -draw 'line 256,110 256,230' \
    -resize "${s}x${s}" PNG32:"$2"
}
app 32 32x32.png; app 128 128x128.png; app 256 128x128@2x.png; app 512 icon.png
tray() { # colour file overlay-args...
  local colour=$1 out=$2; shift 2
  convert -size 64x64 xc:none -fill "$colour" -draw 'circle 32,32 32,3' \
    -stroke white -strokewidth 6 -fill none \
    -draw 'path "M 10,38 C 18,28 26,28 32,38 C 38,48 46,48 54,38"' \
    "$@" PNG32:"$out"
}
tray '#1b5e9a' tray-idle.png
tray '#2e7d32' tray-busy.png -stroke white -strokewidth 6 -draw 'line 32,8 32,26' -draw 'line 24,16 32,8' -draw 'line 40,16 32,8'
tray '#6b6b6b' tray-paused.png -stroke none -fill white -draw 'rectangle 22,10 28,28' -draw 'rectangle 36,10 42,28'
tray '#c62828' tray-attention.png -stroke none -fill white -draw 'rectangle 29,7 35,22' -draw 'rectangle 29,25 35,30'
