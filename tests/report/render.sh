#!/usr/bin/env bash
# `lidscope report`'s page as a browser shows it: a small sweep (two models x three steps, points
# on manifolds of different dimensions), its report, a headless Chromium screenshot of index.html,
# and checks that the screenshot shows figures (not a blank page) and that the page fetches
# nothing from the network.
# Usage: tests/report/render.sh <lidscope binary>
# Needs chromium (Debian package `chromium`) and python3. $LIDSCOPE_RENDER_DIR keeps the output
# (default: a temporary directory, removed at exit).
set -euo pipefail
bin="$(realpath "${1:?usage: $0 <lidscope binary>}")"
if ! command -v chromium >/dev/null 2>&1; then
  echo "render test: chromium not found (apt-get install -y chromium); the test did not run" >&2
  exit 1
fi
if [ -n "${LIDSCOPE_RENDER_DIR:-}" ]; then
  work="$LIDSCOPE_RENDER_DIR"
  rm -rf "$work" && mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
work="$(realpath "$work")"

# A corpus whose vectors fill a `dim`-dimensional cube inside 16 dimensions: its LID is near `dim`.
corpus() { # <file> <dim>
  local coords=() i
  for ((i = 0; i < 16; i++)); do
    if ((i < $2)); then coords+=("random()"); else coords+=("0.0"); fi
  done
  local list
  list="$(IFS=,; echo "${coords[*]}")"
  "$bin" -q sql --format parquet --output "$1" \
    "SELECT value AS seq_id, make_array($list) AS emb FROM generate_series(1, 1500)"
}

mkdir -p "$work/corpora"
# model=a loses dimensions as it trains, model=b less so; steps far apart, to be spaced by value.
for spec in a:100:9 a:1000:6 a:5000:3 b:100:7 b:1000:6 b:5000:5; do
  IFS=: read -r model step dim <<<"$spec"
  c="$work/corpora/$model-$step.parquet"
  corpus "$c" "$dim"
  "$bin" -q run --corpus "$c" --embedding-column emb --id-columns seq_id --k 20 \
    --reference-size 1500 --pool 1500 --out "$work/sweep" --partition "model=$model,step=$step"
done

"$bin" report "$work/sweep" --out "$work/report"
for f in index.html summary.csv summary.parquet trend.svg distributions.svg; do
  [ -s "$work/report/$f" ] || { echo "render test: $work/report/$f missing or empty" >&2; exit 1; }
done

# A private profile directory: no first-run state of the user's browser, nothing left behind.
shot="$work/report.png"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/chromium-profile" \
  --screenshot="$shot" --window-size=1200,2400 "file://$work/report/index.html" >"$work/chromium.log" 2>&1 || {
  cat "$work/chromium.log" >&2
  echo "render test: chromium failed" >&2
  exit 1
}

python3 - "$shot" "$work/report/index.html" <<'EOF'
import re, struct, sys, zlib

shot, page = sys.argv[1], sys.argv[2]
html = open(page, encoding="utf-8").read()
# Nothing fetched from the network: no http(s) or protocol-relative URL as a source, link, style
# import or CSS url(), and no scripts at all.
remote = re.findall(r"""(?:src|href|xlink:href|action|poster)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", html, re.I)
assert not remote, f"{page} references network resources: {remote}"
assert "<script" not in html.lower(), f"{page} has a script"
assert html.count("<svg") >= 2, f"{page}: expected the trend and distribution figures inline"

def png_pixels(path):
    """The RGB(A) pixels of a non-interlaced 8-bit PNG (what Chromium writes), stdlib only."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, head = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    w, h, depth, colour, _, _, interlace = head
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {head}"
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows

w, h, bpp, rows = png_pixels(shot)
assert (w, h) == (1200, 2400), f"screenshot is {w}x{h}"
colours, ink, total = set(), 0, 0
for y in range(0, h, 2):
    r = rows[y]
    for x in range(0, w * bpp, 2 * bpp):
        px = r[x:x + 3]
        total += 1
        colours.add(px)
        if px != b"\xff\xff\xff":
            ink += 1
share = ink / total
print(f"render test: {shot}: {len(colours)} distinct colours, {share:.1%} non-white pixels")
assert len(colours) >= 50, "the screenshot has almost no colours: the figures did not render"
assert share >= 0.03, "the screenshot is nearly blank"
EOF
echo "render test: ok ($work/report/index.html)"
