using System.Text;
using System.Text.Json;
using Airlock.Core.Auditing;
using Airlock.Core.Storage;

namespace Airlock.Server.Auth;

/// <summary>
/// The audit door airlockd's services use: every record appended while a request runs carries that request's caller
/// (<c>"actor": {"keyId", "scope"}</c> first in its data), so the trail says who did what with which key. Records of
/// airlockd's own (reconcile, reaper, envd calls authenticated by a sandbox's access token) carry no actor.
/// </summary>
internal sealed class CallerAuditLog(IAuditLog inner) : IAuditLog
{
    public Task<AuditRecord> AppendAsync(AuditEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return inner.AppendAsync(ApiCaller.Current is { } caller ? entry with { DataJson = WithActor(entry.DataJson, caller) } : entry, cancellationToken);
    }

    internal static string WithActor(string dataJson, ApiCaller caller)
    {
        var data = dataJson.AsSpan().Trim();
        if (data.Length < 2 || data[0] != '{' || data[^1] != '}' || dataJson.Contains("\"actor\"", StringComparison.Ordinal))
        {
            return dataJson;
        }

        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("keyId", caller.KeyId);
            writer.WriteString("scope", caller.Scope.Name());
            writer.WriteEndObject();
        }

        var actor = Encoding.UTF8.GetString(buffer.ToArray());
        var rest = data[1..].TrimStart();
        return rest.Length == 1 ? $"{{\"actor\":{actor}}}" : $"{{\"actor\":{actor},{rest}";
    }
}
