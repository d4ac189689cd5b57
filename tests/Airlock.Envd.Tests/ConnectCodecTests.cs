using System.Text;
using Airlock.Envd.Connect;
using Airlock.Envd.Inspection;
using Airlock.Envd.Protocol.Process;
using Google.Protobuf;

namespace Airlock.Envd.Tests;

public sealed class ConnectCodecTests
{
    private static StartRequest Sample() => new()
    {
        Process = new ProcessConfig { Cmd = "/bin/bash", Args = { "-l", "-c", "echo hi" }, Cwd = "/tmp", Envs = { ["SECRET"] = "s3cret", ["A"] = "1" } },
        Stdin = false,
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Round_trips_a_message_in_both_codecs(bool binary)
    {
        var bytes = ConnectCodec.Serialize(Sample(), binary);
        var parsed = ConnectCodec.Parse(StartRequest.Parser, bytes, binary);
        Assert.Equal(Sample(), parsed);
    }

    [Fact]
    public void Json_uses_proto_field_names_in_camel_case()
    {
        var json = Encoding.UTF8.GetString(ConnectCodec.Serialize(new ProcessEvent { End = new ProcessEvent.Types.EndEvent { ExitCode = 3, Exited = true, Status = "exit status 3" } }, binary: false));
        Assert.Contains("\"exitCode\": 3", json, StringComparison.Ordinal);
        Assert.Contains("\"end\"", json, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{not json", false)]
    [InlineData("{\"process\": 5}", false)]
    [InlineData("\u00ff\u00ff\u00ff", true)]
    public void Malformed_input_is_invalid_argument(string body, bool binary)
    {
        var e = Assert.Throws<ConnectException>(() => ConnectCodec.Parse(StartRequest.Parser, Encoding.Latin1.GetBytes(body), binary));
        Assert.Equal(ConnectCodes.InvalidArgument, e.Code);
        Assert.Equal(400, e.HttpStatus);
    }

    [Fact]
    public void Envelope_reader_reassembles_messages_split_at_every_byte()
    {
        var first = ConnectCodec.Envelope(0, ConnectCodec.Serialize(Sample(), true));
        var end = ConnectCodec.Envelope(ConnectCodec.EndStreamFlag, ConnectCodec.EndStreamPayload(new ConnectException(ConnectCodes.NotFound, "gone")));
        var all = first.Concat(end).ToArray();
        var reader = new ConnectCodec.EnvelopeReader();
        var seen = new List<(byte Flags, byte[] Payload)>();
        foreach (var b in all)
        {
            reader.Append([b]);
            while (reader.TryRead(out var flags, out var payload))
            {
                seen.Add((flags, payload));
            }
        }

        Assert.Equal(2, seen.Count);
        Assert.Equal(Sample(), StartRequest.Parser.ParseFrom(seen[0].Payload));
        Assert.Equal(ConnectCodec.EndStreamFlag, seen[1].Flags);
        var error = ConnectCodec.ReadError(seen[1].Payload, null);
        Assert.NotNull(error);
        Assert.Equal(ConnectCodes.NotFound, error.Code);
        Assert.Equal("gone", error.Message);
        Assert.Equal(0, reader.Buffered);
    }

    [Fact]
    public void Envelope_reader_refuses_a_length_over_the_limit()
    {
        var header = new byte[5];
        ConnectCodec.WriteEnvelopeHeader(header, 0, ConnectCodec.MaxMessageBytes + 1);
        var reader = new ConnectCodec.EnvelopeReader();
        reader.Append(header);
        var e = Assert.Throws<ConnectException>(() => reader.TryRead(out _, out _));
        Assert.Equal(ConnectCodes.ResourceExhausted, e.Code);
    }

    [Fact]
    public void End_stream_without_error_reads_as_no_error()
    {
        Assert.Null(ConnectCodec.ReadError(ConnectCodec.EndStreamPayload(null), null));
    }

    [Theory]
    [InlineData("application/connect+json; charset=utf-8", true, false)]
    [InlineData("application/connect+proto", true, true)]
    [InlineData("application/json", false, false)]
    [InlineData("application/proto", false, true)]
    public void Content_types_are_classified(string contentType, bool streaming, bool binary)
    {
        Assert.True(ConnectCodec.IsConnect(contentType));
        Assert.Equal(streaming, ConnectCodec.IsStreaming(contentType));
        Assert.Equal(binary, ConnectCodec.IsBinary(contentType));
    }

    [Theory]
    [InlineData("not_found", 404)]
    [InlineData("unauthenticated", 401)]
    [InlineData("permission_denied", 403)]
    [InlineData("deadline_exceeded", 504)]
    [InlineData("internal", 500)]
    public void Codes_map_to_http_statuses(string code, int status) => Assert.Equal(status, ConnectCodes.ToHttpStatus(code));

    [Theory]
    [InlineData("application/connect+json", false)]
    [InlineData("application/connect+proto", true)]
    [InlineData("application/json", false)]
    public void Inspector_reads_a_start_request_without_env_values(string contentType, bool binary)
    {
        var message = ConnectCodec.Serialize(Sample(), binary);
        var body = ConnectCodec.IsStreaming(contentType) ? ConnectCodec.Envelope(0, message) : message;
        Assert.True(EnvdInspector.TryReadStartRequest(body, contentType, out var summary));
        Assert.Equal("/bin/bash", summary.Command);
        Assert.Equal(["-l", "-c", "echo hi"], summary.Args);
        Assert.Equal("/tmp", summary.Cwd);
        Assert.Equal(["A", "SECRET"], summary.EnvNames);
        Assert.DoesNotContain("s3cret", summary.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Inspector_rejects_garbage()
    {
        Assert.False(EnvdInspector.TryReadStartRequest("{{{"u8, "application/json", out _));
        Assert.False(EnvdInspector.TryReadStartRequest(new byte[] { 0, 0, 0 }, "application/connect+proto", out _));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Observer_follows_a_stream_fed_in_odd_chunks(bool binary)
    {
        var events = new[]
        {
            new StartResponse { Event = new ProcessEvent { Start = new ProcessEvent.Types.StartEvent { Pid = 42 } } },
            new StartResponse { Event = new ProcessEvent { Data = new ProcessEvent.Types.DataEvent { Stdout = ByteString.CopyFromUtf8("hello\n") } } },
            new StartResponse { Event = new ProcessEvent { End = new ProcessEvent.Types.EndEvent { ExitCode = 7, Exited = true, Status = "exit status 7" } } },
        };
        var stream = events.SelectMany(e => ConnectCodec.Envelope(0, ConnectCodec.Serialize(e, binary)))
            .Concat(ConnectCodec.Envelope(ConnectCodec.EndStreamFlag, ConnectCodec.EndStreamPayload(null)))
            .ToArray();
        var observer = new ProcessStreamObserver(binary ? ConnectCodec.StreamProto : ConnectCodec.StreamJson);
        for (var i = 0; i < stream.Length; i += 3)
        {
            observer.Feed(stream.AsSpan(i, Math.Min(3, stream.Length - i)));
        }

        Assert.Equal(42u, observer.Pid);
        Assert.Equal(7, observer.ExitCode);
        Assert.Equal("exit status 7", observer.Status);
        Assert.True(observer.Ended);
        Assert.Null(observer.Error);
    }
}
