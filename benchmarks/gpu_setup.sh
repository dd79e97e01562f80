# What every command run on a lent GPU machine does first; sourced by benchmarks/gpu_*.sh after
# they set ROOT (the checkout), OUT (the folder whose files come back), WORK (scratch), PY (the
# Python to run), ARCHIVE (the carried tar.xz of the CIFAR-10 JPEGs) and SHARED_JPEG (a copy
# beside the checkout, used where it is there).
#
# Such a machine starts bare, with its own Python and PyTorch, no network and no ../shared. So
# this runs squeezelab from the checkout (PYTHONPATH), keeps its decode cache in WORK, writes the
# machine's description to $OUT/machine.txt, and unpacks the archive where no copy is beside the
# checkout (exit status 2 where neither is). Sets `start` (seconds since the epoch) for the
# caller's deadline.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SQUEEZELAB_CACHE="$WORK/cache"
mkdir -p "$OUT" "$WORK"
start=$(date +%s)

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")'
  nproc
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if [ -d "$SHARED_JPEG/train" ]; then
  export SQUEEZELAB_CIFAR10_DIR="${SQUEEZELAB_CIFAR10_DIR:-$(cd "$SHARED_JPEG" && pwd)}"
elif [ -z "${SQUEEZELAB_CIFAR10_DIR:-}" ]; then
  [ -f "$ARCHIVE" ] || { echo "no CIFAR-10 JPEGs at $SHARED_JPEG and no $ARCHIVE to unpack" >&2; exit 2; }
  [ -d "$WORK/data/cifar10-jpeg/train" ] || "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    "$ARCHIVE" "$WORK/data" || exit 2
  export SQUEEZELAB_CIFAR10_DIR="$WORK/data/cifar10-jpeg"
  echo "data unpacked in $(( $(date +%s) - start )) s"
fi
