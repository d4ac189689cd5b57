using System.Text.Json.Serialization;
using Airlock.Core.Sandboxes;

namespace Airlock.Storage;

[JsonSourceGenerationOptions(System.Text.Json.JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(Dictionary<string, string>))]
[JsonSerializable(typeof(BoundaryReport))]
[JsonSerializable(typeof(SandboxNetwork))]
[JsonSerializable(typeof(SandboxLimits))]
[JsonSerializable(typeof(SandboxUsage))]
internal sealed partial class StorageJsonContext : JsonSerializerContext;
