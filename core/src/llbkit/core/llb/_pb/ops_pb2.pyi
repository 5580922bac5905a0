# GENERATED FILE - DO NOT EDIT; regenerate with scripts/gen_proto.sh
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NetMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSET: _ClassVar[NetMode]
    HOST: _ClassVar[NetMode]
    NONE: _ClassVar[NetMode]

class SecurityMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX: _ClassVar[SecurityMode]
    INSECURE: _ClassVar[SecurityMode]

class MountType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BIND: _ClassVar[MountType]
    SECRET: _ClassVar[MountType]
    SSH: _ClassVar[MountType]
    CACHE: _ClassVar[MountType]
    TMPFS: _ClassVar[MountType]

class MountContentCache(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT: _ClassVar[MountContentCache]
    ON: _ClassVar[MountContentCache]
    OFF: _ClassVar[MountContentCache]

class CacheSharingOpt(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARED: _ClassVar[CacheSharingOpt]
    PRIVATE: _ClassVar[CacheSharingOpt]
    LOCKED: _ClassVar[CacheSharingOpt]
UNSET: NetMode
HOST: NetMode
NONE: NetMode
SANDBOX: SecurityMode
INSECURE: SecurityMode
BIND: MountType
SECRET: MountType
SSH: MountType
CACHE: MountType
TMPFS: MountType
DEFAULT: MountContentCache
ON: MountContentCache
OFF: MountContentCache
SHARED: CacheSharingOpt
PRIVATE: CacheSharingOpt
LOCKED: CacheSharingOpt

class Op(_message.Message):
    __slots__ = ("inputs", "exec", "source", "file", "build", "merge", "diff", "passthrough", "platform", "constraints")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    PASSTHROUGH_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    exec: ExecOp
    source: SourceOp
    file: FileOp
    build: BuildOp
    merge: MergeOp
    diff: DiffOp
    passthrough: PassthroughOp
    platform: Platform
    constraints: WorkerConstraints
    def __init__(self, inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., exec: _Optional[_Union[ExecOp, _Mapping]] = ..., source: _Optional[_Union[SourceOp, _Mapping]] = ..., file: _Optional[_Union[FileOp, _Mapping]] = ..., build: _Optional[_Union[BuildOp, _Mapping]] = ..., merge: _Optional[_Union[MergeOp, _Mapping]] = ..., diff: _Optional[_Union[DiffOp, _Mapping]] = ..., passthrough: _Optional[_Union[PassthroughOp, _Mapping]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ..., constraints: _Optional[_Union[WorkerConstraints, _Mapping]] = ...) -> None: ...

class Platform(_message.Message):
    __slots__ = ("Architecture", "OS", "Variant", "OSVersion", "OSFeatures")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    OSVERSION_FIELD_NUMBER: _ClassVar[int]
    OSFEATURES_FIELD_NUMBER: _ClassVar[int]
    Architecture: str
    OS: str
    Variant: str
    OSVersion: str
    OSFeatures: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, Architecture: _Optional[str] = ..., OS: _Optional[str] = ..., Variant: _Optional[str] = ..., OSVersion: _Optional[str] = ..., OSFeatures: _Optional[_Iterable[str]] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("digest", "index")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    digest: str
    index: int
    def __init__(self, digest: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ExecOp(_message.Message):
    __slots__ = ("meta", "mounts", "network", "security", "secretenv", "cdiDevices")
    META_FIELD_NUMBER: _ClassVar[int]
    MOUNTS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SECURITY_FIELD_NUMBER: _ClassVar[int]
    SECRETENV_FIELD_NUMBER: _ClassVar[int]
    CDIDEVICES_FIELD_NUMBER: _ClassVar[int]
    meta: Meta
    mounts: _containers.RepeatedCompositeFieldContainer[Mount]
    network: NetMode
    security: SecurityMode
    secretenv: _containers.RepeatedCompositeFieldContainer[SecretEnv]
    cdiDevices: _containers.RepeatedCompositeFieldContainer[CDIDevice]
    def __init__(self, meta: _Optional[_Union[Meta, _Mapping]] = ..., mounts: _Optional[_Iterable[_Union[Mount, _Mapping]]] = ..., network: _Optional[_Union[NetMode, str]] = ..., security: _Optional[_Union[SecurityMode, str]] = ..., secretenv: _Optional[_Iterable[_Union[SecretEnv, _Mapping]]] = ..., cdiDevices: _Optional[_Iterable[_Union[CDIDevice, _Mapping]]] = ...) -> None: ...

class Meta(_message.Message):
    __slots__ = ("args", "env", "cwd", "user", "proxy_env", "extraHosts", "hostname", "ulimit", "cgroupParent", "removeMountStubsRecursive", "validExitCodes")
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PROXY_ENV_FIELD_NUMBER: _ClassVar[int]
    EXTRAHOSTS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ULIMIT_FIELD_NUMBER: _ClassVar[int]
    CGROUPPARENT_FIELD_NUMBER: _ClassVar[int]
    REMOVEMOUNTSTUBSRECURSIVE_FIELD_NUMBER: _ClassVar[int]
    VALIDEXITCODES_FIELD_NUMBER: _ClassVar[int]
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    user: str
    proxy_env: ProxyEnv
    extraHosts: _containers.RepeatedCompositeFieldContainer[HostIP]
    hostname: str
    ulimit: _containers.RepeatedCompositeFieldContainer[Ulimit]
    cgroupParent: str
    removeMountStubsRecursive: bool
    validExitCodes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, args: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., proxy_env: _Optional[_Union[ProxyEnv, _Mapping]] = ..., extraHosts: _Optional[_Iterable[_Union[HostIP, _Mapping]]] = ..., hostname: _Optional[str] = ..., ulimit: _Optional[_Iterable[_Union[Ulimit, _Mapping]]] = ..., cgroupParent: _Optional[str] = ..., removeMountStubsRecursive: _Optional[bool] = ..., validExitCodes: _Optional[_Iterable[int]] = ...) -> None: ...

class HostIP(_message.Message):
    __slots__ = ("Host", "IP")
    HOST_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    Host: str
    IP: str
    def __init__(self, Host: _Optional[str] = ..., IP: _Optional[str] = ...) -> None: ...

class Ulimit(_message.Message):
    __slots__ = ("Name", "Soft", "Hard")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Soft: int
    Hard: int
    def __init__(self, Name: _Optional[str] = ..., Soft: _Optional[int] = ..., Hard: _Optional[int] = ...) -> None: ...

class SecretEnv(_message.Message):
    __slots__ = ("ID", "name", "optional")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    ID: str
    name: str
    optional: bool
    def __init__(self, ID: _Optional[str] = ..., name: _Optional[str] = ..., optional: _Optional[bool] = ...) -> None: ...

class CDIDevice(_message.Message):
    __slots__ = ("name", "optional")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    optional: bool
    def __init__(self, name: _Optional[str] = ..., optional: _Optional[bool] = ...) -> None: ...

class Mount(_message.Message):
    __slots__ = ("input", "selector", "dest", "output", "readonly", "mountType", "TmpfsOpt", "cacheOpt", "secretOpt", "SSHOpt", "resultID", "contentCache")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    READONLY_FIELD_NUMBER: _ClassVar[int]
    MOUNTTYPE_FIELD_NUMBER: _ClassVar[int]
    TMPFSOPT_FIELD_NUMBER: _ClassVar[int]
    CACHEOPT_FIELD_NUMBER: _ClassVar[int]
    SECRETOPT_FIELD_NUMBER: _ClassVar[int]
    SSHOPT_FIELD_NUMBER: _ClassVar[int]
    RESULTID_FIELD_NUMBER: _ClassVar[int]
    CONTENTCACHE_FIELD_NUMBER: _ClassVar[int]
    input: int
    selector: str
    dest: str
    output: int
    readonly: bool
    mountType: MountType
    TmpfsOpt: TmpfsOpt
    cacheOpt: CacheOpt
    secretOpt: SecretOpt
    SSHOpt: SSHOpt
    resultID: str
    contentCache: MountContentCache
    def __init__(self, input: _Optional[int] = ..., selector: _Optional[str] = ..., dest: _Optional[str] = ..., output: _Optional[int] = ..., readonly: _Optional[bool] = ..., mountType: _Optional[_Union[MountType, str]] = ..., TmpfsOpt: _Optional[_Union[TmpfsOpt, _Mapping]] = ..., cacheOpt: _Optional[_Union[CacheOpt, _Mapping]] = ..., secretOpt: _Optional[_Union[SecretOpt, _Mapping]] = ..., SSHOpt: _Optional[_Union[SSHOpt, _Mapping]] = ..., resultID: _Optional[str] = ..., contentCache: _Optional[_Union[MountContentCache, str]] = ...) -> None: ...

class TmpfsOpt(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class CacheOpt(_message.Message):
    __slots__ = ("ID", "sharing")
    ID_FIELD_NUMBER: _ClassVar[int]
    SHARING_FIELD_NUMBER: _ClassVar[int]
    ID: str
    sharing: CacheSharingOpt
    def __init__(self, ID: _Optional[str] = ..., sharing: _Optional[_Union[CacheSharingOpt, str]] = ...) -> None: ...

class SecretOpt(_message.Message):
    __slots__ = ("ID", "uid", "gid", "mode", "optional")
    ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    ID: str
    uid: int
    gid: int
    mode: int
    optional: bool
    def __init__(self, ID: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., mode: _Optional[int] = ..., optional: _Optional[bool] = ...) -> None: ...

class SSHOpt(_message.Message):
    __slots__ = ("ID", "uid", "gid", "mode", "optional")
    ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    ID: str
    uid: int
    gid: int
    mode: int
    optional: bool
    def __init__(self, ID: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., mode: _Optional[int] = ..., optional: _Optional[bool] = ...) -> None: ...

class SourceOp(_message.Message):
    __slots__ = ("identifier", "attrs")
    class AttrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    attrs: _containers.ScalarMap[str, str]
    def __init__(self, identifier: _Optional[str] = ..., attrs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BuildOp(_message.Message):
    __slots__ = ("builder", "inputs", "attrs")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: BuildInput
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[BuildInput, _Mapping]] = ...) -> None: ...
    class AttrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BUILDER_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DEF_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    builder: int
    inputs: _containers.MessageMap[str, BuildInput]
    attrs: _containers.ScalarMap[str, str]
    def __init__(self, builder: _Optional[int] = ..., inputs: _Optional[_Mapping[str, BuildInput]] = ..., attrs: _Optional[_Mapping[str, str]] = ..., **kwargs) -> None: ...

class BuildInput(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: int
    def __init__(self, input: _Optional[int] = ...) -> None: ...

class OpMetadata(_message.Message):
    __slots__ = ("ignore_cache", "description", "export_cache", "caps", "progress_group", "linux_resources")
    class DescriptionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CapsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    IGNORE_CACHE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPORT_CACHE_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_GROUP_FIELD_NUMBER: _ClassVar[int]
    LINUX_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ignore_cache: bool
    description: _containers.ScalarMap[str, str]
    export_cache: ExportCache
    caps: _containers.ScalarMap[str, bool]
    progress_group: ProgressGroup
    linux_resources: LinuxResources
    def __init__(self, ignore_cache: _Optional[bool] = ..., description: _Optional[_Mapping[str, str]] = ..., export_cache: _Optional[_Union[ExportCache, _Mapping]] = ..., caps: _Optional[_Mapping[str, bool]] = ..., progress_group: _Optional[_Union[ProgressGroup, _Mapping]] = ..., linux_resources: _Optional[_Union[LinuxResources, _Mapping]] = ...) -> None: ...

class LinuxResources(_message.Message):
    __slots__ = ("memory", "memorySwap", "cpuShares", "cpuPeriod", "cpuQuota", "cpusetCpus", "cpusetMems")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    MEMORYSWAP_FIELD_NUMBER: _ClassVar[int]
    CPUSHARES_FIELD_NUMBER: _ClassVar[int]
    CPUPERIOD_FIELD_NUMBER: _ClassVar[int]
    CPUQUOTA_FIELD_NUMBER: _ClassVar[int]
    CPUSETCPUS_FIELD_NUMBER: _ClassVar[int]
    CPUSETMEMS_FIELD_NUMBER: _ClassVar[int]
    memory: int
    memorySwap: int
    cpuShares: int
    cpuPeriod: int
    cpuQuota: int
    cpusetCpus: str
    cpusetMems: str
    def __init__(self, memory: _Optional[int] = ..., memorySwap: _Optional[int] = ..., cpuShares: _Optional[int] = ..., cpuPeriod: _Optional[int] = ..., cpuQuota: _Optional[int] = ..., cpusetCpus: _Optional[str] = ..., cpusetMems: _Optional[str] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("locations", "infos")
    class LocationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Locations
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Locations, _Mapping]] = ...) -> None: ...
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    INFOS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.MessageMap[str, Locations]
    infos: _containers.RepeatedCompositeFieldContainer[SourceInfo]
    def __init__(self, locations: _Optional[_Mapping[str, Locations]] = ..., infos: _Optional[_Iterable[_Union[SourceInfo, _Mapping]]] = ...) -> None: ...

class Locations(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    def __init__(self, locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ...) -> None: ...

class SourceInfo(_message.Message):
    __slots__ = ("filename", "data", "definition", "language")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    data: bytes
    definition: Definition
    language: str
    def __init__(self, filename: _Optional[str] = ..., data: _Optional[bytes] = ..., definition: _Optional[_Union[Definition, _Mapping]] = ..., language: _Optional[str] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("sourceIndex", "ranges")
    SOURCEINDEX_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    sourceIndex: int
    ranges: _containers.RepeatedCompositeFieldContainer[Range]
    def __init__(self, sourceIndex: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[Range, _Mapping]]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: Position
    end: Position
    def __init__(self, start: _Optional[_Union[Position, _Mapping]] = ..., end: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("line", "character")
    LINE_FIELD_NUMBER: _ClassVar[int]
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    line: int
    character: int
    def __init__(self, line: _Optional[int] = ..., character: _Optional[int] = ...) -> None: ...

class ExportCache(_message.Message):
    __slots__ = ("Value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    Value: bool
    def __init__(self, Value: _Optional[bool] = ...) -> None: ...

class ProgressGroup(_message.Message):
    __slots__ = ("id", "name", "weak")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEAK_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    weak: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., weak: _Optional[bool] = ...) -> None: ...

class ProxyEnv(_message.Message):
    __slots__ = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
    HTTP_PROXY_FIELD_NUMBER: _ClassVar[int]
    HTTPS_PROXY_FIELD_NUMBER: _ClassVar[int]
    FTP_PROXY_FIELD_NUMBER: _ClassVar[int]
    NO_PROXY_FIELD_NUMBER: _ClassVar[int]
    ALL_PROXY_FIELD_NUMBER: _ClassVar[int]
    http_proxy: str
    https_proxy: str
    ftp_proxy: str
    no_proxy: str
    all_proxy: str
    def __init__(self, http_proxy: _Optional[str] = ..., https_proxy: _Optional[str] = ..., ftp_proxy: _Optional[str] = ..., no_proxy: _Optional[str] = ..., all_proxy: _Optional[str] = ...) -> None: ...

class WorkerConstraints(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, filter: _Optional[_Iterable[str]] = ...) -> None: ...

class Definition(_message.Message):
    __slots__ = ("metadata", "Source")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OpMetadata
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OpMetadata, _Mapping]] = ...) -> None: ...
    DEF_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    metadata: _containers.MessageMap[str, OpMetadata]
    Source: Source
    def __init__(self, metadata: _Optional[_Mapping[str, OpMetadata]] = ..., Source: _Optional[_Union[Source, _Mapping]] = ..., **kwargs) -> None: ...

class FileOp(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[FileAction]
    def __init__(self, actions: _Optional[_Iterable[_Union[FileAction, _Mapping]]] = ...) -> None: ...

class FileAction(_message.Message):
    __slots__ = ("input", "secondaryInput", "output", "copy", "mkfile", "mkdir", "rm", "symlink")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SECONDARYINPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    COPY_FIELD_NUMBER: _ClassVar[int]
    MKFILE_FIELD_NUMBER: _ClassVar[int]
    MKDIR_FIELD_NUMBER: _ClassVar[int]
    RM_FIELD_NUMBER: _ClassVar[int]
    SYMLINK_FIELD_NUMBER: _ClassVar[int]
    input: int
    secondaryInput: int
    output: int
    copy: FileActionCopy
    mkfile: FileActionMkFile
    mkdir: FileActionMkDir
    rm: FileActionRm
    symlink: FileActionSymlink
    def __init__(self, input: _Optional[int] = ..., secondaryInput: _Optional[int] = ..., output: _Optional[int] = ..., copy: _Optional[_Union[FileActionCopy, _Mapping]] = ..., mkfile: _Optional[_Union[FileActionMkFile, _Mapping]] = ..., mkdir: _Optional[_Union[FileActionMkDir, _Mapping]] = ..., rm: _Optional[_Union[FileActionRm, _Mapping]] = ..., symlink: _Optional[_Union[FileActionSymlink, _Mapping]] = ...) -> None: ...

class FileActionCopy(_message.Message):
    __slots__ = ("src", "dest", "owner", "mode", "followSymlink", "dirCopyContents", "attemptUnpackDockerCompatibility", "createDestPath", "allowWildcard", "allowEmptyWildcard", "timestamp", "include_patterns", "exclude_patterns", "alwaysReplaceExistingDestPaths", "modeStr", "required_paths")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FOLLOWSYMLINK_FIELD_NUMBER: _ClassVar[int]
    DIRCOPYCONTENTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTUNPACKDOCKERCOMPATIBILITY_FIELD_NUMBER: _ClassVar[int]
    CREATEDESTPATH_FIELD_NUMBER: _ClassVar[int]
    ALLOWWILDCARD_FIELD_NUMBER: _ClassVar[int]
    ALLOWEMPTYWILDCARD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    ALWAYSREPLACEEXISTINGDESTPATHS_FIELD_NUMBER: _ClassVar[int]
    MODESTR_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_PATHS_FIELD_NUMBER: _ClassVar[int]
    src: str
    dest: str
    owner: ChownOpt
    mode: int
    followSymlink: bool
    dirCopyContents: bool
    attemptUnpackDockerCompatibility: bool
    createDestPath: bool
    allowWildcard: bool
    allowEmptyWildcard: bool
    timestamp: int
    include_patterns: _containers.RepeatedScalarFieldContainer[str]
    exclude_patterns: _containers.RepeatedScalarFieldContainer[str]
    alwaysReplaceExistingDestPaths: bool
    modeStr: str
    required_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, src: _Optional[str] = ..., dest: _Optional[str] = ..., owner: _Optional[_Union[ChownOpt, _Mapping]] = ..., mode: _Optional[int] = ..., followSymlink: _Optional[bool] = ..., dirCopyContents: _Optional[bool] = ..., attemptUnpackDockerCompatibility: _Optional[bool] = ..., createDestPath: _Optional[bool] = ..., allowWildcard: _Optional[bool] = ..., allowEmptyWildcard: _Optional[bool] = ..., timestamp: _Optional[int] = ..., include_patterns: _Optional[_Iterable[str]] = ..., exclude_patterns: _Optional[_Iterable[str]] = ..., alwaysReplaceExistingDestPaths: _Optional[bool] = ..., modeStr: _Optional[str] = ..., required_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class FileActionMkFile(_message.Message):
    __slots__ = ("path", "mode", "data", "owner", "timestamp")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    data: bytes
    owner: ChownOpt
    timestamp: int
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., data: _Optional[bytes] = ..., owner: _Optional[_Union[ChownOpt, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class FileActionMkDir(_message.Message):
    __slots__ = ("path", "mode", "makeParents", "owner", "timestamp")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAKEPARENTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    makeParents: bool
    owner: ChownOpt
    timestamp: int
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., makeParents: _Optional[bool] = ..., owner: _Optional[_Union[ChownOpt, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class FileActionRm(_message.Message):
    __slots__ = ("path", "allowNotFound", "allowWildcard")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ALLOWNOTFOUND_FIELD_NUMBER: _ClassVar[int]
    ALLOWWILDCARD_FIELD_NUMBER: _ClassVar[int]
    path: str
    allowNotFound: bool
    allowWildcard: bool
    def __init__(self, path: _Optional[str] = ..., allowNotFound: _Optional[bool] = ..., allowWildcard: _Optional[bool] = ...) -> None: ...

class FileActionSymlink(_message.Message):
    __slots__ = ("oldpath", "newpath", "owner", "timestamp")
    OLDPATH_FIELD_NUMBER: _ClassVar[int]
    NEWPATH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    oldpath: str
    newpath: str
    owner: ChownOpt
    timestamp: int
    def __init__(self, oldpath: _Optional[str] = ..., newpath: _Optional[str] = ..., owner: _Optional[_Union[ChownOpt, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class ChownOpt(_message.Message):
    __slots__ = ("user", "group")
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    user: UserOpt
    group: UserOpt
    def __init__(self, user: _Optional[_Union[UserOpt, _Mapping]] = ..., group: _Optional[_Union[UserOpt, _Mapping]] = ...) -> None: ...

class UserOpt(_message.Message):
    __slots__ = ("byName", "byID")
    BYNAME_FIELD_NUMBER: _ClassVar[int]
    BYID_FIELD_NUMBER: _ClassVar[int]
    byName: NamedUserOpt
    byID: int
    def __init__(self, byName: _Optional[_Union[NamedUserOpt, _Mapping]] = ..., byID: _Optional[int] = ...) -> None: ...

class NamedUserOpt(_message.Message):
    __slots__ = ("name", "input")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    input: int
    def __init__(self, name: _Optional[str] = ..., input: _Optional[int] = ...) -> None: ...

class MergeInput(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: int
    def __init__(self, input: _Optional[int] = ...) -> None: ...

class MergeOp(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[MergeInput]
    def __init__(self, inputs: _Optional[_Iterable[_Union[MergeInput, _Mapping]]] = ...) -> None: ...

class LowerDiffInput(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: int
    def __init__(self, input: _Optional[int] = ...) -> None: ...

class UpperDiffInput(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: int
    def __init__(self, input: _Optional[int] = ...) -> None: ...

class DiffOp(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: LowerDiffInput
    upper: UpperDiffInput
    def __init__(self, lower: _Optional[_Union[LowerDiffInput, _Mapping]] = ..., upper: _Optional[_Union[UpperDiffInput, _Mapping]] = ...) -> None: ...

class PassthroughOp(_message.Message):
    __slots__ = ("id", "outputs")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    outputs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[str] = ..., outputs: _Optional[_Iterable[int]] = ...) -> None: ...
