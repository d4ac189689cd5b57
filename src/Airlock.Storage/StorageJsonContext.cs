using System.Text.Json.Serialization;
using Airlock.Core.Sandboxes;

namespace Airlock.Storage;

[JsonSourceGenerationOptions(System.Text.Json.JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, UseStringEnumConverter = true)]
[JsonSerializable(typeof(Dictionary<string, string>))]
[JsonSerializable(typeof(BoundaryReport))]
[JsonSerializable(typeof(SandboxNetwork))]
[JsonSerializable(typeof(SandboxLimits))]
[JsonSerializable(typeof(SandboxUsage))]
[JsonSerializable(typeof(LifecycleSettings))]
[JsonSerializable(typeof(NetworkPolicy))]
[JsonSerializable(typeof(Airlock.Core.Storage.TenantQuotas))]
internal sealed partial class StorageJsonContext : JsonSerializerContext;
