#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: builds a small CUDA program
# (a kernel computing c[i] = a[i] * b[i] + i over 1M floats) under
# `cachefs run make`, cleans, rebuilds it from the cache (every compile a
# hit), runs both binaries on the GPU and checks every element on the host.
# Exit 0 only if the cached build is byte-identical and computes the right
# answer. Not part of CI (no GPU there).
#
#   scripts/gpu-check.sh [CACHEFS]     CACHEFS: a cachefs binary (default
#                                      target/release/cachefs, built if missing)
# nvcc: $NVCC, else nvcc on PATH, else scripts/setup-cuda.sh (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHEFS=${1:-$ROOT/target/release/cachefs}
# A dynamic client costs every hit ~1 ms: a plain `cargo build --release`
# (scripts/demo.sh did one) leaves one behind, so rebuild it then.
if [ ! -x "$CACHEFS" ] || readelf -l "$CACHEFS" | grep -q INTERP; then scripts/build-release.sh; fi
NVCC=${NVCC:-$(command -v nvcc || scripts/setup-cuda.sh)}
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "gpu-check: no nvidia-smi; trying anyway" >&2

work=$(mktemp -d)
export CACHEFS_DIR=$work/cache
trap '"$CACHEFS" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cd "$work"
cat >kernel.cu <<'EOF'
__global__ void fma_index(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] * b[i] + (float)i;
}
EOF
cat >main.cu <<'EOF'
#include <cstdio>
#include <cstdlib>
__global__ void fma_index(const float *a, const float *b, float *c, int n);
int main() {
    const int n = 1 << 20;
    size_t bytes = n * sizeof(float);
    float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes), *c = (float *)malloc(bytes);
    for (int i = 0; i < n; i++) { a[i] = (float)(i % 97); b[i] = 0.5f; }
    float *da, *db, *dc;
    if (cudaMalloc(&da, bytes) || cudaMalloc(&db, bytes) || cudaMalloc(&dc, bytes)) {
        printf("no usable GPU: %s\n", cudaGetErrorString(cudaGetLastError()));
        return 2;
    }
    cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice);
    fma_index<<<(n + 255) / 256, 256>>>(da, db, dc, n);
    cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost);
    int wrong = 0;
    for (int i = 0; i < n; i++)
        if (c[i] != a[i] * b[i] + (float)i) wrong++;
    printf("%d of %d elements wrong\n", wrong, n);
    return wrong != 0;
}
EOF
cat >Makefile <<EOF
prog: main.o kernel.o
	$NVCC main.o kernel.o -o prog
%.o: %.cu
	$NVCC -rdc=true -c \$< -o \$@
clean:
	rm -f *.o prog
EOF
# -rdc: main.cu calls a kernel defined in kernel.cu (device linking).
sed -i 's/main.o kernel.o -o prog/-rdc=true main.o kernel.o -o prog/' Makefile

"$CACHEFS" run make -s
cp prog prog.first
make -s clean
"$CACHEFS" stats --zero >/dev/null
"$CACHEFS" run make -s
stats=$("$CACHEFS" stats --json)
echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("rebuild: %d hits, %d misses" % (s["hits"], s["misses"])); sys.exit(0 if s["misses"] == 0 and s["hits"] >= 3 else 1)'
cmp prog prog.first
echo "gpu-check: rebuilt from the cache, byte-identical; running on the GPU"
./prog.first
./prog
echo "gpu-check: the program rebuilt from the cache is identical and computes the right answer"
