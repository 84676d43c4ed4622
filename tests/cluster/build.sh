#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries the end-to-end tests run (kube-apiserver,
# kube-controller-manager, kubectl, etcd and our hollow-node) into a cache outside
# the repository, keyed by everything that determines them, so a second run is a
# cache hit that takes well under a second.
#
# Prints progress on stderr and, on success, the directory holding the binaries as
# the last line of stdout. Environment:
#   STATICPOD_K8S_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/staticpod-operator/k8s)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=v1.37.2
K8S_MINOR=37

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

inputs=("$here/build.sh" "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/k8s/cmd/hollow-node/main.go"
        "$here/etcd/go.mod" "$here/etcd/go.sum")
key=$( { go version; cat "${inputs[@]}"; } | sha256sum | cut -c1-16)
cache=${STATICPOD_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/staticpod-operator/k8s}
out=$cache/$K8S_VERSION-$key

if [ -f "$out/.complete" ]; then
  echo "k8s test binaries: cached in $out" >&2
  echo "$out"
  exit 0
fi

log() { echo "k8s test binaries: $*" >&2; }
mkdir -p "$cache"
staging=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
start=$SECONDS

# go build -v names each package as it compiles it; turn that into a counter.
progress() {
  local total=$1 what=$2 n=0
  while IFS= read -r line; do
    case $line in
      *" "*|"#"*) echo "$line" >&2 ;;   # compiler errors and warnings pass through
      *) n=$((n + 1)); if [ $((n % 100)) -eq 0 ]; then log "$what: $n/$total packages compiled ($((SECONDS - start))s)"; fi ;;
    esac
  done
}

ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

cd "$here/k8s"
pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
      k8s.io/kubernetes/cmd/kubectl ./cmd/hollow-node)
log "downloading Go modules for Kubernetes $K8S_VERSION"
go mod download
total=$(go list -deps "${pkgs[@]}" | wc -l)
log "compiling kube-apiserver, kube-controller-manager, kubectl, hollow-node ($total packages;" \
    "a cold build takes 15-30 minutes on 2 cores, a warm Go build cache a few)"
go build -v -p 2 -trimpath -tags=selinux,notest -ldflags="$ldflags" -o "$staging/" "${pkgs[@]}" \
  2> >(progress "$total" kubernetes)
wait

cd "$here/etcd"
log "compiling etcd"
go mod download
etcd_total=$(go list -deps go.etcd.io/etcd/server/v3 | wc -l)
go build -v -p 2 -trimpath -ldflags="-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3 \
  2> >(progress "$etcd_total" etcd)
wait

"$staging/kubectl" version --client >&2
"$staging/etcd" --version | head -1 >&2
touch "$staging/.complete"
rm -rf "$out"
mv "$staging" "$out"
trap - EXIT
log "built in $((SECONDS - start))s into $out"
ls -l "$out" >&2
echo "$out"
