using System.Text.Json;
using System.Text.Json.Serialization;
using Airlock.Core.Api;
using Airlock.Core.Auditing;
using Airlock.Core.Drivers;

namespace Airlock.Cli;

/// <summary>Result of <c>airlock audit verify --json</c>.</summary>
internal sealed record AuditVerifyOutput(bool Ok, long Count, long? FirstBrokenSeq, string? Reason);

/// <summary>Result of <c>airlock sandbox cp --json</c>.</summary>
internal sealed record CopyOutput(string Direction, string SandboxId, string Source, string Destination, long Bytes);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(SandboxCreated))]
[JsonSerializable(typeof(SandboxDetail))]
[JsonSerializable(typeof(List<SandboxDetail>))]
[JsonSerializable(typeof(List<DriverAvailability>))]
[JsonSerializable(typeof(AuditVerifyOutput))]
[JsonSerializable(typeof(CopyOutput))]
[JsonSerializable(typeof(UsageReport))]
[JsonSerializable(typeof(TenantInfo))]
[JsonSerializable(typeof(List<TenantInfo>))]
[JsonSerializable(typeof(ApiKeyIssued))]
[JsonSerializable(typeof(List<ApiKeyInfo>))]
internal sealed partial class CliJsonContext : JsonSerializerContext;

/// <summary>One audit record per line (JSON lines) for <c>audit tail --json</c>.</summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(AuditRecord))]
internal sealed partial class CliJsonLinesContext : JsonSerializerContext;
