"""The protobuf messages of BuildKit's frontend gateway and LLB, for the subset ggufpack uses.

Written here, not vendored and not generated: each message is declared below as a list of
``(name, number, type)`` triples, from which a ``FileDescriptorProto`` is built at import time and the
message classes made by ``google.protobuf``'s message factory, in a private descriptor pool (so the
names cannot clash with any other protobuf user in the process). Only ``protobuf`` is needed at run
time; no ``protoc``/``grpcio-tools`` step at build time.

What must match BuildKit is the wire format: field numbers and types. Field names follow BuildKit's
spelling so that the messages read like BuildKit's documentation; the packages (``pb``,
``moby.buildkit.v1.frontend`` ...) are the same too, though only the gRPC method paths reach the wire.
Unknown fields (newer BuildKit additions) are kept by protobuf and ignored by us.

Type spellings: a scalar (``string``, ``bytes``, ``bool``, ``int32``, ``int64``, ``uint32``, ``uint64``),
``repeated T``, ``map<K,V>``, an enum or message name (relative to the file's package, or fully
qualified with a leading dot); a fourth element names the ``oneof`` the field belongs to.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

try:  # protobuf >= 4.21
    from google.protobuf.message_factory import GetMessageClass as _get_message_class
except ImportError:  # pragma: no cover - older protobuf
    from google.protobuf.message_factory import MessageFactory as _MessageFactory

    def _get_message_class(descriptor: Any) -> Any:
        return _MessageFactory(descriptor.file.pool).GetPrototype(descriptor)

F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "bool": F.TYPE_BOOL, "int32": F.TYPE_INT32,
    "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64,
}

Field = tuple  # (name, number, type) or (name, number, type, oneof)

# --- solver/pb/ops.proto (package pb): LLB ---------------------------------------------------------
OPS_ENUMS: dict[str, list[tuple[str, int]]] = {
    "NetMode": [("UNSET", 0), ("HOST", 1), ("NONE", 2)],
    "SecurityMode": [("SANDBOX", 0), ("INSECURE", 1)],
    "MountType": [("BIND", 0), ("SECRET", 1), ("SSH", 2), ("CACHE", 3), ("TMPFS", 4)],
    "CacheSharingOpt": [("SHARED", 0), ("PRIVATE", 1), ("LOCKED", 2)],
}
OPS: dict[str, list[Field]] = {
    "Op": [("inputs", 1, "repeated Input"), ("exec", 2, "ExecOp", "op"), ("source", 3, "SourceOp", "op"),
           ("file", 4, "FileOp", "op"), ("merge", 6, "MergeOp", "op"), ("platform", 10, "Platform"),
           ("constraints", 11, "WorkerConstraints")],
    "Platform": [("Architecture", 1, "string"), ("OS", 2, "string"), ("Variant", 3, "string"),
                 ("OSVersion", 4, "string"), ("OSFeatures", 5, "repeated string")],
    "Input": [("digest", 1, "string"), ("index", 2, "int64")],
    "ExecOp": [("meta", 1, "Meta"), ("mounts", 2, "repeated Mount"), ("network", 3, "NetMode"),
               ("security", 4, "SecurityMode")],
    "Meta": [("args", 1, "repeated string"), ("env", 2, "repeated string"), ("cwd", 3, "string"),
             ("user", 4, "string"), ("hostname", 7, "string"), ("removeMountStubsRecursive", 11, "bool"),
             ("validExitCodes", 12, "repeated int32")],
    "Mount": [("input", 1, "int64"), ("selector", 2, "string"), ("dest", 3, "string"), ("output", 4, "int64"),
              ("readonly", 5, "bool"), ("mountType", 6, "MountType"), ("TmpfsOpt", 19, "TmpfsOpt"),
              ("cacheOpt", 20, "CacheOpt")],
    "TmpfsOpt": [("size", 1, "int64")],
    "CacheOpt": [("ID", 1, "string"), ("sharing", 2, "CacheSharingOpt")],
    "SourceOp": [("identifier", 1, "string"), ("attrs", 2, "map<string,string>")],
    "MergeInput": [("input", 1, "int64")],
    "MergeOp": [("inputs", 1, "repeated MergeInput")],
    "WorkerConstraints": [("filter", 1, "repeated string")],
    "OpMetadata": [("ignore_cache", 1, "bool"), ("description", 2, "map<string,string>"),
                   ("export_cache", 4, "ExportCache"), ("caps", 5, "map<string,bool>"),
                   ("progress_group", 6, "ProgressGroup")],
    "ExportCache": [("Value", 1, "bool")],
    "ProgressGroup": [("id", 1, "string"), ("name", 2, "string"), ("weak", 3, "bool")],
    "Definition": [("def", 1, "repeated bytes"), ("metadata", 2, "map<string,OpMetadata>"),
                   ("Source", 3, "Source")],
    "Source": [("locations", 1, "map<string,Locations>"), ("infos", 2, "repeated SourceInfo")],
    "Locations": [("locations", 1, "repeated Location")],
    "SourceInfo": [("filename", 1, "string"), ("data", 2, "bytes"), ("definition", 3, "Definition"),
                   ("language", 4, "string")],
    "Location": [("sourceIndex", 1, "int32"), ("ranges", 2, "repeated Range")],
    "Range": [("start", 1, "Position"), ("end", 2, "Position")],
    "Position": [("line", 1, "int32"), ("character", 2, "int32")],
    "FileOp": [("actions", 2, "repeated FileAction")],
    "FileAction": [("input", 1, "int64"), ("secondaryInput", 2, "int64"), ("output", 3, "int64"),
                   ("copy", 4, "FileActionCopy", "action"), ("mkfile", 5, "FileActionMkFile", "action"),
                   ("mkdir", 6, "FileActionMkDir", "action"), ("rm", 7, "FileActionRm", "action"),
                   ("symlink", 8, "FileActionSymlink", "action")],
    "FileActionCopy": [("src", 1, "string"), ("dest", 2, "string"), ("owner", 3, "ChownOpt"), ("mode", 4, "int32"),
                       ("followSymlink", 5, "bool"), ("dirCopyContents", 6, "bool"),
                       ("attemptUnpackDockerCompatibility", 7, "bool"), ("createDestPath", 8, "bool"),
                       ("allowWildcard", 9, "bool"), ("allowEmptyWildcard", 10, "bool"), ("timestamp", 11, "int64"),
                       ("include_patterns", 12, "repeated string"), ("exclude_patterns", 13, "repeated string"),
                       ("alwaysReplaceExistingDestPaths", 14, "bool")],
    "FileActionMkFile": [("path", 1, "string"), ("mode", 2, "int32"), ("data", 3, "bytes"),
                         ("owner", 4, "ChownOpt"), ("timestamp", 5, "int64")],
    "FileActionMkDir": [("path", 1, "string"), ("mode", 2, "int32"), ("makeParents", 3, "bool"),
                        ("owner", 4, "ChownOpt"), ("timestamp", 5, "int64")],
    "FileActionRm": [("path", 1, "string"), ("allowNotFound", 2, "bool"), ("allowWildcard", 3, "bool")],
    "FileActionSymlink": [("oldpath", 1, "string"), ("newpath", 2, "string"), ("owner", 3, "ChownOpt"),
                          ("timestamp", 4, "int64")],
    "ChownOpt": [("user", 1, "UserOpt"), ("group", 2, "UserOpt")],
    "UserOpt": [("byName", 1, "NamedUserOpt", "user"), ("byID", 2, "uint32", "user")],
    "NamedUserOpt": [("name", 1, "string"), ("input", 2, "int64")],
}

# --- util/apicaps, api/types, fsutil/types, google.rpc ----------------------------------------------
CAPS: dict[str, list[Field]] = {
    "APICap": [("ID", 1, "string"), ("Enabled", 2, "bool"), ("Deprecated", 3, "bool"),
               ("DisabledReason", 4, "string"), ("DisabledReasonMsg", 5, "string"),
               ("DisabledAlternative", 6, "string")],
}
TYPES: dict[str, list[Field]] = {
    "WorkerRecord": [("ID", 1, "string"), ("Labels", 2, "map<string,string>"),
                     ("platforms", 3, "repeated .pb.Platform"), ("BuildkitVersion", 5, "BuildkitVersion")],
    "BuildkitVersion": [("package", 1, "string"), ("version", 2, "string"), ("revision", 3, "string")],
}
FSUTIL: dict[str, list[Field]] = {
    "Stat": [("path", 1, "string"), ("mode", 2, "uint32"), ("uid", 3, "uint32"), ("gid", 4, "uint32"),
             ("size", 5, "int64"), ("modTime", 6, "int64"), ("linkname", 7, "string"), ("devmajor", 8, "int64"),
             ("devminor", 9, "int64"), ("xattrs", 10, "map<string,bytes>")],
}
RPC: dict[str, list[Field]] = {
    # google.rpc.Status; ``details`` holds google.protobuf.Any values, same wire shape as AnyValue
    "Status": [("code", 1, "int32"), ("message", 2, "string"), ("details", 3, "repeated AnyValue")],
    "AnyValue": [("type_url", 1, "string"), ("value", 2, "bytes")],
}

# --- frontend/gateway/pb/gateway.proto (package moby.buildkit.v1.frontend) --------------------------
GATEWAY: dict[str, list[Field]] = {
    "Result": [("refDeprecated", 1, "string", "result"), ("refsDeprecated", 2, "RefMapDeprecated", "result"),
               ("ref", 3, "Ref", "result"), ("refs", 4, "RefMap", "result"),
               ("metadata", 10, "map<string,bytes>")],
    "RefMapDeprecated": [("refs", 1, "map<string,string>")],
    "Ref": [("id", 1, "string"), ("def", 2, ".pb.Definition")],
    "RefMap": [("refs", 1, "map<string,Ref>")],
    "ReturnRequest": [("result", 1, "Result"), ("error", 2, ".google.rpc.Status")],
    "ReturnResponse": [],
    "ResolveImageConfigRequest": [("Ref", 1, "string"), ("Platform", 2, ".pb.Platform"), ("ResolveMode", 3, "string"),
                                  ("LogName", 4, "string"), ("ResolverType", 5, "int32"), ("SessionID", 6, "string"),
                                  ("StoreID", 7, "string")],
    "ResolveImageConfigResponse": [("Digest", 1, "string"), ("Config", 2, "bytes"), ("Ref", 3, "string")],
    "SolveRequest": [("Definition", 1, ".pb.Definition"), ("Frontend", 2, "string"),
                     ("FrontendOpt", 3, "map<string,string>"), ("allowResultReturn", 5, "bool"),
                     ("allowResultArrayRef", 6, "bool"), ("Final", 10, "bool"), ("ExporterAttr", 11, "bytes"),
                     ("CacheImports", 12, "repeated CacheOptionsEntry"),
                     ("FrontendInputs", 13, "map<string,.pb.Definition>"), ("Evaluate", 14, "bool")],
    "CacheOptionsEntry": [("Type", 1, "string"), ("Attrs", 2, "map<string,string>")],
    "SolveResponse": [("ref", 1, "string"), ("result", 3, "Result")],
    "ReadFileRequest": [("Ref", 1, "string"), ("FilePath", 2, "string"), ("Range", 3, "FileRange")],
    "FileRange": [("Offset", 1, "int64"), ("Length", 2, "int64")],
    "ReadFileResponse": [("Data", 1, "bytes")],
    "ReadDirRequest": [("Ref", 1, "string"), ("DirPath", 2, "string"), ("IncludePattern", 3, "string")],
    "ReadDirResponse": [("entries", 1, "repeated .fsutil.types.Stat")],
    "StatFileRequest": [("Ref", 1, "string"), ("Path", 2, "string")],
    "StatFileResponse": [("stat", 1, ".fsutil.types.Stat")],
    "EvaluateRequest": [("Ref", 1, "string")],
    "EvaluateResponse": [],
    "PingRequest": [],
    "PongResponse": [("FrontendAPICaps", 1, "repeated .moby.buildkit.v1.apicaps.APICap"),
                     ("LLBCaps", 2, "repeated .moby.buildkit.v1.apicaps.APICap"),
                     ("Workers", 3, "repeated .moby.buildkit.v1.types.WorkerRecord")],
    "InputsRequest": [],
    "InputsResponse": [("Definitions", 1, "map<string,.pb.Definition>")],
}

SERVICE = "moby.buildkit.v1.frontend.LLBBridge"
#: method name -> (request message, response message) of the LLBBridge calls we make
METHODS = {
    "Ping": ("PingRequest", "PongResponse"),
    "Solve": ("SolveRequest", "SolveResponse"),
    "ReadFile": ("ReadFileRequest", "ReadFileResponse"),
    "ReadDir": ("ReadDirRequest", "ReadDirResponse"),
    "StatFile": ("StatFileRequest", "StatFileResponse"),
    "ResolveImageConfig": ("ResolveImageConfigRequest", "ResolveImageConfigResponse"),
    "Evaluate": ("EvaluateRequest", "EvaluateResponse"),
    "Inputs": ("InputsRequest", "InputsResponse"),
    "Return": ("ReturnRequest", "ReturnResponse"),
}


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _type_ref(spec: str, package: str, enums: set[str]) -> tuple[int, str]:
    if spec in _SCALARS:
        return _SCALARS[spec], ""
    name = spec if spec.startswith(".") else f".{package}.{spec}"
    if spec.lstrip(".").split(".")[-1] in enums and not spec.startswith("."):
        return F.TYPE_ENUM, name
    return F.TYPE_MESSAGE, name


def _file(name: str, package: str, messages: dict[str, list[Field]],
          enums: dict[str, list[tuple[str, int]]] | None = None,
          deps: tuple[str, ...] = ()) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3", dependency=list(deps))
    for enum_name, values in (enums or {}).items():
        enum = fdp.enum_type.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    enum_names = set(enums or {})
    for message_name, fields in messages.items():
        msg = fdp.message_type.add(name=message_name)
        oneofs: list[str] = []
        for field in fields:
            fname, number, spec = field[0], field[1], field[2]
            fd = msg.field.add(name=fname, number=number, label=F.LABEL_OPTIONAL, json_name=fname)
            if spec.startswith("map<"):
                key_spec, value_spec = (s.strip() for s in spec[4:-1].split(",", 1))
                entry = msg.nested_type.add(name=_camel(fname) + "Entry")
                entry.options.map_entry = True
                key = entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL)
                key.type = _type_ref(key_spec, package, enum_names)[0]
                value = entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL)
                value.type, type_name = _type_ref(value_spec, package, enum_names)
                if type_name:
                    value.type_name = type_name
                fd.label = F.LABEL_REPEATED
                fd.type = F.TYPE_MESSAGE
                fd.type_name = f".{package}.{message_name}.{entry.name}"
                continue
            if spec.startswith("repeated "):
                fd.label = F.LABEL_REPEATED
                spec = spec[len("repeated "):]
            fd.type, type_name = _type_ref(spec, package, enum_names)
            if type_name:
                fd.type_name = type_name
            if len(field) > 3:
                if field[3] not in oneofs:
                    oneofs.append(field[3])
                    msg.oneof_decl.add(name=field[3])
                fd.oneof_index = oneofs.index(field[3])
    return fdp


POOL = descriptor_pool.DescriptorPool()
_FILES = [
    _file("ggufpack/buildkit/ops.proto", "pb", OPS, OPS_ENUMS),
    _file("ggufpack/buildkit/caps.proto", "moby.buildkit.v1.apicaps", CAPS),
    _file("ggufpack/buildkit/worker.proto", "moby.buildkit.v1.types", TYPES, deps=("ggufpack/buildkit/ops.proto",)),
    _file("ggufpack/buildkit/stat.proto", "fsutil.types", FSUTIL),
    _file("ggufpack/buildkit/status.proto", "google.rpc", RPC),
    _file("ggufpack/buildkit/gateway.proto", "moby.buildkit.v1.frontend", GATEWAY,
          deps=("ggufpack/buildkit/ops.proto", "ggufpack/buildkit/caps.proto", "ggufpack/buildkit/worker.proto",
                "ggufpack/buildkit/stat.proto", "ggufpack/buildkit/status.proto")),
]
for _fdp in _FILES:
    POOL.Add(_fdp)


def message_class(full_name: str) -> Any:
    """The message class of ``full_name`` (``pb.Op``, ``moby.buildkit.v1.frontend.SolveRequest`` ...)."""
    return _get_message_class(POOL.FindMessageTypeByName(full_name))


class _Namespace:
    def __init__(self, package: str, names: list[str]) -> None:
        for name in names:
            setattr(self, name, message_class(f"{package}.{name}"))


#: LLB messages: ``ops.Op``, ``ops.Definition``, ``ops.FileAction`` ...
ops: Any = _Namespace("pb", list(OPS))
#: gateway messages: ``gateway.SolveRequest``, ``gateway.PongResponse`` ...
gateway: Any = _Namespace("moby.buildkit.v1.frontend", list(GATEWAY))
fsutil: Any = _Namespace("fsutil.types", list(FSUTIL))
rpc: Any = _Namespace("google.rpc", list(RPC))
OPS_ENUM_VALUES = {name: dict(values) for name, values in OPS_ENUMS.items()}
