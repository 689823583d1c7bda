#!/usr/bin/env python3
"""Writes kubeconform schemas, offline, for the Kubernetes version the tests pin and the CRDs
they install.

- Built-in kinds: from `api/openapi-spec/swagger.json` of the k8s.io/kubernetes Go module (the
  same release as the e2e API server), every `$ref` inlined.
- CRDs: the `openAPIV3Schema` of each version of each CRD file given.

Both are strict the way kubeconform's published `-strict` schemas are: an object that lists
its properties accepts no others (unless it preserves unknown fields). File names follow
kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`.

usage: schemas.py OUT_DIR SWAGGER_JSON CRD_YAML...
"""
import json
import os
import sys

import yaml


def file_name(group, version, kind):
    suffix = "-" + group.split(".")[0].lower() if group else ""
    return f"{kind.lower()}{suffix}-{version.lower()}.json"


def strict(node):
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def inline(node, definitions, stack):
    """Replaces `$ref`s with their definitions; a recursive one (JSONSchemaProps) becomes `{}`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.split("/")[-1]
            if name in stack:
                return {}
            return inline(definitions[name], definitions, stack | {name})
        out = {}
        for key, value in node.items():
            if key == "format" and value == "int-or-string":
                return {"oneOf": [{"type": "string"}, {"type": "integer"}],
                        **({"description": node["description"]} if "description" in node else {})}
            out[key] = inline(value, definitions, stack)
        return out
    if isinstance(node, list):
        return [inline(v, definitions, stack) for v in node]
    return node


def builtin(out_dir, swagger_path):
    with open(swagger_path) as f:
        definitions = json.load(f)["definitions"]
    count = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            schema = strict(inline(definition, definitions, {name}))
            schema["$schema"] = "http://json-schema.org/schema#"
            # apiVersion and kind must name this very kind.
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            props = schema.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [api_version]}
            props["kind"] = {"type": "string", "enum": [gvk["kind"]]}
            with open(os.path.join(out_dir, file_name(gvk["group"], gvk["version"], gvk["kind"])), "w") as f:
                json.dump(schema, f)
            count += 1
    return count


class CrdLoader(yaml.SafeLoader):
    """PyYAML reads a plain `=` (an enum value of the AlertmanagerConfig CRD) as YAML 1.1's
    `value` tag, which it cannot construct; the API server reads it as the string it is."""


CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def crds(out_dir, paths):
    count = 0
    for path in paths:
        with open(path) as f:
            for doc in yaml.load_all(f, Loader=CrdLoader):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if not schema:
                        continue
                    schema = strict(json.loads(json.dumps(schema)))
                    # metadata is not described by CRD schemas; kubeconform checks the rest.
                    schema.setdefault("properties", {}).pop("metadata", None)
                    schema["properties"]["metadata"] = {"type": "object"}
                    # Some CRDs (Istio's) leave apiVersion and kind out of their schema, which
                    # strictness would then refuse: they must name this very kind, as for the
                    # built-in kinds.
                    api_version = f"{spec['group']}/{version['name']}"
                    schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
                    schema["properties"]["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
                    with open(os.path.join(out_dir, file_name(spec["group"], version["name"], spec["names"]["kind"])), "w") as f:
                        json.dump(schema, f)
                    count += 1
    return count


def main():
    out_dir, swagger, *crd_files = sys.argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    n = builtin(out_dir, swagger)
    m = crds(out_dir, crd_files)
    print(f"wrote {n} built-in and {m} CRD schemas to {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
