"""Stage 1, load: Kubernetes manifests (dicts) ↔ the typed model, validated as the API server
validates.

Purpose: turn what `-f` names (files, folders, stdin; YAML, JSON, Lists, `kubectl get -o` output)
into an immutable `ClusterState`, or into an `InputError` that names every problem with file,
object and field path. Nothing here does I/O but reading the input files.

Modules:
    manifests     paths → texts → parsed documents → objects → ClusterState (`load_state`);
                  `parse_paths` for callers that decode in parts (pipeline.sharded)
    yaml_fast     multi-document YAML read exactly as PyYAML's SafeLoader reads it (YAML 1.1:
                  `yes` is a boolean), at close to JSON speed: a line-based reader of the block
                  subset manifests are written in, a document it does not handle (`_Unsupported`)
                  left to libyaml's CSafeLoader
    yaml_parallel a big text (≥ 4 million characters) read by `yaml_fast` in two processes,
                  halves joined, when the process may use two CPUs and no other thread runs;
                  anything unusual: `yaml_fast` alone
    decode        one document → model objects and problems, with field paths; ClusterNetworkPolicy
                  (v1beta1, v1alpha2) as its CRD validates it, v1alpha1 AdminNetworkPolicy and
                  BaselineAdminNetworkPolicy converted into it
    decode_fast   the same for well-formed Namespaces, Pods, NetworkPolicies, without paths
                  (gives up at the first unusual value and leaves it to `decode`)
    validation    field checks mirroring k8s.io/apimachinery (names, labels, CIDRs, ports)
    encode        model → dicts (the inverse of decode; the agent's and tests' round trips)

Control flow: `load_state(paths)` → `manifests.iter_objects` reads each file, parses it
(`parse_documents`: JSON with orjson, YAML with `yaml_parallel`/`yaml_fast`), decodes each document
(`decode.decode_document`, trying `decode_fast` first), then `check_consistency` across objects
(duplicates, shared pod IPs), then `ClusterState.build`. Any problem anywhere → one InputError
listing all of them, in input order.
"""
