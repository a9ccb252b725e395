#!/usr/bin/env bash
# The main job: install, train a gated encoder on the Tux Paint stamps (offline backbone),
# ingest them into the embedded Qdrant store, and run example queries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export JOINTSPACE_HOME="${JOINTSPACE_HOME:-$PWD/jointspace-data}"
JS=.venv/bin/jointspace
STAMPS=/usr/share/tuxpaint/stamps

echo "== jointspace train (training split; the test split stays held out)" >&2
$JS train "$STAMPS" --out models/stamps
echo "== jointspace ingest" >&2
$JS ingest "$STAMPS" --collection stamps --model models/stamps
echo "== held-out evaluation (six tasks)" >&2
$JS eval "$STAMPS" --model models/stamps
echo "== text query: 'penguin'" >&2
$JS query --collection stamps --text "penguin" -k 5
echo "== image query: a photo of a cup of coffee (scikit-image's coffee.png)" >&2
.venv/bin/python -c "import skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.coffee()).save('models/coffee.png')"
$JS query --collection stamps --image models/coffee.png -k 5
echo "== text + image query, units restricted to the 'food' category" >&2
$JS query --collection stamps --image models/coffee.png --text "cake" --where labels=food -k 5
echo "== search it from a browser or over HTTP:" >&2
echo "   .venv/bin/jointspace serve --collection stamps   # then open http://127.0.0.1:8000/?q=penguin" >&2
