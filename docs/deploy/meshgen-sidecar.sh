#!/bin/sh
# meshgen-sidecar SOURCE [python DIST options...]
#
# Runs the meshgen runtime on SOURCE, which is either
#   - a DIST folder: run as is (`exec python DIST ...`), or
#   - a gzipped tar of a DIST (`tar -czf dist.tar.gz -C dist .`), such as a key of a mounted
#     Kubernetes ConfigMap: unpacked into $MESHGEN_WORK/dist (default /tmp/meshgen) and run;
#     whenever the archive changes (kubelet swaps a mounted ConfigMap in place), the new DIST
#     is unpacked beside the old one, moved into place and the runtime gets SIGHUP: it loads
#     the new tables and swaps only if they load (requests in flight finish on the old ones).
#     A DIST built by another meshgen version cannot be reloaded into a running runtime: the
#     runtime is stopped (drained) and the script exits 75, so the container is restarted.
# SIGTERM/SIGINT are passed to the runtime (it drains within --grace) and its exit code is ours.
# $MESHGEN_POLL: seconds between checks of the archive (default 5). Recipe: docs/deploy.md.
set -eu

source=${1:?usage: meshgen-sidecar SOURCE [python DIST options...]}
shift
python=${PYTHON:-python}

if [ -d "$source" ]; then
    exec "$python" "$source" "$@"
fi

work=${MESHGEN_WORK:-/tmp/meshgen}
poll=${MESHGEN_POLL:-5}
mkdir -p "$work"

version() {  # the meshgen version that built the DIST in folder $1
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["meshgen"])' \
        "$1/MANIFEST.json"
}

unpack() {  # unpack the archive into $work/next; fails (keeping nothing) on a bad archive
    rm -rf "$work/next"
    mkdir "$work/next"
    if ! tar -xzf "$source" -C "$work/next" || [ ! -f "$work/next/__main__.py" ]; then
        rm -rf "$work/next"
        echo "meshgen-sidecar: $source is not a DIST archive; keeping the running one" >&2
        return 1
    fi
}

stamp() { cksum < "$source"; }

unpack
rm -rf "$work/dist"
mv "$work/next" "$work/dist"
seen=$(stamp)

"$python" "$work/dist" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT

while kill -0 "$pid" 2>/dev/null; do
    sleep "$poll" &
    wait $! || true
    kill -0 "$pid" 2>/dev/null || break
    now=$(stamp 2>/dev/null) || continue
    [ "$now" = "$seen" ] && continue
    seen=$now
    unpack || continue
    if [ "$(version "$work/next")" != "$(version "$work/dist")" ]; then
        echo "meshgen-sidecar: new DIST from another meshgen version; restarting" >&2
        kill -TERM "$pid"
        wait "$pid" || true
        exit 75
    fi
    rm -rf "$work/old"
    mv "$work/dist" "$work/old"
    mv "$work/next" "$work/dist"
    kill -HUP "$pid"
    echo "meshgen-sidecar: $source changed; reloading" >&2
done

code=0
wait "$pid" || code=$?
exit "$code"
