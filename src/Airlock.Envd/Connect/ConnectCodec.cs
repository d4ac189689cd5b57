using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Google.Protobuf;

namespace Airlock.Envd.Connect;

/// <summary>
/// The Connect protocol's framing and message codecs. Written here because no maintained Connect library exists for
/// .NET; it is small: unary bodies are one message, streams are 5-byte envelopes (flags, big-endian length).
/// </summary>
public static class ConnectCodec
{
    public const byte CompressedFlag = 0x01;
    public const byte EndStreamFlag = 0x02;
    public const int EnvelopeHeaderLength = 5;

    /// <summary>The largest message accepted, in bytes.</summary>
    public const int MaxMessageBytes = 16 * 1024 * 1024;

    public const string UnaryJson = "application/json";
    public const string UnaryProto = "application/proto";
    public const string StreamJson = "application/connect+json";
    public const string StreamProto = "application/connect+proto";

    private static readonly JsonFormatter Formatter = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(false));
    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(true));

    /// <summary>True when the content type names the binary (protobuf) codec.</summary>
    public static bool IsBinary(string? contentType)
    {
        var media = MediaType(contentType);
        return media is UnaryProto or StreamProto;
    }

    /// <summary>True when the content type is a Connect streaming type.</summary>
    public static bool IsStreaming(string? contentType)
    {
        var media = MediaType(contentType);
        return media is StreamJson or StreamProto;
    }

    /// <summary>True when the content type is one of the four Connect types.</summary>
    public static bool IsConnect(string? contentType)
    {
        var media = MediaType(contentType);
        return media is UnaryJson or UnaryProto or StreamJson or StreamProto;
    }

    public static string MediaType(string? contentType)
    {
        if (string.IsNullOrEmpty(contentType))
        {
            return string.Empty;
        }

        var semicolon = contentType.IndexOf(';', StringComparison.Ordinal);
        return (semicolon < 0 ? contentType : contentType[..semicolon]).Trim().ToLowerInvariant();
    }

    public static byte[] Serialize(IMessage message, bool binary) =>
        binary ? message.ToByteArray() : Encoding.UTF8.GetBytes(Formatter.Format(message));

    /// <summary>Parses one message; malformed input becomes <see cref="ConnectCodes.InvalidArgument"/>.</summary>
    public static T Parse<T>(MessageParser<T> parser, ReadOnlySpan<byte> data, bool binary)
        where T : IMessage<T>, new()
    {
        try
        {
            if (binary)
            {
                return parser.ParseFrom(data);
            }

            return data.IsEmpty ? parser.ParseFrom(ReadOnlySpan<byte>.Empty) : Parser.Parse<T>(Encoding.UTF8.GetString(data));
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or FormatException or DecoderFallbackException or InvalidOperationException)
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, $"the request body is not a valid {typeof(T).Name}: {e.Message}");
        }
    }

    /// <summary>Writes one envelope header into <paramref name="destination"/>.</summary>
    public static void WriteEnvelopeHeader(Span<byte> destination, byte flags, int length)
    {
        destination[0] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], (uint)length);
    }

    public static byte[] Envelope(byte flags, ReadOnlySpan<byte> payload)
    {
        var buffer = new byte[EnvelopeHeaderLength + payload.Length];
        WriteEnvelopeHeader(buffer, flags, payload.Length);
        payload.CopyTo(buffer.AsSpan(EnvelopeHeaderLength));
        return buffer;
    }

    /// <summary>The JSON payload of an end-of-stream envelope: <c>{}</c> or <c>{"error":{code,message}}</c>.</summary>
    public static byte[] EndStreamPayload(ConnectException? error)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (error is not null)
            {
                writer.WriteStartObject("error");
                writer.WriteString("code", error.Code);
                writer.WriteString("message", error.Message);
                writer.WriteEndObject();
            }

            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>The JSON body of a unary error.</summary>
    public static byte[] ErrorBody(ConnectException error)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("code", error.Code);
            writer.WriteString("message", error.Message);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Reads a Connect error from a unary error body or an end-of-stream payload; null when there is none.</summary>
    public static ConnectException? ReadError(ReadOnlySpan<byte> json, int? httpStatus)
    {
        try
        {
            var reader = new Utf8JsonReader(json);
            using var document = JsonDocument.ParseValue(ref reader);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return httpStatus is null ? null : new ConnectException(ConnectCodes.FromHttpStatus(httpStatus.Value), $"HTTP {httpStatus}");
            }

            if (root.TryGetProperty("error", out var nested) && nested.ValueKind == JsonValueKind.Object)
            {
                root = nested;
            }
            else if (httpStatus is null)
            {
                return null;
            }

            var code = root.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String
                ? c.GetString()!
                : ConnectCodes.FromHttpStatus(httpStatus ?? 500);
            var message = root.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()! : code;
            return new ConnectException(code, message);
        }
        catch (JsonException)
        {
            return new ConnectException(ConnectCodes.FromHttpStatus(httpStatus ?? 500), Encoding.UTF8.GetString(json));
        }
    }

    /// <summary>
    /// Incremental envelope decoder: feed it arbitrary chunks and take whole envelopes out. Used by the client, the
    /// agent (for the one request envelope) and airlockd's stream observer.
    /// </summary>
    public sealed class EnvelopeReader
    {
        private readonly ArrayBufferWriter<byte> _pending = new();

        public void Append(ReadOnlySpan<byte> chunk) => _pending.Write(chunk);

        /// <summary>Takes the next whole envelope, if one has arrived.</summary>
        public bool TryRead(out byte flags, out byte[] payload)
        {
            flags = 0;
            payload = [];
            var data = _pending.WrittenSpan;
            if (data.Length < EnvelopeHeaderLength)
            {
                return false;
            }

            var length = BinaryPrimitives.ReadUInt32BigEndian(data[1..]);
            if (length > MaxMessageBytes)
            {
                throw new ConnectException(ConnectCodes.ResourceExhausted, $"a message of {length} bytes exceeds the {MaxMessageBytes}-byte limit");
            }

            if (data.Length < EnvelopeHeaderLength + (int)length)
            {
                return false;
            }

            flags = data[0];
            payload = data.Slice(EnvelopeHeaderLength, (int)length).ToArray();
            var rest = data[(EnvelopeHeaderLength + (int)length)..].ToArray();
            _pending.Clear();
            _pending.Write(rest);
            return true;
        }

        public int Buffered => _pending.WrittenCount;
    }
}
