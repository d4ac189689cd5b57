using System.Text.Json.Serialization;

namespace Airlock.Boundaries.Container;

// The subset of the OCI runtime specification (config.json, runtime-spec v1.0.2) that Airlock writes. Field names
// follow the specification; anything left null is omitted, so the runtime's own defaults never apply silently to a
// field Airlock means to set.

internal sealed record OciSpec
{
    [JsonPropertyName("ociVersion")] public string OciVersion { get; init; } = "1.0.2";
    [JsonPropertyName("process")] public required OciProcess Process { get; init; }
    [JsonPropertyName("root")] public required OciRoot Root { get; init; }
    [JsonPropertyName("hostname")] public string? Hostname { get; init; }
    [JsonPropertyName("mounts")] public required IReadOnlyList<OciMount> Mounts { get; init; }
    [JsonPropertyName("linux")] public required OciLinux Linux { get; init; }
}

internal sealed record OciProcess
{
    [JsonPropertyName("terminal")] public bool Terminal { get; init; }
    [JsonPropertyName("user")] public required OciUser User { get; init; }
    [JsonPropertyName("args")] public required IReadOnlyList<string> Args { get; init; }
    [JsonPropertyName("env")] public required IReadOnlyList<string> Env { get; init; }
    [JsonPropertyName("cwd")] public required string Cwd { get; init; }
    [JsonPropertyName("capabilities")] public required OciCapabilities Capabilities { get; init; }
    [JsonPropertyName("rlimits")] public IReadOnlyList<OciRlimit>? Rlimits { get; init; }
    [JsonPropertyName("noNewPrivileges")] public bool NoNewPrivileges { get; init; }
    [JsonPropertyName("oomScoreAdj")] public int? OomScoreAdj { get; init; }
}

internal sealed record OciUser(
    [property: JsonPropertyName("uid")] uint Uid,
    [property: JsonPropertyName("gid")] uint Gid);

internal sealed record OciCapabilities
{
    [JsonPropertyName("bounding")] public required IReadOnlyList<string> Bounding { get; init; }
    [JsonPropertyName("effective")] public required IReadOnlyList<string> Effective { get; init; }
    [JsonPropertyName("permitted")] public required IReadOnlyList<string> Permitted { get; init; }
    [JsonPropertyName("inheritable")] public IReadOnlyList<string> Inheritable { get; init; } = [];
    [JsonPropertyName("ambient")] public IReadOnlyList<string> Ambient { get; init; } = [];
}

internal sealed record OciRlimit(
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("hard")] ulong Hard,
    [property: JsonPropertyName("soft")] ulong Soft);

internal sealed record OciRoot(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("readonly")] bool Readonly);

internal sealed record OciMount(
    [property: JsonPropertyName("destination")] string Destination,
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("source")] string Source,
    [property: JsonPropertyName("options")] IReadOnlyList<string> Options);

internal sealed record OciLinux
{
    [JsonPropertyName("uidMappings")] public IReadOnlyList<OciIdMapping>? UidMappings { get; init; }
    [JsonPropertyName("gidMappings")] public IReadOnlyList<OciIdMapping>? GidMappings { get; init; }
    [JsonPropertyName("namespaces")] public required IReadOnlyList<OciNamespace> Namespaces { get; init; }
    [JsonPropertyName("cgroupsPath")] public required string CgroupsPath { get; init; }
    [JsonPropertyName("resources")] public required OciResources Resources { get; init; }
    [JsonPropertyName("seccomp")] public OciSeccomp? Seccomp { get; init; }
    [JsonPropertyName("maskedPaths")] public required IReadOnlyList<string> MaskedPaths { get; init; }
    [JsonPropertyName("readonlyPaths")] public required IReadOnlyList<string> ReadonlyPaths { get; init; }
    [JsonPropertyName("rootfsPropagation")] public string? RootfsPropagation { get; init; }
}

internal sealed record OciIdMapping(
    [property: JsonPropertyName("containerID")] uint ContainerId,
    [property: JsonPropertyName("hostID")] uint HostId,
    [property: JsonPropertyName("size")] uint Size);

internal sealed record OciNamespace(
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("path"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Path = null);

internal sealed record OciResources
{
    [JsonPropertyName("devices")] public IReadOnlyList<OciDeviceRule> Devices { get; init; } = [new(false, "rwm")];
    [JsonPropertyName("memory")] public required OciMemory Memory { get; init; }
    [JsonPropertyName("cpu")] public required OciCpu Cpu { get; init; }
    [JsonPropertyName("pids")] public required OciPids Pids { get; init; }
}

internal sealed record OciDeviceRule(
    [property: JsonPropertyName("allow")] bool Allow,
    [property: JsonPropertyName("access")] string Access);

internal sealed record OciMemory
{
    [JsonPropertyName("limit")] public long Limit { get; init; }
    /// <summary>Memory plus swap; equal to the limit means no swap. Omitted where the kernel cannot account swap.</summary>
    [JsonPropertyName("swap")] public long? Swap { get; init; }
    [JsonPropertyName("disableOOMKiller")] public bool DisableOomKiller { get; init; }
}

internal sealed record OciCpu(
    [property: JsonPropertyName("quota")] long Quota,
    [property: JsonPropertyName("period")] ulong Period);

internal sealed record OciPids([property: JsonPropertyName("limit")] long Limit);

internal sealed record OciSeccomp
{
    [JsonPropertyName("defaultAction")] public required string DefaultAction { get; init; }
    [JsonPropertyName("defaultErrnoRet")] public uint? DefaultErrnoRet { get; init; }
    [JsonPropertyName("architectures")] public required IReadOnlyList<string> Architectures { get; init; }
    [JsonPropertyName("syscalls")] public required IReadOnlyList<OciSyscallRule> Syscalls { get; init; }
}

internal sealed record OciSyscallRule
{
    [JsonPropertyName("names")] public required IReadOnlyList<string> Names { get; init; }
    [JsonPropertyName("action")] public required string Action { get; init; }
    [JsonPropertyName("errnoRet")] public uint? ErrnoRet { get; init; }
    [JsonPropertyName("args")] public IReadOnlyList<OciSyscallArg>? Args { get; init; }
}

internal sealed record OciSyscallArg(
    [property: JsonPropertyName("index")] uint Index,
    [property: JsonPropertyName("value")] ulong Value,
    [property: JsonPropertyName("valueTwo")] ulong ValueTwo,
    [property: JsonPropertyName("op")] string Op);

/// <summary>What <c>runc state</c> prints.</summary>
internal sealed record OciState(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("pid")] int Pid,
    [property: JsonPropertyName("status")] string Status);

[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(OciSpec))]
[JsonSerializable(typeof(OciState))]
[JsonSerializable(typeof(OciSeccomp))]
internal sealed partial class OciJsonContext : JsonSerializerContext;
