#!/usr/bin/env bash
# Build the test control plane's binaries from Go modules, at pinned versions, into a
# versioned cache folder outside the repository. Idempotent: a binary already built for
# these versions is kept. Prints the folder holding the binaries on its last line.
#
#   KUBELLM_CACHE   cache root (default: ~/.cache/kubellm)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"

cache_root="${KUBELLM_CACHE:-$HOME/.cache/kubellm}"
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin_dir="$cache_root/cluster-bin/$key"
work="$cache_root/go-work"
export GOMODCACHE="${GOMODCACHE:-$cache_root/go/mod}"
export GOCACHE="${GOCACHE:-$cache_root/go/build}"
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0
mkdir -p "$bin_dir" "$work"

log() { printf '[cluster-binaries] %s\n' "$*" >&2; }
have() { [ -x "$bin_dir/$1" ]; }

staging_replaces() {
  # Every k8s.io/<m> v0.0.0 requirement of k8s.io/kubernetes is a staging module: pin it
  # to the matching v0.x.y release (kubernetes issue 79384).
  local gomod minor
  gomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor="v0.${K8S_VERSION#v1.}"
  # (exactly v0.0.0: pseudo-versions such as k8s.io/utils v0.0.0-2025... are real modules)
  grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk -v v="$minor" '{print "replace " $1 " => " $1 " " v}' | sort -u
}

build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=() n
  for n in "${names[@]}"; do have "$n" || missing+=("$n"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local dir="$work/kubernetes-$K8S_VERSION" major minor
  mkdir -p "$dir"
  major=$(echo "${K8S_VERSION#v}" | cut -d. -f1); minor=$(echo "${K8S_VERSION#v}" | cut -d. -f2)
  if [ ! -f "$dir/go.mod" ] || ! grep -q "k8s.io/kubernetes ${K8S_VERSION}" "$dir/go.mod"; then
    log "preparing wrapper module for kubernetes $K8S_VERSION"
    { echo "module kubellm.local/k8sbuild"; echo; echo "go 1.25"; echo;
      echo "require k8s.io/kubernetes ${K8S_VERSION}"; echo; staging_replaces; } > "$dir/go.mod"
    cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$dir" && go mod tidy -e >&2)
  fi
  local pkg="k8s.io/component-base/version" cgo="k8s.io/client-go/pkg/version" date ld=""
  date="2026-01-01T00:00:00Z"
  for p in "$pkg" "$cgo"; do
    ld+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=${major} -X $p.gitMinor=${minor}"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=${date} -X $p.gitCommit=0000000000000000000000000000000000000000"
  done
  for n in "${missing[@]}"; do
    log "building $n $K8S_VERSION"
    (cd "$dir" && go build -trimpath -tags selinux,notest -ldflags "-s -w $ld" -o "$bin_dir/$n.tmp" "k8s.io/kubernetes/cmd/$n")
    mv "$bin_dir/$n.tmp" "$bin_dir/$n"
  done
}

build_etcd() {
  have etcd && return 0
  local dir="$work/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  if [ ! -f "$dir/go.mod" ]; then
    log "preparing wrapper module for etcd $ETCD_VERSION"
    printf 'module kubellm.local/etcdbuild\n\ngo 1.25\n' > "$dir/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$dir/tools.go"
    (cd "$dir" && go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2 && go mod tidy -e >&2)
  fi
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
}

go_install() {  # name module@version
  have "$1" && return 0
  log "building $1 from $2"
  GOBIN="$bin_dir" GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "-s -w" "$2"
}

stage_files() {
  # kwok needs Stage objects: fast node/pod life cycles (Job pods complete), leases for node
  # heartbeats, and volume provisioning so PersistentVolumeClaims bind.
  local src dest="$bin_dir/kwok-stages"
  src="$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/kustomize/stage"
  rm -rf "$dest" && mkdir -p "$dest"
  cp "$src/node/fast/node-initialize.yaml" "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
     "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-complete.yaml" "$src/pod/fast/pod-delete.yaml" \
     "$src/volume/fast/pvc-provision.yaml" "$src/volume/fast/pv-bind.yaml" "$src/volume/fast/pvc-delete.yaml" \
     "$src/volume/fast/pv-delete.yaml" "$src/volume/fast/storage-class.yaml" "$dest/"
  chmod -R u+w "$dest"
  touch "$dest/.done"
}

main() {
  local start=$SECONDS
  build_etcd
  go_install kwok "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  [ -f "$bin_dir/kwok-stages/.done" ] || stage_files
  go_install helm "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  build_kubernetes
  log "binaries ready in $((SECONDS - start))s"
  echo "$bin_dir"
}

main "$@"
