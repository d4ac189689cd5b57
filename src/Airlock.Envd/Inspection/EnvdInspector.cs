using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;

namespace Airlock.Envd.Inspection;

/// <summary>What a process start asks for, as airlockd records it.</summary>
public sealed record StartRequestSummary(string Command, IReadOnlyList<string> Args, string? Cwd, string? User, IReadOnlyList<string> EnvNames);

/// <summary>Reads envd requests that pass through airlockd without changing them.</summary>
public static class EnvdInspector
{
    /// <summary>
    /// Reads the body of a <c>/process.Process/Start</c> request: a single Connect envelope for the streaming content
    /// types, a bare message otherwise. Environment values are never returned, only their names.
    /// </summary>
    public static bool TryReadStartRequest(ReadOnlySpan<byte> body, string? contentType, out StartRequestSummary summary)
    {
        summary = null!;
        var binary = ConnectCodec.IsBinary(contentType);
        var payload = body;
        if (ConnectCodec.IsStreaming(contentType))
        {
            var reader = new ConnectCodec.EnvelopeReader();
            reader.Append(body);
            try
            {
                if (!reader.TryRead(out var flags, out var message) || (flags & ConnectCodec.CompressedFlag) != 0)
                {
                    return false;
                }

                payload = message;
            }
            catch (ConnectException)
            {
                return false;
            }
        }

        StartRequest request;
        try
        {
            request = ConnectCodec.Parse(StartRequest.Parser, payload, binary);
        }
        catch (ConnectException)
        {
            return false;
        }

        var process = request.Process ?? new ProcessConfig();
        summary = new StartRequestSummary(
            process.Cmd,
            [.. process.Args],
            process.HasCwd ? process.Cwd : null,
            null,
            [.. process.Envs.Keys.Order(StringComparer.Ordinal)]);
        return true;
    }
}

/// <summary>
/// Watches the response of a Start or Connect stream as it passes, chunk by chunk, and notes the pid and how the
/// process ended.
/// </summary>
public sealed class ProcessStreamObserver(string? responseContentType)
{
    private readonly ConnectCodec.EnvelopeReader _reader = new();
    private readonly bool _binary = ConnectCodec.IsBinary(responseContentType);
    private readonly bool _streaming = ConnectCodec.IsStreaming(responseContentType);
    private bool _broken;

    public uint? Pid { get; private set; }

    public int? ExitCode { get; private set; }

    public string? Status { get; private set; }

    /// <summary>The end-of-stream message arrived.</summary>
    public bool Ended { get; private set; }

    /// <summary>The error the stream ended with, if any.</summary>
    public string? Error { get; private set; }

    public void Feed(ReadOnlySpan<byte> chunk)
    {
        if (_broken || Ended || !_streaming)
        {
            return;
        }

        try
        {
            _reader.Append(chunk);
            while (_reader.TryRead(out var flags, out var payload))
            {
                if ((flags & ConnectCodec.EndStreamFlag) != 0)
                {
                    Ended = true;
                    Error = ConnectCodec.ReadError(payload, null)?.Message;
                    return;
                }

                if ((flags & ConnectCodec.CompressedFlag) != 0)
                {
                    continue;
                }

                var e = ConnectCodec.Parse(StartResponse.Parser, payload, _binary).Event;
                switch (e?.EventCase)
                {
                    case ProcessEvent.EventOneofCase.Start:
                        Pid = e.Start.Pid;
                        break;
                    case ProcessEvent.EventOneofCase.End:
                        ExitCode = e.End.ExitCode;
                        Status = e.End.Status;
                        break;
                }
            }
        }
        catch (ConnectException)
        {
            // Not ours to fix: the client sees the same bytes. Stop observing.
            _broken = true;
        }
    }
}
