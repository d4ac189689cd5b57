using System.Text;
using System.Text.Json;

namespace Airlock.Sandboxes;

/// <summary>Builds small audit payload objects without reflection.</summary>
public static class AuditJson
{
    public static string Object(params (string Name, object? Value)[] fields)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach (var (name, value) in fields)
            {
                writer.WritePropertyName(name);
                WriteValue(writer, value);
            }

            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void WriteValue(Utf8JsonWriter writer, object? value)
    {
        switch (value)
        {
            case null: writer.WriteNullValue(); break;
            case string s: writer.WriteStringValue(s); break;
            case bool b: writer.WriteBooleanValue(b); break;
            case int i: writer.WriteNumberValue(i); break;
            case long l: writer.WriteNumberValue(l); break;
            case uint u: writer.WriteNumberValue(u); break;
            case double d: writer.WriteNumberValue(d); break;
            case DateTimeOffset t: writer.WriteStringValue(t.ToUniversalTime().ToString("O", System.Globalization.CultureInfo.InvariantCulture)); break;
            case RawJson raw: writer.WriteRawValue(raw.Json); break;
            case IEnumerable<string> list:
                writer.WriteStartArray();
                foreach (var item in list)
                {
                    writer.WriteStringValue(item);
                }

                writer.WriteEndArray();
                break;
            default: writer.WriteStringValue(value.ToString()); break;
        }
    }

    /// <summary>Pre-serialized JSON embedded as is.</summary>
    public sealed record RawJson(string Json);
}
