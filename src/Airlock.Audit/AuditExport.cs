using System.Text.Json;
using Airlock.Core.Auditing;

namespace Airlock.Audit;

/// <summary>Writes audit records as JSON lines (one object per record, fields in chain order).</summary>
public static class AuditExport
{
    public static async Task WriteJsonLinesAsync(IAsyncEnumerable<AuditRecord> records, Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(output);
        var newline = "\n"u8.ToArray();
        await foreach (var record in records.WithCancellation(cancellationToken))
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(512);
            using (var writer = new Utf8JsonWriter(buffer))
            {
                Write(writer, record);
            }

            await output.WriteAsync(buffer.WrittenMemory, cancellationToken);
            await output.WriteAsync(newline, cancellationToken);
            await output.FlushAsync(cancellationToken);
        }
    }

    /// <summary>One record as a JSON object: seq, time, kind, tenantId, sandboxId, data (the payload string), prevHash, hash.</summary>
    public static void Write(Utf8JsonWriter writer, AuditRecord record)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(record);
        writer.WriteStartObject();
        writer.WriteNumber("seq", record.Seq);
        writer.WriteString("time", AuditHash.FormatTime(record.Time));
        writer.WriteString("kind", record.Kind);
        writer.WriteString("tenantId", record.TenantId);
        writer.WriteString("sandboxId", record.SandboxId);
        writer.WriteString("data", record.Data);
        writer.WriteString("prevHash", record.PrevHash);
        writer.WriteString("hash", record.Hash);
        writer.WriteEndObject();
    }
}
