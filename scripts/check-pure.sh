#!/usr/bin/env bash
# Fails when a pure library reaches the system: imports the C library or a system module, or uses file, socket,
# process or thread APIs. Side effects belong in the system layer (README, Layout); CI runs this on every change.
set -euo pipefail
cd "$(dirname "$0")/.."

pure=(TandemCore TandemSelector TandemModel TandemStore TandemCNI TandemCNIWire TandemAutodetection
  TandemNetlinkCodec TandemBGP TandemPolicy TandemIPAM TandemCalculation TandemDiagnosis)
forbidden='^[[:space:]]*(@_exported[[:space:]]+)?import[[:space:]]+(Glibc|Musl|Darwin|SystemPackage|System|FoundationNetworking|CNetlink|NIOCore|NIOPosix|NIOSSL|AsyncHTTPClient|TandemLinux|TandemNetlink|TandemDataplane|TandemStoreSQLite|TandemStoreEtcd|TandemDatastore|TandemAgent)\b'
apis='\b(FileManager|FileHandle|ProcessInfo|Process\(|URLSession|Thread\b|DispatchQueue|DispatchSemaphore|fopen|fwrite|socket\(|posix_spawn|contentsOfFile|contentsOf: URL|write\(toFile|write\(to: URL)'
status=0
for module in "${pure[@]}"; do
  if hits=$(grep -nE "$forbidden" "Sources/$module"/*.swift); then
    echo "pure module $module imports a system module:"; echo "$hits"; status=1
  fi
  if hits=$(grep -nE "$apis" "Sources/$module"/*.swift | grep -vE '^[^:]+:[0-9]+:[[:space:]]*///?'); then
    echo "pure module $module uses a file, socket, process or thread API:"; echo "$hits"; status=1
  fi
done
[ $status -eq 0 ] && echo "pure modules: ${#pure[@]} checked, none reaches the system"
exit $status
