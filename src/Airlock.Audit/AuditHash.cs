using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;

namespace Airlock.Audit;

/// <summary>
/// The canonical form of an audit record: a JSON array
/// <c>[seq, time, kind, tenantId, sandboxId, data, prevHash]</c> written without whitespace, hashed with SHA-256.
/// </summary>
public static class AuditHash
{
    /// <summary>The previous-hash of the first record.</summary>
    public static readonly string Genesis = new('0', 64);

    /// <summary>Time as hashed and stored: round-trip format, UTC.</summary>
    public static string FormatTime(DateTimeOffset time) => time.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture);

    public static string Compute(long seq, DateTimeOffset time, string kind, string? tenantId, string? sandboxId, string data, string prevHash)
    {
        var buffer = new ArrayBufferWriter<byte>(256 + data.Length);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            writer.WriteNumberValue(seq);
            writer.WriteStringValue(FormatTime(time));
            writer.WriteStringValue(kind);
            WriteNullable(writer, tenantId);
            WriteNullable(writer, sandboxId);
            writer.WriteStringValue(data);
            writer.WriteStringValue(prevHash);
            writer.WriteEndArray();
        }

        return Convert.ToHexStringLower(SHA256.HashData(buffer.WrittenSpan));
    }

    private static void WriteNullable(Utf8JsonWriter writer, string? value)
    {
        if (value is null)
        {
            writer.WriteNullValue();
        }
        else
        {
            writer.WriteStringValue(value);
        }
    }
}
