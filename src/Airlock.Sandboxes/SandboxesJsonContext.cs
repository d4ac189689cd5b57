using System.Text.Json.Serialization;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes;

[JsonSourceGenerationOptions(System.Text.Json.JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(BoundaryReport))]
internal sealed partial class SandboxesJsonContext : JsonSerializerContext;
